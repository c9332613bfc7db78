"The experiment contract: config.json, metrics.json, atomic writes, finding earlier stages' models, the feature cache."
import json, os
from pathlib import Path
import numpy as np
import pytest
import torch
from smallwb import core
from smallwb.core import (Stage, write_json, read_json, write_metrics, deterministic_metrics, is_timing, file_hash,
                          stage_model, FeatureCache, cache_dir, set_seed, versions)


def test_cache_is_the_session_temp_dir():
    assert cache_dir() == Path(os.environ['SMALLWB_CACHE']) and 'smallwb-test-cache' in str(cache_dir())
    assert FeatureCache().root == cache_dir()/'features'


def test_config_json_has_params_versions_and_manifest_hash(tmp):
    params = {'data': 'digits', 'labels_per_class': 10, 'seed': 3, 'out_dir': str(tmp), 'quick': True}
    st = Stage('transfer', params, tmp)
    cfg = read_json(st.path('config.json'))
    assert cfg['stage'] == 'transfer' and cfg['params'] == params and 'manifest' not in cfg
    v = cfg['versions']
    assert v['torch'] == torch.__version__.split('+')[0] and v['numpy'] == np.__version__ and v['python']
    assert v['device'] in ('cpu', 'cuda') and set(core.VERSIONED) <= set(v)
    m = tmp/'manifest.csv'
    m.write_text('item,hash,label,role\na,1,cat,labeled\n')
    st.set_manifest(m)
    cfg = read_json(st.path('config.json'))
    assert cfg['manifest'] == {'path': str(m), 'sha1': file_hash(m)}
    m.write_text('item,hash,label,role\na,1,cat,test\n')
    st.set_manifest(m)
    assert read_json(st.path('config.json'))['manifest']['sha1'] != cfg['manifest']['sha1']


def test_stage_writes_a_partial_folder_and_renames_it_into_place(tmp):
    "Issue 13 kind 5: until finish() nothing is in place; a rerun replaces the folder whole at finish()."
    st = Stage('transfer', {'seed': 0}, tmp)
    assert st.dir.parent == tmp and st.dir.name.startswith('.transfer.partial-') and not (tmp/'transfer').exists()
    assert core.partial_dirs(tmp, 'transfer') == [st.dir]
    st.path('manifest.csv').write_text('item\na\n')
    st.set_manifest(st.path('manifest.csv'))
    st.path('old.png').write_bytes(b'old')
    st.finish({'accuracy': 0.5, 'model': 'model.pth'}, show=False)
    assert sorted(p.name for p in tmp.iterdir()) == ['transfer'] and st.dir == tmp/'transfer'
    assert read_json(tmp/'transfer'/'config.json')['manifest']['path'] == str(tmp/'transfer'/'manifest.csv')
    st.set_manifest(None)  # after finish() the stage still knows where its manifest is
    assert read_json(tmp/'transfer'/'config.json')['manifest']['path'] == str(tmp/'transfer'/'manifest.csv')
    assert oct((tmp/'transfer').stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # a normal folder, not mkdtemp's 0700
    again = Stage('transfer', {'seed': 1}, tmp)
    again.path('teacher.pth').write_bytes(b'new')
    assert read_json(tmp/'transfer'/'config.json')['params'] == {'seed': 0}  # the earlier run, whole, until finish()
    m = again.finish({'teacher': again.path('teacher.pth'), 'nested': [str(again.dir)]}, show=False)
    assert sorted(p.name for p in (tmp/'transfer').iterdir()) == ['config.json', 'metrics.json', 'teacher.pth']
    assert m['teacher'] == str(tmp/'transfer'/'teacher.pth') and m['nested'] == [str(tmp/'transfer')]
    assert read_json(tmp/'transfer'/'metrics.json')['teacher'] == str(tmp/'transfer'/'teacher.pth')
    assert core.partial_dirs(tmp, 'transfer') == []


def test_an_abandoned_rerun_leaves_the_earlier_outputs_alone(tmp):
    "A stage killed before finish() (here: never finished) leaves the earlier folder exactly as it was."
    Stage('s', {'seed': 0}, tmp).finish({'accuracy': 0.5}, show=False)
    before = {p.name: p.read_bytes() for p in (tmp/'s').iterdir()}
    killed = Stage('s', {'seed': 1}, tmp)
    killed.path('new.png').write_bytes(b'new')
    assert {p.name: p.read_bytes() for p in (tmp/'s').iterdir()} == before
    assert core.stage_metrics(tmp, 's') == {'stage': 's', 'accuracy': 0.5}
    assert core._chain(tmp) == ['s']  # the partial folder is no stage


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_importing_core_does_not_import_torch():
    "`smallwb run` checks parameters and data before anything loads torch (seconds on a busy machine)."
    import subprocess, sys
    code = 'import sys, smallwb.core, smallwb.data, smallwb.pipeline; print("torch" in sys.modules)'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'False', r.stdout + r.stderr


def test_metrics_json_plain_values(tmp):
    st = Stage('s', {}, tmp)
    m = st.finish({'accuracy': np.float32(0.75), 'per_class': np.array([1, 2]), 't': torch.tensor(0.5),
                   'nan': float('nan'), 'model': Path('model.pth'), 'train_seconds': 1.5,
                   'nested': {'latency_ms': 3.0, 'top1': np.int64(7)}}, show=False)
    got = read_json(tmp/'s'/'metrics.json')
    assert got == {'stage': 's', 'accuracy': 0.75, 'per_class': [1, 2], 't': 0.5, 'nan': None, 'model': 'model.pth',
                   'train_seconds': 1.5, 'nested': {'latency_ms': 3.0, 'top1': 7}}
    assert deterministic_metrics(got) == {'stage': 's', 'accuracy': 0.75, 'per_class': [1, 2], 't': 0.5, 'nan': None,
                                          'model': 'model.pth', 'nested': {'top1': 7}}
    assert [is_timing(k) for k in ('a_seconds', 'x_ms', 'images_per_second', 'seconds_total')] == [True, True, True, False]


def test_finish_shows_a_table(tmp, capsys):
    m = Stage('s', {}, tmp).finish({'accuracy': 0.5, 'sub': {'f1': 0.25}, 'curve': [1, 2]})
    assert m['accuracy'] == 0.5
    out = capsys.readouterr().out
    assert 'sub.f1' in out and '0.25' in out


def test_atomic_write_keeps_the_old_file_on_failure(tmp, monkeypatch):
    p = write_json(tmp/'metrics.json', {'accuracy': 0.5})
    with pytest.raises(TypeError): write_json(p, {'accuracy': object()})  # not serialisable: nothing written
    assert read_json(p) == {'accuracy': 0.5}
    def crash(*a): raise OSError('disk full')
    monkeypatch.setattr(core.os, 'replace', crash)
    with pytest.raises(OSError, match='disk full'): write_json(p, {'accuracy': 0.9})
    monkeypatch.undo()
    assert read_json(p) == {'accuracy': 0.5}
    assert sorted(f.name for f in tmp.iterdir()) == ['metrics.json']  # no temp file left behind


def test_read_json_names_the_file(tmp):
    with pytest.raises(FileNotFoundError, match='nope.json: no such file'): read_json(tmp/'nope.json')
    (tmp/'bad.json').write_text('{"a": ')
    with pytest.raises(ValueError, match='bad.json: not valid JSON'): read_json(tmp/'bad.json')


def test_stage_model_resolves_models_handed_on_from_another_stage(tmp):
    "Issue 16: augment hands on the transfer model it took (`../transfer/model.pth`); later stages find it, normalised."
    write_metrics(tmp/'transfer', {'model': 'model.pth'})
    write_metrics(tmp/'augment', {'model': '../transfer/model.pth', 'took': 'transfer/model.pth'})
    write_json(tmp/'run.json', {'stages': ['transfer', 'augment', 'edge']})
    assert stage_model(tmp, before='edge') == tmp/'transfer'/'model.pth'
    assert stage_model(tmp, 'augment') == tmp/'transfer'/'model.pth'


def test_stage_model_follows_the_chain(tmp):
    write_metrics(tmp/'transfer', {'model': 'model.pth'})
    write_metrics(tmp/'augment', {'accuracy': 0.9})
    write_metrics(tmp/'distill', {'model': 'student.pth'})
    write_json(tmp/'run.json', {'stages': ['transfer', 'augment', 'distill', 'edge']})
    assert stage_model(tmp, before='edge') == tmp/'distill'/'student.pth'
    assert stage_model(tmp, before='augment') == tmp/'transfer'/'model.pth'
    assert stage_model(tmp, before='transfer') is None and stage_model(tmp, 'augment') is None
    assert stage_model(tmp, 'transfer') == tmp/'transfer'/'model.pth'


def test_set_seed_repeats():
    set_seed(7); a = (np.random.rand(3), torch.rand(3))
    set_seed(7); b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
    set_seed(8); assert not torch.equal(torch.rand(3), a[1])


def test_feature_cache_computes_each_item_once(tmp):
    vec = {h: np.full(3, i, np.float32) for i, h in enumerate('abcdef')}
    calls = []
    def compute(hs):
        def f(pos): calls.append([hs[p] for p in pos]); return np.stack([vec[hs[p]] for p in pos])
        return f
    fc = FeatureCache(tmp)
    hs = list('abca')  # a repeated item is computed once
    assert fc.get('k', hs, compute(hs))[:, 0].tolist() == [0, 1, 2, 0] and calls == [['a', 'b', 'c']]
    hs = list('dcba')
    assert FeatureCache(tmp).get('k', hs, compute(hs))[:, 0].tolist() == [3, 2, 1, 0] and calls[-1] == ['d']
    fc3 = FeatureCache(tmp); fc3.get('k', list('abcd'), compute(list('abcd'))); assert fc3.computed == 0
    fc3.get('other', list('ab'), compute(list('ab'))); assert fc3.computed == 2
    fc3.clear('other'); fc3.get('other', list('ab'), compute(list('ab'))); assert fc3.computed == 4
    with pytest.raises(ValueError, match='returned 1 vectors for 2 items'): fc3.get('k2', list('ef'), lambda pos: np.zeros((1, 3)))


def test_feature_cache_two_writers_at_once(tmp):
    "Another process fills the same key while this one computes: both results survive, rows stay right."
    vec = {h: np.full(2, i, np.float32) for i, h in enumerate('abcdef')}
    rows = lambda hs: (lambda pos: np.stack([vec[hs[p]] for p in pos]))
    other = FeatureCache(tmp)
    def slow(pos):  # while we compute a, b, c the other writer stores c, d, e
        other.get('k', list('cde'), rows(list('cde')))
        return rows(list('abc'))(pos)
    assert FeatureCache(tmp).get('k', list('abc'), slow)[:, 0].tolist() == [0, 1, 2]
    fresh = FeatureCache(tmp)
    got = fresh.get('k', list('edcba'), rows(list('edcba')))
    assert fresh.computed == 0 and got[:, 0].tolist() == [4, 3, 2, 1, 0]
