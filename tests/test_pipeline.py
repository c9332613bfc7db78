"`smallwb run`: stop on failure, clear errors for unknown stages and parameters, the console script, reproducibility, and the real chain."
import os, shutil, subprocess, sys
from pathlib import Path
import nbformat
import pytest
from smallwb import pipeline
from smallwb.pipeline import run_chain, StageFailed, default_chain, find_stages
from smallwb.core import read_json, deterministic_metrics

PARAMS = '''data = "digits"  # data
labels_per_class = 10  # labels per class
seed = 0  # seed
out_dir = "runs/x"  # run folder
quick = False  # tiny settings
'''
OPEN = '''import time, torch
from smallwb.core import Stage, set_seed
set_seed(seed)
stage = Stage({name!r}, dict(data=data, labels_per_class=labels_per_class, seed=seed, out_dir=out_dir, quick=quick), out_dir)
stage.log("working")'''


def experiment(path, name, body, extra=''):
    "Write a tiny experiment notebook that follows the contract."
    params = nbformat.v4.new_code_cell(PARAMS + extra); params.metadata['tags'] = ['parameters']
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(OPEN.format(name=name)), nbformat.v4.new_code_cell(body)])
    nb.metadata = {'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}
    nbformat.write(nb, path)


@pytest.fixture
def exps(tmp_path):
    "An experiments folder: a stage that passes, one that fails, one after it."
    d = tmp_path/'experiments'; d.mkdir()
    experiment(d/'01_ok.ipynb', 'ok', "w = torch.randn(5)\nstage.finish({'accuracy': float(torch.sigmoid(w.sum() * scale)), 'seed': seed, 'scale': scale, 'wall_seconds': time.time()})",
               extra='scale = 1.0  # a parameter only this stage has\n')
    experiment(d/'02_boom.ipynb', 'boom', "raise RuntimeError('boom on purpose')")
    experiment(d/'03_after.ipynb', 'after', "stage.finish({'accuracy': 1.0})")
    return d


def test_find_stages_and_default_chain(exps):
    assert list(find_stages(exps)) == ['ok', 'boom', 'after'] and default_chain(exps) == ['ok', 'boom', 'after']
    experiment(exps/'00_intro.ipynb', 'intro', "stage.finish({})")
    assert default_chain(exps) == ['ok', 'boom', 'after']  # 00_* are optional
    for f in exps.glob('0[123]_*'): f.unlink()
    assert default_chain(exps) == ['intro']  # ... unless nothing else exists


def test_stop_on_failure(exps, tmp_path):
    logs = []
    with pytest.raises(StageFailed) as e:
        run_chain(None, {'quick': True}, 'r', tmp_path/'runs', exp_dir=exps, log=logs.append)
    run = tmp_path/'runs'/'r'
    msg = str(e.value)
    assert "stage 'boom' failed: RuntimeError: boom on purpose" in msg and str(run/'boom.ipynb') in msg
    executed = nbformat.read(run/'boom.ipynb', as_version=4)
    assert any('boom on purpose' in str(o) for c in executed.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert read_json(run/'ok'/'metrics.json')['seed'] == 0 and (run/'ok.ipynb').exists() and (run/'ok'/'config.json').exists()
    assert not (run/'after').exists() and not (run/'after.ipynb').exists()
    status = read_json(run/'run.json')
    assert status['status'] == 'failed' and status['failed_stage'] == 'boom' and status['stages'] == ['ok', 'boom', 'after']
    assert 'Stage `boom` failed' in (run/'summary.md').read_text() and '## ok' in (run/'summary.md').read_text()
    assert logs[0] == '[1/3] ok: running 01_ok.ipynb ...' and logs[1].startswith('[1/3] ok: done in') and 'accuracy=' in logs[1]


def test_unknown_stage_and_parameters_fail_before_running(exps, tmp_path):
    runs = tmp_path/'runs'
    with pytest.raises(ValueError, match=r'unknown stage okk; available: ok, boom, after'): run_chain(['okk'], {}, 'a', runs, exp_dir=exps)
    with pytest.raises(ValueError, match=r"unknown parameter 'sead': no experiment declares it"): run_chain(['ok'], {'sead': 1}, 'b', runs, exp_dir=exps)
    with pytest.raises(ValueError, match=r"stage 'ok' has no parameter scal; it declares: .*scale"): run_chain(['ok'], {'ok.scal': 2}, 'c', runs, exp_dir=exps)
    with pytest.raises(ValueError, match=r"parameter 'edge.threads': there is no stage 'edge'"): run_chain(['ok'], {'edge.threads': 2}, 'd', runs, exp_dir=exps)
    with pytest.raises(ValueError, match=r"stage 'boom' has no parameter scale"): run_chain(['ok'], {'boom': {'scale': 2}}, 'e', runs, exp_dir=exps)
    assert not runs.exists()  # nothing ran


def test_parameters_and_same_seed_same_metrics(exps, tmp_path):
    "Common and stage-only parameters arrive; the same parameters and seed give the same metrics.json (timings aside)."
    p = {'seed': 4, 'ok.scale': 0.5, 'data': str(tmp_path)}
    a, b = [run_chain(['ok'], p, n, tmp_path/'runs', exp_dir=exps, log=lambda s: None) for n in ('a', 'b')]
    cfg = read_json(a/'ok'/'config.json')['params']
    assert cfg['seed'] == 4 and cfg['data'] == str(tmp_path) and cfg['out_dir'] == str(a)
    ma, mb = read_json(a/'ok'/'metrics.json'), read_json(b/'ok'/'metrics.json')
    assert ma['scale'] == 0.5 and ma['seed'] == 4
    assert ma['wall_seconds'] != mb['wall_seconds']  # timings may differ ...
    assert deterministic_metrics(ma) == deterministic_metrics(mb)  # ... nothing else
    assert (a/'overview.png').exists() and '| accuracy |' in (a/'summary.md').read_text()


def smallwb(*args, cwd, exps):
    exe = Path(sys.executable).parent/'smallwb'
    env = {**os.environ, 'SMALLWB_EXPERIMENTS': str(exps)}
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_console_script(exps, tmp_path):
    "The installed `smallwb` command: exit 1 with the stage named on failure, 0 and the report's path on success."
    r = smallwb('run', '--stages', 'boom', '--name', 'f', cwd=tmp_path, exps=exps)
    assert r.returncode == 1 and "stage 'boom' failed" in r.stderr and str(tmp_path/'runs'/'f'/'boom.ipynb') in r.stderr, r.stderr
    (tmp_path/'cfg.yaml').write_text('seed: 5\nlabels_per_class: 3\nok:\n  scale: 0.25\n')
    r = smallwb('run', '--stages', 'ok', '--name', 'g', '--config', 'cfg.yaml', '-p', 'seed', '6', '--quick', cwd=tmp_path, exps=exps)
    assert r.returncode == 0, r.stderr
    assert f"report: {tmp_path/'runs'/'g'/'summary.md'}" in r.stdout and '[1/1] ok: running' in r.stdout
    cfg = read_json(tmp_path/'runs'/'g'/'ok'/'config.json')['params']
    assert (cfg['seed'], cfg['labels_per_class'], cfg['quick']) == (6, 3, True)  # -p overrides the file
    assert read_json(tmp_path/'runs'/'g'/'ok'/'metrics.json')['scale'] == 0.25


def test_command_line_errors(exps, tmp_path, monkeypatch, capsys):
    "Bad command lines exit 1 (2 for usage errors) with one clear line, before any stage runs."
    monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(exps)); monkeypatch.chdir(tmp_path)
    (tmp_path/'list.yaml').write_text('- a\n- b\n'); (tmp_path/'bad.yaml').write_text('seed: [1\n')
    for args, words in [(['-p', 'sead', '1'], "unknown parameter 'sead'"), (['--config', 'missing.yaml'], 'missing.yaml: no such config file'),
                        (['--config', 'list.yaml'], 'must be a mapping'), (['--config', 'bad.yaml'], 'bad.yaml: not valid YAML'),
                        (['--stages', 'nope'], 'unknown stage nope'), (['-p', 'data', 'nowhere'], "data 'nowhere': neither a built-in")]:
        assert pipeline.main(['run', *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith('smallwb: ') and words in err, (args, err)
    assert not (tmp_path/'runs').exists()
    assert pipeline.main(['stages']) == 0 and capsys.readouterr().out.split()[::2] == ['ok', 'boom', 'after']
    with pytest.raises(SystemExit) as e: pipeline.main(['run', '--bogus'])
    assert e.value.code == 2


# ---- the real experiments ---------------------------------------------------------------------------------------

COMMON = {'data', 'labels_per_class', 'seed', 'out_dir', 'quick'}


@pytest.mark.parametrize('stage', list(find_stages()))
def test_experiment_follows_the_contract(stage):
    "Every experiment declares the common parameters in a cell tagged `parameters` (it survives nbdev_clean)."
    nb = find_stages()[stage]
    assert COMMON <= pipeline.declared_params(nb), f'{nb} must declare {sorted(COMMON - pipeline.declared_params(nb))} in its parameters cell'


def test_edge_is_last():
    chain = default_chain()
    if 'edge' in chain: assert chain[-1] == 'edge'


# ---- the real chain ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='session')
def quick_run(tmp_path_factory):
    "The real default chain with quick=True, once per session."
    runs = tmp_path_factory.mktemp('runs')
    chain = default_chain()
    try: run_dir = run_chain(chain, {'quick': True}, 'quick', runs)
    except StageFailed as e: pytest.fail(str(e))
    return chain, run_dir


def test_demo_chain_quick(quick_run):
    chain, run = quick_run
    assert chain
    for s in chain:
        assert (run/s/'metrics.json').exists(), f'{s} wrote no metrics.json'
        assert read_json(run/s/'metrics.json')['stage'] == s
        assert (run/f'{s}.ipynb').exists() and (run/s/'config.json').exists()
        nb = nbformat.read(run/f'{s}.ipynb', as_version=4)
        assert nb.metadata['papermill']['exception'] is None or nb.metadata['papermill']['exception'] is False
    assert read_json(run/'run.json')['status'] == 'done'
    summary = (run/'summary.md').read_text()
    assert all(f'## {s}' in summary for s in chain) and (run/'overview.png').stat().st_size > 1000


def test_demo_chain_reproducible(quick_run, tmp_path):
    "The chain's first stage run again with the same parameters and seed gives the same metrics.json (timings aside)."
    chain, run = quick_run
    again = run_chain(chain[:1], {'quick': True}, 'again', tmp_path, log=lambda s: None)
    a, b = read_json(run/chain[0]/'metrics.json'), read_json(again/chain[0]/'metrics.json')
    assert deterministic_metrics(a) == deterministic_metrics(b)
