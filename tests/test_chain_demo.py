"""The real default chain on the built-in digits with quick=True (`make demo`'s chain, small), in a file of its own: it
is the longest test file, so pytest-xdist (`--dist loadfile`) starts it first, beside the tiny photo chain."""
import nbformat
import pytest
from smallwb.pipeline import run_chain, RunFailed, default_chain, find_stages, notebook_params, plan_values
from smallwb.core import read_json, deterministic_metrics, partial_dirs


# ---- the real chain ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def quick_run(tmp_path_factory):
    "The real default chain with quick=True, once per session."
    runs = tmp_path_factory.mktemp('runs')
    chain = default_chain()
    try: run_dir = run_chain(chain, {'quick': True}, 'quick', runs)
    except RunFailed as e: pytest.fail(str(e))
    return chain, run_dir


def test_demo_chain_quick(quick_run):
    chain, run = quick_run
    assert chain
    decl = {s: notebook_params(p) for s, p in find_stages().items()}
    plan = plan_values(chain, {'quick': True}, decl)
    for s in chain:
        assert (run/s/'metrics.json').exists(), f'{s} wrote no metrics.json'
        assert read_json(run/s/'metrics.json')['stage'] == s
        assert (run/f'{s}.ipynb').exists() and (run/s/'config.json').exists()
        nb = nbformat.read(run/f'{s}.ipynb', as_version=4)
        assert nb.metadata['papermill']['exception'] is None or nb.metadata['papermill']['exception'] is False
        cfg = read_json(run/s/'config.json')['params']
        assert {k: cfg[k] for k in plan[s] if k in cfg} == {k: v for k, v in plan[s].items() if k in cfg}, s  # what ran
        assert not partial_dirs(run, s)
    assert read_json(run/'run.json')['status'] == 'done'
    summary = (run/'summary.md').read_text()
    assert all(f'## {s}' in summary for s in chain) and (run/'overview.png').stat().st_size > 1000


def test_demo_chain_reproducible(quick_run, tmp_path):
    "The chain's first stage run again with the same parameters and seed gives the same metrics.json (timings aside)."
    chain, run = quick_run
    again = run_chain(chain[:1], {'quick': True}, 'again', tmp_path, log=lambda s: None)
    a, b = read_json(run/chain[0]/'metrics.json'), read_json(again/chain[0]/'metrics.json')
    assert deterministic_metrics(a) == deterministic_metrics(b)

