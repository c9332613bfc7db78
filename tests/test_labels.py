"""The label store (round trip, bad input, SQLite errors reported as what they are, two processes creating one new
store, SIGKILL safety), the store's oracle, and the labelling widget's API."""
import os, sqlite3, subprocess, sys
import numpy as np, pytest
from smallwb.active import HeadScorer
from smallwb.labels import (LabelStore, LabelingWidget, StoreOracle, crash_test, create_race, dataset_id, resume_loop,
                            store_error)
from smallwb.core import file_hash
from test_active import small  # the fixture: 40 digits (4 per class) and their pixels


def test_store_roundtrip_undo_csv(tmp_path):
    s = LabelStore(tmp_path/'l.db', classes=['cat', 'dog'], dataset='pets:1')
    s.add('a.jpg', 'cat', 'ana')
    s.add('b.jpg', 1, 'ana')
    s.skip('c.jpg', 'ben')
    assert s.labels() == {'a.jpg': 'cat', 'b.jpg': 'dog'} and s.skipped() == {'c.jpg'}
    assert s.undo('ana')['item'] == 'b.jpg' and s.labels() == {'a.jpg': 'cat'}
    assert len(s.history()) == 3                                    # undo keeps the record
    h = s.history().iloc[0]
    assert (h['item'], h['label'], h['user'], h['kind']) == ('a.jpg', 'cat', 'ana', 'label')
    assert h['at'].endswith('+00:00')
    s.to_csv(tmp_path/'l.csv')
    assert (tmp_path/'l.csv').read_text().splitlines()[0] == 'item,label,user,at'
    assert len((tmp_path/'l.csv').read_text().splitlines()) == 2
    assert len(s) == 1 and 'l.db' in repr(s)


def test_store_bad_input_loses_nothing(tmp_path):
    p = tmp_path/'l.db'
    s = LabelStore(p, classes=['cat', 'dog'], dataset='pets:1')
    s.add('a.jpg', 'cat', 'me')
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


# ---- SQLite errors, reported as what they are (issue 13, kind 8) ----

def test_store_read_only_location():
    with pytest.raises(PermissionError, match='read-only'):
        LabelStore('/proc/smallwb-labels.db', classes=['a', 'b'], dataset='x')
    with pytest.raises(FileNotFoundError, match='cannot create or open the label store'):
        LabelStore('/proc/smallwb/labels.db', classes=['a', 'b'], dataset='x')


def test_store_path_is_a_folder(tmp_path):
    with pytest.raises(PermissionError, match='SQLITE_CANTOPEN.*the path is a folder'):
        LabelStore(tmp_path, classes=['a', 'b'], dataset='x')


def test_store_not_a_database(tmp_path):
    (tmp_path/'notes.db').write_text('my notes' * 200)
    with pytest.raises(ValueError, match='SQLITE_NOTADB.*not a label store'):
        LabelStore(tmp_path/'notes.db', classes=['a', 'b'], dataset='x')


def test_store_full_is_reported_as_full_not_read_only(tmp_path):
    "A real SQLITE_FULL (the file may not grow: max_page_count) is an OSError that says the disk is full."
    s = LabelStore(tmp_path/'l.db', classes=['a', 'b'], dataset='x')
    s.con.execute(f"PRAGMA max_page_count = {s.con.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(OSError) as e:
        for i in range(10_000): s.add(f'item{i}', 'a')
    assert 'SQLITE_FULL' in str(e.value) and 'full' in str(e.value) and 'read-only' not in str(e.value)
    assert type(e.value) is OSError


def test_store_locked_by_another_process_says_so(tmp_path):
    "Another connection holds the write lock: after the timeout, a TimeoutError naming the lock, not 'read-only'."
    p = tmp_path/'l.db'
    s = LabelStore(p, classes=['a', 'b'], dataset='x', timeout=0.2)
    other = sqlite3.connect(p, isolation_level=None)
    other.execute('BEGIN EXCLUSIVE')
    try:
        with pytest.raises(TimeoutError, match='SQLITE_BUSY.*locked'): s.add('i', 'a')
    finally: other.execute('ROLLBACK')
    assert s.add('i', 'a') and s.labels() == {'i': 'a'}


def test_unexpected_sqlite_errors_keep_their_code():
    class Odd(sqlite3.IntegrityError): sqlite_errorname = 'SQLITE_CONSTRAINT_UNIQUE'
    e = store_error(Odd('UNIQUE constraint failed: meta.key'), 'l.db', 'create')
    assert type(e) is RuntimeError and 'SQLITE_CONSTRAINT_UNIQUE' in str(e) and 'read-only' not in str(e)


@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores permission bits')
def test_store_read_only_folder(tmp_path):
    p = tmp_path/'l.db'
    LabelStore(p, ['a', 'b'], 'x').add('i', 'a')
    os.chmod(tmp_path, 0o555)
    os.chmod(p, 0o444)
    try:
        s = LabelStore(p, ['a', 'b'], 'x')                          # a bound store opens read-only, for reading
        assert s.labels() == {'i': 'a'}
        with pytest.raises(PermissionError, match='read-only'): s.add('j', 'b')
    finally:
        os.chmod(tmp_path, 0o755)
        os.chmod(p, 0o644)


def test_two_processes_creating_one_new_store_never_fail(tmp_path):
    "Issue 13, kind 8: two processes create the same new store at the same moment, 300 times: no failure at all."
    errors = create_race(tmp_path, rounds=300)
    assert errors == [], errors[:5]
    s = LabelStore(tmp_path/'299.db', ['a', 'b'], 'race')
    assert dict(s.con.execute("SELECT key, value FROM meta WHERE key != 'created'").fetchall()) == \
        {'dataset': 'race', 'classes': '["a", "b"]'}


def test_store_readable_by_another_process_while_open(tmp_path):
    p = tmp_path/'l.db'
    s = LabelStore(p, classes=['a', 'b'], dataset='x')
    s.add('i1', 'a')
    s.add('i2', 'b')
    sql = 'select item, label from events order by id'
    code = f"import sqlite3; c = sqlite3.connect({str(p)!r}); print(c.execute({sql!r}).fetchall())"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[('i1', 'a'), ('i2', 'b')]"


@pytest.mark.parametrize('n_acks', [1, 7, 25, 60])
def test_sigkill_loses_no_acknowledged_label(tmp_path, n_acks):
    p = tmp_path/'crash.db'
    r = crash_test(p, n_acks=n_acks)
    assert r['lost'] == [] and r['integrity'] == 'ok' and r['stored'] >= n_acks
    r2 = crash_test(p, n_acks=5)                                    # restart on the same file: resumes, keeps all
    assert r2['lost'] == [] and r2['integrity'] == 'ok' and r2['stored'] >= r['stored'] + 5


def test_store_oracle_and_resume(small, tmp_path):
    ds, X = small
    store = LabelStore(tmp_path/'l.db', classes=ds.classes, dataset=dataset_id(ds))
    store.add(ds.items[5], '1', 'me')
    store.skip(ds.items[6], 'me')
    assert StoreOracle(store, ds)([5, 6, 7]) == [1, None, None]
    loop = resume_loop(ds, X, store, HeadScorer(10, steps=10), 'margin', labeled={0: 0}, batch_size=3, budget=10)
    assert loop.labeled == {0: 0, 5: 1} and 6 in loop.skipped and 6 not in loop.candidates


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
    buttons['3'].click()
    buttons['7'].click()
    assert store.labels() == {str(ds.items[0]): '3', str(ds.items[1]): '7'} and w.progress.value == '2 / 20 labeled'
    buttons['undo'].click()
    assert store.labels() == {str(ds.items[0]): '3'} and w.pos == 1
    buttons['skip'].click()
    assert w.pos == 2 and w.progress.value == '1 / 20 labeled'


def test_widget_shows_store_errors_and_stays(small, tmp_path):
    "A store that fails (here: full) shows its error in the widget, which stays on the item: nothing unstored is acked."
    ds, X = small
    store = LabelStore(tmp_path/'w.db', classes=ds.classes, dataset=dataset_id(ds))
    w = LabelingWidget(ds, list(range(5)), store)
    w.label('3')
    store.con.execute(f"PRAGMA max_page_count = {store.con.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(OSError, match='SQLITE_FULL'):
        for i in range(10_000): store.add(f'filler{i}', '0')              # fill the last page
    w.label('4')
    assert 'SQLITE_FULL' in w.status.value and w.pos == 1 and w.progress.value == '1 / 5 labeled'
    assert str(ds.items[1]) not in store.labels()


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
