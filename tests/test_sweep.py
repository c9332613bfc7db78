"""`smallwb sweep` (issue 15): a grid of `smallwb run`s on local worker processes and on a Dask cluster (a LocalCluster
on 127.0.0.1 here) gives identical metrics with each cell's threads capped (checked from inside the stage's torch); a
failing cell does not stop the others and is listed with its error and notebook; a rerun skips finished cells, resumes
a cell from the stage it stopped in, and reruns cells whose parameters or data changed. The cells are tiny experiments
(a pixel logistic regression on the built-in digits or a small image folder) so that the whole file takes about a
minute on 2 cores."""
import json
import pandas as pd
import pytest
from conftest import class_folder, noise
from test_pipeline import experiment
from smallwb import pipeline
from smallwb.core import read_json, stage_metrics, deterministic_metrics
from smallwb.sweep import sweep, results_table, cell_threads, cores, write_results, run_report

STRATEGY = 'strategy = "plain"  # how to fit [plain|scaled|boom]\n'
FIT = '''import os
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
if strategy == 'boom': raise RuntimeError('boom on purpose')
X, y = ds.images(size=8).reshape(len(ds), -1) / 255, ds.labels
model = make_pipeline(*([StandardScaler()] if strategy == 'scaled' else []), LogisticRegression(max_iter=1000))
model.fit(X[split.labeled], y[split.labeled])
extra = dict()
{torch}
stage.finish({{'accuracy': float(model.score(X[split.test], y[split.test])), 'n_labeled': len(split.labeled),
              'omp_threads': os.environ.get('OMP_NUM_THREADS'), 'fit_seconds': time.time() - stage.t0, **extra}})'''
TORCH = "import torch\nextra['torch_threads'] = torch.get_num_threads()"
CHECK = ("if strategy == 'scaled' and fail_check: raise RuntimeError('check failed on purpose')\n"
         "stage.finish({'checked': 1})")


def quiet(*a): pass


@pytest.fixture
def exps(tmp_path):
    "Experiments: `fit` (fails for strategy boom) and `check` after it (fails for strategy scaled when asked to)."
    d = tmp_path/'experiments'
    d.mkdir()
    experiment(d/'01_fit.ipynb', 'fit', FIT.format(torch=''), extra=STRATEGY, data=True)
    experiment(d/'02_check.ipynb', 'check', CHECK, extra=STRATEGY + 'fail_check = False  # fail on purpose\n')
    return d


def metrics_of(d, stages):
    "Cell → stage → its metrics without timings."
    return {c['name']: {s: deterministic_metrics(stage_metrics(d/'runs'/c['name'], s)) for s in stages}
            for c in read_json(d/'sweep.json')['cells']}


def test_local_processes_and_a_dask_cluster_give_identical_metrics(tmp_path, monkeypatch):
    """The same two cells on two local worker processes and on a 2-worker LocalCluster that the test starts on
    127.0.0.1: identical metrics (timings aside), every cell done, and inside each stage torch uses the threads the
    sweep gave the cell (cores over cells at once), not all the cores. The experiments folder is set only after the
    workers started (as on a cluster, whose workers never saw the sweep's environment): the cells are told where it
    is."""
    from distributed import LocalCluster
    d = tmp_path/'experiments'
    d.mkdir()
    experiment(d/'01_fit.ipynb', 'fit', FIT.format(torch=TORCH), extra=STRATEGY, data=True)
    grid = {'labels_per_class': [2, 5]}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1',
                      dashboard_address=None) as cluster:
        monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(d))
        local = sweep(grid, ['fit'], {}, 'local', tmp_path/'sweeps', workers=2, progress=False, log=quiet)
        dask = sweep(grid, ['fit'], {}, 'dask', tmp_path/'sweeps', scheduler=cluster.scheduler_address, progress=False,
                     log=quiet)
        executor = read_json(dask/'sweep.json')['executor']
        assert executor.startswith(f'Dask cluster {cluster.scheduler_address}: 2 workers'), executor
    a, b = metrics_of(local, ['fit']), metrics_of(dask, ['fit'])
    assert list(a) == ['labels_per_class=2', 'labels_per_class=5']
    assert a == b
    want = cell_threads(cores(), 2)
    assert {m['fit']['torch_threads'] for m in a.values()} == {want}  # torch inside the kernel, not just the variable
    assert {m['fit']['omp_threads'] for m in a.values()} == {str(want)}
    assert [m['fit']['n_labeled'] for m in a.values()] == [20, 50]
    assert len({m['fit']['accuracy'] for m in a.values()}) > 1  # the budgets really differ
    for t in (results_table(local), results_table(dask)):
        assert list(t.status) == ['done'] * 2 and set(t.threads) == {want}
    # the results beside it, and the report notebook that shows them
    md = write_results(local).read_text()
    assert '![accuracy_vs_labels](accuracy_vs_labels.png)' in md and '| labels_per_class=5 | 5 | done |' in md
    nb = json.loads(run_report(local).read_text())
    pngs = [o for c in nb['cells'] for o in c.get('outputs', []) if 'image/png' in o.get('data', {})]
    assert len(pngs) == 2 and (local/'labels_to_target.png').stat().st_size > 1000


def test_a_failing_cell_does_not_stop_the_others_and_a_rerun_skips_finished_cells(exps, tmp_path, capsys, monkeypatch):
    """Through the command line: the boom cell fails (exit 1, one line naming it), the others finish; results.md lists
    the failed cell with its error and executed notebook. A rerun
    skips the finished cells and runs the failed one again; a cell that stopped in its second stage resumes there."""
    photos = class_folder(tmp_path/'photos', n=6)
    cfg = tmp_path/'sweep.yaml'
    cfg.write_text(f"stages: [fit, check]\ngrid:\n  strategy: [plain, scaled, boom]\ndata: {photos}\n"
                   "labels_per_class: 3\ncheck:\n  fail_check: true\n")
    argv = ['sweep', '--name', 's', '--sweeps-dir', str(tmp_path/'sweeps'), '--config', str(cfg), '--workers', '2',
            '--no-report']
    monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(exps))
    code = pipeline.main(argv)
    out, err = capsys.readouterr()
    d = tmp_path/'sweeps'/'s'
    assert code == 1, err
    assert err.strip().splitlines() == [
        f"smallwb: 2 of 3 cells did not finish (strategy=scaled, strategy=boom); each is listed with its error and "
        f"notebook in {d/'results.md'}"], err
    t = results_table(d)
    assert list(t.status) == ['done', 'failed', 'failed']
    boom = t.set_index('cell').loc['strategy=boom']
    assert 'RuntimeError: boom on purpose' in boom.error and boom.notebook == 'runs/strategy=boom/fit.ipynb'
    assert (d/boom.notebook).exists() and 'boom on purpose' in (d/boom.notebook).read_text()
    scaled = t.set_index('cell').loc['strategy=scaled']
    assert 'check failed on purpose' in scaled.error and scaled.notebook == 'runs/strategy=scaled/check.ipynb'
    assert scaled['fit.accuracy'] > 0  # its first stage finished, and counts
    md = (d/'results.md').read_text()
    assert '- `strategy=boom` (failed): smallwb: stage \'fit\' failed: RuntimeError: boom on purpose' in md
    assert '[`runs/strategy=boom/fit.ipynb`](runs/strategy=boom/fit.ipynb)' in md
    assert (d/'results.csv').exists() and 'No figures' in md  # no label axis: a table, no figures
    first = {c: read_json(d/'runs'/c/'fit'/'metrics.json') for c in ('strategy=plain', 'strategy=scaled')}

    # the rerun: plain is skipped; scaled resumes at check (fit counts); boom runs again from fit
    code = pipeline.main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and '1 of 3 cells already done (same parameters and data): skipped' in out
    cells = {c['name']: c for c in read_json(d/'sweep.json')['cells']}
    assert cells['strategy=plain']['status'] == 'reused' and cells['strategy=scaled']['run'] == ['check']
    assert cells['strategy=boom']['run'] == ['fit', 'check']
    assert all(read_json(d/'runs'/c/'fit'/'metrics.json') == m for c, m in first.items())  # untouched
    assert read_json(d/'runs'/'strategy=scaled'/'run.json')['stages'] == ['fit', 'check']  # fit counted

    # a smaller grid: the boom cell's folder is left on disk, named, and not in the results
    cfg.write_text(cfg.read_text().replace(', boom', ''))
    assert pipeline.main(argv) == 1
    out = capsys.readouterr().out
    assert '1 run folders in' in out and 'not cells of this grid: left there, not in the results (strategy=boom)' in out
    assert list(results_table(d).cell) == ['strategy=plain', 'strategy=scaled']


def test_changed_data_or_parameters_rerun_the_cells(exps, tmp_path):
    "Issue 13 kind 5 for sweeps: a cell counts as done only with the same parameters and the same data manifest."
    photos = class_folder(tmp_path/'photos', n=6)
    run = lambda **kw: sweep({'seed': [0]}, ['fit'], {'data': str(photos), 'labels_per_class': 2, **kw}, 'x',
                             tmp_path/'sweeps', workers=2, exp_dir=exps, progress=False, log=quiet)
    d = run()
    stamps = {c: (d/'runs'/c/'fit'/'metrics.json').stat().st_mtime_ns for c in ('seed=0',)}
    assert list(results_table(run()).status) == ['reused']
    noise(photos/'dog'/'0.png', seed=4242)  # same file name, other pixels
    d = run()
    cells = {c['name']: c for c in read_json(d/'sweep.json')['cells']}
    assert {c['status'] for c in cells.values()} == {'done'}
    assert all("its data differs from this run's" in c['why'] for c in cells.values()), cells
    assert all((d/'runs'/c/'fit'/'metrics.json').stat().st_mtime_ns != s for c, s in stamps.items())
    run(strategy='scaled')
    assert {c['why'] for c in read_json(d/'sweep.json')['cells']} == {
        "fit: its parameters differ from this run's: strategy was 'plain', now 'scaled'"}


def test_bad_grids_are_refused_before_any_cell_starts(exps, tmp_path, monkeypatch, capsys):
    "A value one cell would refuse, an unknown axis, a clash or a bad YAML file: exit 1, one line, nothing written."
    monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(exps))
    (tmp_path/'list.yaml').write_text('grid: [1, 2]\n')
    sweeps = tmp_path/'sweeps'
    for args, words in [(['-g', 'labels_per_class', '2,0'], "labels_per_class=0 (stage fit, check): expected an "
                                                            "integer at least 1 (cell labels_per_class=0)"),
                        (['-g', 'fit.strategy', 'plain,fancy'], "fit.strategy='fancy' (stage fit): expected one of"),
                        (['-g', 'sead', '0,1'], "unknown parameter 'sead'"),
                        (['-g', 'seed', '0,1', '-p', 'seed', '2'], 'seed: set both as a grid axis and as a parameter'),
                        (['-g', 'seed', '0,0'], 'grid axis seed: a value is repeated'),
                        ([], 'a sweep needs at least one grid axis'),
                        (['--config', str(tmp_path/'list.yaml')], 'grid must be a mapping'),
                        (['-g', 'seed', '0', '--workers', '2', '--scheduler', 'tcp://127.0.0.1:1'], 'not both')]:
        assert pipeline.main(['sweep', '--sweeps-dir', str(sweeps), *args]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith('smallwb: ') and words in err and err.count('\n') == 1, (args, err)
    assert not sweeps.exists()
