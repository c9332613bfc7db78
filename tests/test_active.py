"Active learning: the loop with injected fakes, bad input, the crash-safe label store, and the labelling widget's API."
import os, random, sqlite3, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from smallwb.active import (ActiveLoop, HeadScorer, SimulatedOracle, LabelStore, LabelingWidget, StoreOracle, crash_test,
                            dataset_id, resume_loop, pixel_features, STRATEGIES, get_strategy)
from smallwb.core import file_hash
from smallwb.data import digits, from_arrays, budget_split


@pytest.fixture(scope='module')
def small():
    "40 digits (4 per class), their pixels and a store-friendly dataset."
    ds = digits()
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:4] for c in range(10)])
    sub = from_arrays(ds.arrays[idx], ds.labels[idx], classes=ds.classes, name='digits40')
    return sub, pixel_features(sub)


class FakeScorer:
    "Counts fits; predicts uniform probabilities."
    n_classes = 3
    def __init__(self): self.fits = []
    def fit(self, X, y): self.fits.append(len(y)); return self
    def predict_proba(self, X): return np.full((len(X), 3), 1/3)
    def clone(self, seed=None): return FakeScorer()


def first_n(loop, n): return loop.candidates[:n]   # a fake strategy: the lowest rows first


def test_step_queries_asks_adds_retrains():
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 3
    asked = []
    oracle = lambda rows: (asked.append(list(rows)), [int(y[r]) for r in rows])[1]
    sc = FakeScorer()
    loop = ActiveLoop(X, sc, first_n, oracle, labeled={0: 0, 1: 1}, batch_size=3, budget=9)
    assert sc.fits == [2]
    assert loop.step() is True and asked == [[2, 3, 4]] and sc.fits == [2, 5]
    while loop.step(): pass
    assert len(loop.labeled) == 9 and sc.fits == [2, 5, 8, 9]     # the last batch is cut to the budget
    assert asked[-1] == [8]
    assert loop.step() is False


def test_skips_are_not_asked_again():
    X = np.zeros((10, 2), np.float32)
    loop = ActiveLoop(X, FakeScorer(), first_n, lambda rows: [None] * len(rows), labeled={0: 0}, batch_size=2, budget=5)
    assert loop.step() is False                                     # nothing labeled
    assert loop.skipped == {1, 2} and list(loop.candidates[:2]) == [3, 4]


def test_bad_input():
    X = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match='budget of 50 labels is more than the 1 labeled \\+ 9 pool'):
        ActiveLoop(X, FakeScorer(), first_n, None, labeled={0: 0}, budget=50)
    with pytest.raises(ValueError, match='batch_size must be a positive integer, not 0'):
        ActiveLoop(X, FakeScorer(), first_n, None, batch_size=0)
    with pytest.raises(ValueError, match="unknown strategy 'smart'"):
        get_strategy('smart')
    with pytest.raises(ValueError, match='only reveal known labels'):
        SimulatedOracle(np.array([0, -1]))([1])


@pytest.mark.parametrize('name', list(STRATEGIES))
def test_every_strategy_queries_distinct_pool_items(name, small):
    ds, X = small
    sp = budget_split(ds, labels_per_class=1, test_size=0.25, seed=0)
    loop = ActiveLoop(X, HeadScorer(10, steps=20), name, SimulatedOracle(ds.labels), pool=sp.pool,
                      labeled=dict(zip(sp.labeled, ds.labels[sp.labeled])), batch_size=5, budget=20)
    q = loop.query()
    assert len(q) == 5 and len(set(q.tolist())) == 5 and set(q.tolist()) <= set(sp.pool.tolist())
    assert loop.step() and len(loop.labeled) == 15


def test_cold_start_without_labels(small):
    ds, X = small
    loop = ActiveLoop(X, HeadScorer(10, steps=20), 'margin', SimulatedOracle(ds.labels), batch_size=10, budget=10)
    q = loop.query()
    assert len(set(ds.labels[q])) >= 7                              # k-means picks cover most classes
    assert loop.step() and not loop.step()


# ---- the label store ----

def test_store_roundtrip_undo_csv(tmp_path):
    s = LabelStore(tmp_path/'l.db', classes=['cat', 'dog'], dataset='pets:1')
    s.add('a.jpg', 'cat', 'ana'); s.add('b.jpg', 1, 'ana'); s.skip('c.jpg', 'ben')
    assert s.labels() == {'a.jpg': 'cat', 'b.jpg': 'dog'} and s.skipped() == {'c.jpg'}
    assert s.undo('ana')['item'] == 'b.jpg' and s.labels() == {'a.jpg': 'cat'}
    assert len(s.history()) == 3                                    # undo keeps the record
    h = s.history().iloc[0]
    assert (h['item'], h['label'], h['user'], h['kind']) == ('a.jpg', 'cat', 'ana', 'label') and h['at'].endswith('+00:00')
    s.to_csv(tmp_path/'l.csv')
    assert (tmp_path/'l.csv').read_text().splitlines()[0] == 'item,label,user,at'
    assert len((tmp_path/'l.csv').read_text().splitlines()) == 2


def test_store_bad_input_loses_nothing(tmp_path):
    p = tmp_path/'l.db'
    s = LabelStore(p, classes=['cat', 'dog'], dataset='pets:1'); s.add('a.jpg', 'cat', 'me')
    with pytest.raises(ValueError, match="label 'bird' for b.jpg is not one of the classes"):
        s.add('b.jpg', 'bird', 'me')
    s.close()
    before = file_hash(p)
    with pytest.raises(ValueError, match=f"{p}: this label store belongs to dataset 'pets:1', not 'cars:2'"):
        LabelStore(p, classes=['cat', 'dog'], dataset='cars:2')
    with pytest.raises(ValueError, match='was made for classes'):
        LabelStore(p, classes=['cat', 'dog', 'bird'], dataset='pets:1')
    assert file_hash(p) == before
    assert LabelStore(p, classes=['cat', 'dog'], dataset='pets:1').labels() == {'a.jpg': 'cat'}


def test_store_read_only_location():
    with pytest.raises(PermissionError, match='read-only'):
        LabelStore('/proc/smallwb/labels.db', classes=['a', 'b'], dataset='x')


@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores permission bits')
def test_store_read_only_folder(tmp_path):
    p = tmp_path/'l.db'; LabelStore(p, ['a', 'b'], 'x').add('i', 'a'); os.chmod(tmp_path, 0o555); os.chmod(p, 0o444)
    try:
        with pytest.raises(PermissionError, match='read-only'): LabelStore(p, ['a', 'b'], 'x').add('j', 'b')
    finally: os.chmod(tmp_path, 0o755); os.chmod(p, 0o644)


def test_store_readable_by_another_process_while_open(tmp_path):
    p = tmp_path/'l.db'
    s = LabelStore(p, classes=['a', 'b'], dataset='x'); s.add('i1', 'a'); s.add('i2', 'b')
    code = f"import sqlite3; c = sqlite3.connect({str(p)!r}); print(c.execute('select item, label from events order by id').fetchall())"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[('i1', 'a'), ('i2', 'b')]"


@pytest.mark.parametrize('n_acks', [1, 7, 25, 60])
def test_sigkill_loses_no_acknowledged_label(tmp_path, n_acks):
    p = tmp_path/'crash.db'
    r = crash_test(p, n_acks=n_acks)
    assert r['lost'] == [] and r['integrity'] == 'ok' and r['stored'] >= n_acks
    r2 = crash_test(p, n_acks=5)                                    # restart on the same file: resumes, keeps all
    assert r2['lost'] == [] and r2['integrity'] == 'ok' and r2['stored'] >= r['stored'] + 5


# ---- the widget: the API another helper drives from Selenium ----

def test_widget_api(small, tmp_path):
    ds, X = small
    store = LabelStore(tmp_path/'w.db', classes=ds.classes, dataset=dataset_id(ds))
    w = LabelingWidget(ds, list(range(20)), store, user='me', predict=None)
    import ipywidgets as widgets
    assert isinstance(w, widgets.VBox) and 'smallwb-labeler' in w._dom_classes
    assert isinstance(w.image, widgets.Image) and w.image.format == 'png' and w.image.value[:4] == b'\x89PNG'
    buttons = {b.description: b for b in _all(w) if isinstance(b, widgets.Button)}
    assert set(ds.classes) | {'skip', 'undo'} == set(buttons)          # no retrain button without a loop
    assert w.progress.value == '0 / 20 labeled' and w.guess.value == ''
    buttons['3'].click(); buttons['7'].click()
    assert store.labels() == {str(ds.items[0]): '3', str(ds.items[1]): '7'} and w.progress.value == '2 / 20 labeled'
    buttons['undo'].click()
    assert store.labels() == {str(ds.items[0]): '3'} and w.pos == 1
    buttons['skip'].click(); assert w.pos == 2 and w.progress.value == '1 / 20 labeled'


def test_widget_with_predict_and_loop(small, tmp_path):
    ds, X = small
    store = LabelStore(tmp_path/'w.db', classes=ds.classes, dataset=dataset_id(ds))
    for i in range(0, 40, 4): store.add(ds.items[i], ds.classes[ds.labels[i]], 'seed')
    loop = resume_loop(ds, X, store, HeadScorer(10, steps=20), 'margin', batch_size=5, budget=20)
    w = LabelingWidget(ds, None, store, user='me', loop=loop)
    import ipywidgets as widgets
    names = [b.description for b in _all(w) if isinstance(b, widgets.Button)]
    assert 'retrain & query next' in names and 'model guesses' in w.guess.value
    batch = list(w.idxs)
    for i in batch: w.label(ds.classes[ds.labels[i]])
    w.next_button.click()
    assert len(loop.labeled) == 15 and not set(w.idxs) & set(batch) and len(w.idxs) == 5


def _all(w):
    yield w
    for c in getattr(w, 'children', ()): yield from _all(c)
