"""`smallwb run`: checks before any kernel starts (names, values against the notebooks' markers, data), --quick as
defaults only, failures that end in one line, run folders that never mix two runs, the summary, and the real chain.
Issue 13's cases (kinds 1-5, 10) are named in the tests' docstrings."""
import os, signal, subprocess, sys, time
from pathlib import Path
import nbformat
import pytest
from conftest import class_folder, noise
from smallwb import pipeline
from smallwb.pipeline import (run_chain, StageFailed, RunFailed, default_chain, find_stages, notebook_params,
                              plan_values, earlier_stages, write_summary, NO_QUICK)
from smallwb.core import read_json, write_json, write_metrics, deterministic_metrics, partial_dirs

NAMES = '_names = set(globals())  # everything defined after this is a parameter'
PARAMS = '''data = "digits"  # 'digits' or an image folder
labels_per_class = 10  # labels per class [1..]
seed = 0  # seed [0..]
out_dir = "runs/x"  # run folder
quick = False  # tiny settings
'''
CONFIG = "config = {k: v for k, v in globals().items() if k not in _names and not k.startswith('_')}"
OPEN = '''import time
from smallwb.core import Stage
stage = Stage({name!r}, config, out_dir)
stage.log("working")'''
DATA = 'from smallwb.data import stage_data\nds, split = stage_data(stage, data, labels_per_class, seed)'
OK_PARAMS = '''scale = 1.0  # a parameter only this stage has [0..]
budget = 200  # labels to buy [1..] (quick: 50)
steps = 100  # optimizer steps [1..] (quick: 7)
pause = 0.0  # seconds to wait before finishing [0..]
'''
OK = '''import random
random.seed(seed)
stage.path('started.txt').write_text('started')
time.sleep(pause)
stage.finish({'accuracy': random.random() * scale, 'seed': seed, 'scale': scale, 'budget': budget, 'steps': steps,
              'lpc_type': type(labels_per_class).__name__, 'wall_seconds': time.time()})'''


def experiment(path, name, body, extra='', data=False):
    "Write a tiny experiment notebook that follows the contract (names, parameters, config, then the stage)."
    params = nbformat.v4.new_code_cell(PARAMS + extra)
    params.metadata['tags'] = ['parameters']
    cells = [nbformat.v4.new_code_cell(NAMES), params, nbformat.v4.new_code_cell(CONFIG),
             nbformat.v4.new_code_cell(OPEN.format(name=name) + ('\n' + DATA if data else '')), nbformat.v4.new_code_cell(body)]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def exps(tmp_path):
    "An experiments folder: a stage that passes, one that fails, one after it."
    d = tmp_path/'experiments'
    d.mkdir()
    experiment(d/'01_ok.ipynb', 'ok', OK, extra=OK_PARAMS, data=True)
    experiment(d/'02_boom.ipynb', 'boom', "raise RuntimeError('boom on purpose')")
    experiment(d/'03_after.ipynb', 'after', "stage.finish({'accuracy': 1.0, 'scale': scale})",
               extra='scale = 0.25  # its own scale [0..0.5]\n')
    return d


def declared(exps): return {s: notebook_params(p) for s, p in find_stages(exps).items()}


def test_find_stages_and_default_chain(exps):
    assert list(find_stages(exps)) == ['ok', 'boom', 'after'] and default_chain(exps) == ['ok', 'boom', 'after']
    experiment(exps/'00_intro.ipynb', 'intro', "stage.finish({})")
    assert default_chain(exps) == ['ok', 'boom', 'after']  # 00_* are optional
    for f in exps.glob('0[123]_*'): f.unlink()
    assert default_chain(exps) == ['intro']  # ... unless nothing else exists


# ---- kind 1: parameter values are checked before any stage starts ------------------------------------------------

def test_parameter_values_are_checked_before_any_stage_starts(exps, tmp_path):
    "Issue 13 kind 1: -p labels_per_class 0 / -1 / abc are refused in one message naming parameter, value, accepted."
    runs = tmp_path/'runs'
    for bad in (0, -1, 'abc', 3.5):
        with pytest.raises(ValueError) as e: run_chain(['ok'], {'labels_per_class': bad}, 'a', runs, exp_dir=exps)
        assert str(e.value) == f"parameter values refused: labels_per_class={bad!r} (stage ok): expected an integer at least 1"
    with pytest.raises(ValueError) as e:  # every refusal at once, common and stage.key alike
        run_chain(['ok', 'after'], {'labels_per_class': 'abc', 'ok.steps': 0, 'scale': 0.8}, 'b', runs, exp_dir=exps)
    msg = str(e.value)
    assert "labels_per_class='abc' (stage ok, after): expected an integer at least 1" in msg
    assert "ok.steps=0 (stage ok): expected an integer at least 1" in msg
    assert "scale=0.8 (stage after): expected a number from 0 to 0.5" in msg  # a common parameter, every stage checks it
    assert 'scale=0.8 (stage ok' not in msg and '\n' not in msg
    assert not runs.exists()  # nothing ran: no run folder, no kernel


def test_harmless_coercions(exps):
    "3.0 → 3 for an int (it used to fail in a slice), 1 → 1.0 for a float, '0,1' → [0, 1] for a list."
    plan = plan_values(['ok'], {'labels_per_class': 3.0, 'ok.scale': 1}, declared(exps))['ok']
    assert plan == {'labels_per_class': 3, 'scale': 1.0} and type(plan['labels_per_class']) is int
    synth = {'synth': notebook_params(find_stages()['synth'])}
    assert plan_values(['synth'], {'synth.ratios': '0,1'}, synth)['synth'] == {'ratios': [0, 1]}


def test_the_issues_values_against_the_real_data_overview():
    "The issue's cases on a real experiment: 00_data declares labels_per_class [1..]."
    decl = {s: notebook_params(p) for s, p in find_stages().items()}
    for bad in (0, -1, 'abc'):
        with pytest.raises(ValueError, match=rf"labels_per_class={bad!r} \(stage data\): expected an integer at least 1"):
            plan_values(['data'], {'labels_per_class': bad}, decl)
    assert plan_values(['data'], {'labels_per_class': 3.0}, decl)['data'] == {'labels_per_class': 3}


@pytest.mark.parametrize('stage', list(find_stages()))
def test_every_experiments_markers_parse(stage):
    """Every parameter of every experiment parses, its default and quick value fit its own marker, and smallwb reads the
    parameters cell as papermill does (names, defaults, comments)."""
    import papermill as pm
    nb = find_stages()[stage]
    params = notebook_params(nb)  # raises, naming the notebook and parameter, on a malformed marker
    for p in params.values():
        if p.default is not None: assert p.check(p.default) == p.default, (nb, p.name)
        if p.quick is not NO_QUICK: assert p.check(p.quick) == p.quick, (nb, p.name)
    seen = {k: (v['default'], v['help']) for k, v in pm.inspect_notebook(str(nb)).items()}
    assert seen == {n: (d, h) for n, d, h in pipeline.cell_params(pipeline.parameters_cell(nb))}


def test_malformed_markers_name_notebook_and_parameter(tmp_path):
    for line, words in [('epochs = 3  # epochs [1..x]', "[1..x] is neither a range"),
                        ('epochs = 0  # epochs [1..]', 'its default 0 is refused'),
                        ('epochs = 3  # epochs [1..] (quick: abc)', 'its quick value abc is refused'),
                        ('epochs = 3  # epochs (quick: 2) [1..]', 'must end the comment'),
                        ('strategy = "auto"  # how [auto]', 'is neither a range'),
                        ('epochs = 2 * 3  # epochs', 'is not a literal')]:
        nb = experiment(tmp_path/'01_bad.ipynb', 'bad', 'pass', extra=line + '\n')
        with pytest.raises(ValueError) as e: notebook_params(nb)
        assert str(e.value).startswith(f"{nb}: parameter ") and words in str(e.value), (line, str(e.value))
    nb = experiment(tmp_path/'01_bad.ipynb', 'bad', 'pass', extra='import os\n')
    with pytest.raises(ValueError, match=r"01_bad.ipynb: parameters cell: line 6: not a flat"): notebook_params(nb)


# ---- kind 2: --quick changes defaults only --------------------------------------------------------------------------

def test_quick_changes_defaults_only(exps):
    "Issue 13 kind 2: a value the user set stays (CLI, YAML or stage.key); the others take their (quick: VALUE)."
    d = declared(exps)
    assert plan_values(['ok'], {'quick': True, 'ok.budget': 20}, d)['ok'] == {'quick': True, 'budget': 20, 'steps': 7}
    assert plan_values(['ok'], {'quick': True, 'ok': {'steps': 9}}, d)['ok'] == {'quick': True, 'steps': 9, 'budget': 50}
    assert plan_values(['ok'], {}, d)['ok'] == {}  # no quick, nothing injected
    assert plan_values(['ok', 'after'], {'ok.quick': True}, d) == {'ok': {'quick': True, 'budget': 50, 'steps': 7},
                                                                    'after': {}}


def test_quick_on_the_real_experiments():
    "The issue's case: --stages active -p active.budget 20 --quick keeps 20; synth's vae_steps likewise."
    decl = {s: notebook_params(p) for s, p in find_stages().items()}
    synth = plan_values(['synth'], {'quick': True, 'synth.vae_steps': 40}, decl)['synth']
    quick = {k: v.quick for k, v in decl['synth'].items() if v.quick is not NO_QUICK and k != 'vae_steps'}
    assert synth == {'quick': True, 'vae_steps': 40, **quick} and quick  # the user's value stays, the rest go quick
    if decl['active'].get('budget') and decl['active']['budget'].quick is not NO_QUICK:
        assert plan_values(['active'], {'quick': True, 'active.budget': 20}, decl)['active']['budget'] == 20


# ---- kind 3 / 10: checks before any kernel, a stage named like a parameter ------------------------------------------

def test_unknown_stage_and_parameters_fail_before_running(exps, tmp_path):
    runs = tmp_path/'runs'
    cases = [(['okk'], {}, r'unknown stage okk; available: ok, boom, after'),
             (['ok'], {'sead': 1}, r"unknown parameter 'sead': no experiment declares it"),
             (['ok'], {'ok.scal': 2}, r"stage 'ok' has no parameter scal; it declares: .*scale"),
             (['ok'], {'edge.threads': 2}, r"parameter 'edge.threads': there is no stage 'edge'"),
             (['ok'], {'boom': {'scale': 2}}, r"stage 'boom' has no parameter scale"),
             (['ok'], {'out_dir': 'x'}, r"out_dir is set by smallwb run")]
    for stages, params, words in cases:
        with pytest.raises(ValueError, match=words): run_chain(stages, params, 'a', runs, exp_dir=exps)
    assert not runs.exists()  # nothing ran


def test_data_is_checked_before_any_kernel_starts(exps, tmp_path):
    "Issue 13 kind 10: layout, class folders and each stage's label budget fail in the parent, before a kernel."
    runs = tmp_path/'runs'
    one = class_folder(tmp_path/'one', classes=('cat',), n=4)
    with pytest.raises(ValueError, match='a classifier needs at least two class folders; found 1 \\(cat\\)'):
        run_chain(['ok'], {'data': str(one)}, 'a', runs, exp_dir=exps)
    small = class_folder(tmp_path/'small', n=6)
    with pytest.raises(ValueError, match=r"class 'cat' has 3 outside the test set, needs 10.* \(stage ok, after\)"):
        run_chain(['ok', 'after'], {'data': str(small)}, 'b', runs, exp_dir=exps)
    assert not runs.exists()


def test_a_stage_named_like_a_common_parameter(exps):
    "Issue 13 kind 3: a stage called `data` and `-p data digits`: the value is the parameter, a mapping a block."
    experiment(exps/'00_data.ipynb', 'data', "stage.finish({})")
    d = declared(exps)
    pipeline.check_params({'data': 'digits', 'data.seed': 2}, d)
    assert plan_values(['data'], {'data': 'digits', 'data.seed': 2}, d)['data'] == {'data': 'digits', 'seed': 2}
    assert plan_values(['data', 'ok'], {'data': {'seed': 3}}, d) == {'data': {'seed': 3}, 'ok': {}}


def smallwb(*args, cwd, exps=None, **kw):
    env = {**os.environ, **({'SMALLWB_EXPERIMENTS': str(exps)} if exps else {})}
    return subprocess.run([str(Path(sys.executable).parent/'smallwb'), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


def test_the_real_data_stage_with_data_digits(tmp_path):
    "Issue 13 kinds 3 and 10: `smallwb run --stages data -p data digits` runs, ends 'done', and prints no kernel warning."
    r = smallwb('run', '--stages', 'data', '-p', 'data', 'digits', '--quick', '--name', 'd', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert 'without encryption' not in r.stderr and 'IPKernelApp' not in r.stderr, r.stderr
    run = tmp_path/'runs'/'d'
    assert read_json(run/'run.json')['status'] == 'done' and read_json(run/'data'/'metrics.json')['n_classes'] == 10
    assert read_json(run/'data'/'config.json')['params']['data'] == 'digits'


# ---- kind 4: every failure ends in one line --------------------------------------------------------------------------

def test_stop_on_failure(exps, tmp_path):
    logs = []
    with pytest.raises(StageFailed) as e:
        run_chain(None, {'quick': True}, 'r', tmp_path/'runs', exp_dir=exps, log=logs.append)
    run = tmp_path/'runs'/'r'
    msg = str(e.value)
    assert msg == f"stage 'boom' failed: RuntimeError: boom on purpose; the executed notebook shows the full error: {run/'boom.ipynb'}"
    executed = nbformat.read(run/'boom.ipynb', as_version=4)
    assert any('boom on purpose' in str(o) for c in executed.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert read_json(run/'ok'/'metrics.json')['seed'] == 0 and (run/'ok.ipynb').exists() and (run/'ok'/'config.json').exists()
    assert not (run/'after').exists() and not (run/'after.ipynb').exists()
    status = read_json(run/'run.json')
    assert status['status'] == 'failed' and status['failed_stage'] == 'boom' and status['stages'] == ['ok', 'boom', 'after']
    assert status['error'] == msg
    summary = (run/'summary.md').read_text()
    assert 'Stage `boom` failed' in summary and '## ok' in summary and msg in summary
    assert logs[0].startswith('data: digits') and logs[0].endswith('labelled candidates (the test set is drawn from them)')
    logs = [l for l in logs if not l.startswith('data: ')]  # how each folder was read, then the stages
    assert logs[0] == '[1/3] ok: running 01_ok.ipynb ...' and logs[1].startswith('[1/3] ok: done in') and 'accuracy=' in logs[1]
    assert sorted(p.name for p in run.iterdir()) == ['boom', 'boom.ipynb', 'ok', 'ok.ipynb', 'overview.png', 'run.json',
                                                     'summary.md']  # the failed attempt's notebook and its own folder


def test_the_data_warnings_reach_summary_md(exps, tmp_path):
    "A test set that lacks a class warns in the log before the stages; summary.md and run.json keep that warning."
    folder = tmp_path/'photos'
    class_folder(folder/'train', n=4)
    class_folder(folder/'test', classes=('cat',), n=2, start=50)
    logs = []
    run = run_chain(['ok'], {'data': str(folder), 'labels_per_class': 2}, 'w', tmp_path/'runs', exp_dir=exps,
                    log=logs.append)
    warn = next(l for l in logs if l.startswith('warning') and "no images of class 'dog'" in l)
    assert f'- {warn}' in (run/'summary.md').read_text() and warn in read_json(run/'run.json')['data']


def test_failures_before_any_stage_end_in_one_line(exps, tmp_path, monkeypatch, capsys):
    "Issue 13 kind 4: a runs folder that cannot be written (read-only, or a file) and an unwritable run.json."
    monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(exps))
    (tmp_path/'afile').write_text('')
    for runs, words in [('/sys/smallwb-runs', 'cannot create the run folder /sys/smallwb-runs/x'),
                        (str(tmp_path/'afile'), f"cannot create the run folder {tmp_path/'afile'/'x'}")]:
        assert pipeline.main(['run', '--stages', 'ok', '--name', 'x', '--runs-dir', runs]) == 1
        err = capsys.readouterr().err
        assert err.startswith('smallwb: ') and words in err and 'no run.json written' in err and err.count('\n') == 1, err
    (tmp_path/'runs'/'y'/'run.json').mkdir(parents=True)  # run.json cannot be written
    assert pipeline.main(['run', '--stages', 'ok', '--name', 'y', '--runs-dir', str(tmp_path/'runs')]) == 1
    err = capsys.readouterr().err
    assert 'IsADirectoryError' in err and 'run.json could not be written' in err and err.count('\n') == 1, err
    assert not (tmp_path/'runs'/'y'/'ok.ipynb').exists()  # no stage started


def test_a_kernel_that_dies(exps, tmp_path):
    "Issue 13 kind 4: the kernel is killed mid-stage: one line naming the stage, run.json 'failed'."
    experiment(exps/'04_die.ipynb', 'die', "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(StageFailed) as e: run_chain(['die'], {}, 'k', tmp_path/'runs', exp_dir=exps, log=lambda s: None)
    run = tmp_path/'runs'/'k'
    assert str(e.value).startswith("stage 'die' failed: its kernel died (killed, or out of memory)") and '\n' not in str(e.value)
    assert read_json(run/'run.json')['status'] == 'failed' and read_json(run/'run.json')['failed_stage'] == 'die'


def test_the_failure_handlers_own_writes_failing(exps, tmp_path):
    "Issue 13 kind 4: a stage fails after run.json and summary.md became unwritable: the line still says it all."
    experiment(exps/'04_sabotage.ipynb', 'sabotage', '''import os, pathlib
run = pathlib.Path(out_dir)
(run/'run.json').unlink()
(run/'run.json').mkdir()
(run/'summary.md').mkdir()
raise ValueError('disk trouble')''')
    r = smallwb('run', '--stages', 'sabotage', '--name', 's', cwd=tmp_path, exps=exps)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("smallwb: stage 'sabotage' failed: ValueError: disk trouble") and len(r.stderr.strip().splitlines()) == 1
    assert 'summary.md could not be written (IsADirectoryError' in last and 'run.json could not be written (IsADirectoryError' in last


def _wait_for_start(run, stale=(), timeout=300):
    "The partial folder of a new attempt at stage ok, once the stage has written started.txt into it."
    t = time.time()
    while True:
        new = [d for d in partial_dirs(run, 'ok') if d not in stale and (d/'started.txt').exists()]
        if new: return new[0]
        if time.time() - t > timeout: raise TimeoutError(f'stage ok did not start in {run}')
        time.sleep(0.2)


def _start(tmp_path, exps, *args):
    env = {**os.environ, 'SMALLWB_EXPERIMENTS': str(exps)}
    # SIGINT at its default action, as in a terminal: a test run from a background shell (CI, nohup) inherits it ignored
    return subprocess.Popen([str(Path(sys.executable).parent/'smallwb'), 'run', *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_killed_and_interrupted_reruns_never_mix_with_the_earlier_run(exps, tmp_path):
    """Issue 13 kinds 4 and 5: a rerun killed (SIGKILL) leaves the earlier outputs as they were; one interrupted (Ctrl-C)
    ends in one line and exit 130, run.json 'interrupted', and what is in place comes from that attempt only."""
    run = tmp_path/'runs'/'r'
    run_chain(['ok'], {'labels_per_class': 2}, 'r', tmp_path/'runs', exp_dir=exps, log=lambda s: None)
    before = {p.name: p.read_bytes() for p in (run/'ok').iterdir()}
    nb_before = (run/'ok.ipynb').read_bytes()
    p = _start(tmp_path, exps, '--name', 'r', '--stages', 'ok', '-p', 'labels_per_class', '2', '-p', 'ok.pause', '120')
    stale = _wait_for_start(run)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(60)
    assert {q.name: q.read_bytes() for q in (run/'ok').iterdir()} == before and (run/'ok.ipynb').read_bytes() == nb_before
    assert len(partial_dirs(run, 'ok')) == 1 and read_json(run/'run.json')['status'] == 'running'  # SIGKILL: no word
    p = _start(tmp_path, exps, '--name', 'r', '--stages', 'ok', '-p', 'labels_per_class', '2', '-p', 'ok.pause', '120')
    _wait_for_start(run, stale=[stale])
    assert stale not in partial_dirs(run, 'ok')  # the killed attempt's leftovers were cleared before the stage ran
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130
    assert err.strip().splitlines() == [f"smallwb: interrupted during stage 'ok'; {run/'ok.ipynb'} shows how far it got"], err
    assert "never finished (killed?)" in out
    status = read_json(run/'run.json')
    assert status['status'] == 'interrupted' and status['failed_stage'] == 'ok'
    assert sorted(q.name for q in (run/'ok').iterdir()) == ['config.json', 'manifest.csv', 'started.txt']  # no metrics
    assert read_json(run/'ok'/'config.json')['params']['pause'] == 120 and partial_dirs(run, 'ok') == []


# ---- kind 5: reused run folders never mix runs -----------------------------------------------------------------------

def test_parameters_and_same_seed_same_metrics(exps, tmp_path):
    "Common and stage-only parameters arrive; the same parameters and seed give the same metrics.json (timings aside)."
    folder = class_folder(tmp_path/'photos', n=6)
    p = {'seed': 4, 'ok.scale': 0.5, 'data': str(folder), 'labels_per_class': 2}
    a, b = [run_chain(['ok'], p, n, tmp_path/'runs', exp_dir=exps, log=lambda s: None) for n in ('a', 'b')]
    cfg = read_json(a/'ok'/'config.json')['params']
    assert cfg['seed'] == 4 and cfg['data'] == str(folder) and cfg['out_dir'] == str(a) and cfg['steps'] == 100
    ma, mb = read_json(a/'ok'/'metrics.json'), read_json(b/'ok'/'metrics.json')
    assert ma['scale'] == 0.5 and ma['seed'] == 4
    assert ma['wall_seconds'] != mb['wall_seconds']  # timings may differ ...
    assert deterministic_metrics(ma) == deterministic_metrics(mb)  # ... nothing else
    assert (a/'overview.png').exists() and '| accuracy |' in (a/'summary.md').read_text()


def test_a_reused_run_folder_never_mixes_runs(exps, tmp_path):
    """Issue 13 kind 5: run X on folder A, then `--name X --stages after -p data digits`: ok (from A) does not count,
    and the log, run.json and summary.md say why."""
    folder = class_folder(tmp_path/'A', n=6)
    (folder/'cat'/'broken.png').write_bytes(b'')
    run = run_chain(['ok'], {'data': str(folder), 'labels_per_class': 2}, 'X', tmp_path/'runs', exp_dir=exps,
                    log=lambda s: None)
    assert '1 in [`ok/skipped.csv`](ok/skipped.csv)' in (run/'summary.md').read_text()  # issue 13 kind 10
    logs = []
    run_chain(['after'], {'data': 'digits', 'labels_per_class': 2}, 'X', tmp_path/'runs', exp_dir=exps, log=logs.append)
    info = read_json(run/'run.json')
    assert info['stages'] == ['after'] and info['status'] == 'done'
    assert f"data was {str(folder)!r}, now 'digits'" in info['not_counted']['ok']
    assert any(l.startswith('ok: the earlier outputs') and 'data was' in l for l in logs)
    summary = (run/'summary.md').read_text()
    assert '## ok' not in summary and '## after' in summary and 'Not counted: `ok`' in summary
    # same parameters, but the folder's contents changed since: not counted either
    decl = declared(exps)
    counted, why = earlier_stages(run, ['after'], {'data': str(folder), 'labels_per_class': 2}, decl, {})
    assert counted == ['ok'] and why == {}
    noise(folder/'dog'/'0.png', seed=4242)  # same name, other content
    counted, why = earlier_stages(run, ['after'], {'data': str(folder), 'labels_per_class': 2}, decl, {})
    assert counted == [] and "its data differs from this run's" in why['ok']
    assert earlier_stages(run, ['after'], {'data': str(folder), 'labels_per_class': 0}, decl, {})[1] == {
        'ok': "this run's labels_per_class=0 does not fit it"}
    # a stage after one that runs again was built on outputs this run replaces
    assert earlier_stages(run, ['ok'], {'data': 'digits', 'labels_per_class': 2}, decl, {})[1] == {
        'after': "it was built on 'ok', which this run runs again"}


# ---- the summary ------------------------------------------------------------------------------------------------------

def test_summary_lineage_and_skipped_files(tmp_path):
    "Issue 16 item 1: a lineage table for the stages that record one; issue 13 kind 10: skipped files with links."
    res = {'transfer': {'model': 'model.pth', 'took': None, 'valid_accuracy': 0.95, 'valid_on': 'val/ (153)',
                        'accuracy': 0.94, 'model_params': 3400000, 'model_mb': 13.4, 'latency_ms': 17.25},
           'augment': {'model': '../transfer/model.pth', 'took': 'transfer/model.pth', 'valid_accuracy': 0.93,
                       'accuracy': 0.94},
           'synth': {'accuracy': 0.9},
           'edge': {'model': 'model.int8.onnx', 'took': 'transfer/model.pth', 'accuracy': 0.935, 'model_mb': 3.6,
                    'latency_ms': {'b1': 2.5}}}
    for s, m in res.items(): write_metrics(tmp_path/s, m)
    for s in ('transfer', 'augment'): (tmp_path/s/'skipped.csv').write_text('path,reason\n"a,b.png",empty file\nc.txt,not an image\n')
    text = write_summary(tmp_path, list(res), res).read_text()
    assert '| stage | took | gave | validation accuracy | test accuracy | parameters | size (MB) | latency (ms) |' in text
    assert '| transfer | – | transfer/model.pth | 0.95 (val/ (153)) | 0.94 | 3400000 | 13.4 | 17.25 |' in text
    assert '| augment | transfer/model.pth | transfer/model.pth | 0.93 | 0.94 | – | – | – |' in text
    assert '| edge | transfer/model.pth | edge/model.int8.onnx | – | 0.935 | – | 3.6 | – |' in text
    assert '| synth |' not in text.split('## transfer')[0]  # synth records no lineage
    assert '2 in [`transfer/skipped.csv`](transfer/skipped.csv), 2 in [`augment/skipped.csv`](augment/skipped.csv)' in text
    assert (tmp_path/'overview.png').stat().st_size > 1000


def test_console_script(exps, tmp_path):
    "The installed command: --config, -p overriding it, --quick as defaults only, 3.0 arriving as the int 3."
    (tmp_path/'cfg.yaml').write_text('seed: 5\nlabels_per_class: 3\nok:\n  scale: 0.25\n')
    r = smallwb('run', '--stages', 'ok', '--name', 'g', '--config', 'cfg.yaml', '-p', 'seed', '6', '-p', 'labels_per_class', '2.0',
                '-p', 'ok.budget', '20', '--quick', cwd=tmp_path, exps=exps)
    assert r.returncode == 0, r.stderr
    assert 'without encryption' not in r.stderr, r.stderr  # issue 13 kind 10
    assert f"report: {tmp_path/'runs'/'g'/'summary.md'}" in r.stdout and '[1/1] ok: running' in r.stdout
    cfg = read_json(tmp_path/'runs'/'g'/'ok'/'config.json')['params']
    assert (cfg['seed'], cfg['labels_per_class'], cfg['quick']) == (6, 2, True)  # -p overrides the file
    assert (cfg['budget'], cfg['steps']) == (20, 7)  # the user's budget stays, steps takes its quick value
    m = read_json(tmp_path/'runs'/'g'/'ok'/'metrics.json')
    assert (m['scale'], m['budget'], m['steps'], m['lpc_type']) == (0.25, 20, 7, 'int')  # config.json is what ran


def test_command_line_errors(exps, tmp_path, monkeypatch, capsys):
    "Bad command lines exit 1 (2 for usage errors) with one clear line, before any stage runs."
    monkeypatch.setenv('SMALLWB_EXPERIMENTS', str(exps))
    monkeypatch.chdir(tmp_path)
    (tmp_path/'list.yaml').write_text('- a\n- b\n')
    (tmp_path/'bad.yaml').write_text('seed: [1\n')
    for args, words in [(['-p', 'sead', '1'], "unknown parameter 'sead'"),
                        (['--config', 'missing.yaml'], 'missing.yaml: no such config file'),
                        (['--config', 'list.yaml'], 'must be a mapping'), (['--config', 'bad.yaml'], 'bad.yaml: not valid YAML'),
                        (['--stages', 'nope'], 'unknown stage nope'), (['-p', 'data', 'nowhere'], "data 'nowhere': neither a built-in"),
                        (['-p', 'seed', '-3'], 'seed=-3 (stage ok, boom, after): expected an integer at least 0')]:
        assert pipeline.main(['run', *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith('smallwb: ') and words in err and err.count('\n') == 1, (args, err)
    assert not (tmp_path/'runs').exists()
    assert pipeline.main(['stages']) == 0 and capsys.readouterr().out.split()[::2] == ['ok', 'boom', 'after']
    with pytest.raises(SystemExit) as e: pipeline.main(['run', '--bogus'])
    assert e.value.code == 2


# ---- the real experiments ---------------------------------------------------------------------------------------

COMMON = {'data', 'labels_per_class', 'seed', 'out_dir', 'quick'}


@pytest.mark.parametrize('stage', list(find_stages()))
def test_experiment_follows_the_contract(stage):
    """Every experiment: `_names = set(globals())`, then the parameters cell (the common parameters among them), then the
    config built from the parameters, never retyped (issue 14)."""
    nb = find_stages()[stage]
    code = [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code']
    assert COMMON <= pipeline.declared_params(nb), f'{nb} must declare {sorted(COMMON - pipeline.declared_params(nb))}'
    assert code[0].source.startswith('_names = set(globals())'), f'{nb}: the first code cell must be `_names = set(globals())`'
    assert 'parameters' in code[1].metadata.get('tags', []), f'{nb}: the second code cell must be tagged parameters'
    assert code[2].source.startswith(CONFIG), f'{nb}: the third code cell must start with `{CONFIG}`'


def test_edge_is_last():
    chain = default_chain()
    if 'edge' in chain: assert chain[-1] == 'edge'
