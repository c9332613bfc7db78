"""Active learning: the loop with injected fakes, distinct queries from every strategy on degenerate inputs, budgets
relative to the pool, a headless import, and the active stage on a folder with an unlabeled pool/ (the real loop)."""
import json, subprocess, sys
from pathlib import Path
import nbformat, numpy as np, pandas as pd, pytest
from smallwb.active import (ActiveLoop, HeadScorer, SimulatedOracle, STRATEGIES, get_strategy, pixel_features,
                            relative_budget, run_backbone)
from smallwb.core import read_json
from smallwb.data import digits, from_arrays, budget_split
from conftest import class_folder, noise


@pytest.fixture(scope='module')
def small():
    "40 digits (4 per class) and their pixels."
    ds = digits()
    idx = np.concatenate([np.flatnonzero(ds.labels == c)[:4] for c in range(10)])
    sub = from_arrays(ds.arrays[idx], ds.labels[idx], classes=ds.classes, name='digits40')
    return sub, pixel_features(sub)


class FakeScorer:
    "Counts fits; predicts uniform probabilities."
    n_classes = 3
    def __init__(self): self.fits = []
    def fit(self, X, y):
        self.fits.append(len(y))
        return self
    def predict_proba(self, X): return np.full((len(X), 3), 1/3)
    def clone(self, seed=None): return FakeScorer()


def first_n(loop, n): return loop.candidates[:n]   # a fake strategy: the lowest rows first


def test_step_queries_asks_adds_retrains():
    X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    y = np.arange(20) % 3
    asked = []
    def oracle(rows):
        asked.append(list(rows))
        return [int(y[r]) for r in rows]
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


# ---- distinct queries (issue 13, kind 7) ----

def _degenerate(case):
    "(X, labeled, batch_size, budget): 12 items in 3 classes, 3 labeled, with the given pathology."
    rng = np.random.default_rng(0)
    X = {'identical items': np.tile(rng.normal(size=(1, 6)), (12, 1)), 'all-zero features': np.zeros((12, 6)),
         'near-zero features': rng.normal(size=(12, 6)) * 1e-20, 'n > pool': rng.normal(size=(5, 6)),
         'a pool of one': rng.normal(size=(4, 6))}[case].astype(np.float32)
    labeled = {0: 0, 1: 1, 2: 2}
    return X, labeled, 6, len(X)

CASES = ['identical items', 'all-zero features', 'near-zero features', 'n > pool', 'a pool of one']

@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('name', list(STRATEGIES))
def test_every_strategy_asks_for_distinct_items_on_degenerate_input(name, case):
    "Every strategy gives the loop n_next distinct unlabeled items, however degenerate the features."
    X, labeled, bs, budget = _degenerate(case)
    y = np.arange(len(X)) % 3
    loop = ActiveLoop(X, HeadScorer(3, steps=10), name, SimulatedOracle(y), labeled=labeled, batch_size=bs,
                      budget=budget)
    want = min(bs, len(X) - 3)
    while loop.n_next:
        q = loop.query().tolist()
        assert len(q) == min(want, len(loop.candidates)) and len(set(q)) == len(q), (name, case, q)
        assert not set(q) & set(loop.labeled) and set(q) <= set(loop.pool.tolist())
        before = len(loop.labeled)
        assert loop.step() and len(loop.labeled) == before + len(q)
    assert len(loop.labeled) == len(X)                                  # the whole pool, every item once


class Confident:
    "Sure of every prediction, the same last-layer input for every item: BADGE's gradient embeddings are near zero."
    n_classes = 3
    def fit(self, X, y): return self
    def predict_proba(self, X):
        p = 1e-9 * (1 + 1e-7 * np.asarray(X, np.float64)[:, :3])
        return np.concatenate([1 - p.sum(1, keepdims=True), p[:, :2]], 1)
    def embed(self, X): return np.ones((len(X), 6))
    def clone(self, seed=None): return Confident()


def test_badge_on_near_zero_gradient_embeddings_asks_for_distinct_items():
    "The issue's case: k-means++ on embeddings whose distances are all rounding noise (a952c40: 2 of these 50 repeat)."
    X = np.random.default_rng(0).normal(size=(40, 3))
    for seed in range(50):
        loop = ActiveLoop(X, Confident(), 'badge', SimulatedOracle(np.arange(40) % 3), labeled={0: 0, 1: 1, 2: 2},
                          batch_size=14, budget=40, seed=seed)
        q = loop.query().tolist()
        assert len(q) == 14 and len(set(q)) == 14, (seed, sorted(q))


def test_cold_start_on_identical_items_is_distinct():
    loop = ActiveLoop(np.ones((6, 3), np.float32), HeadScorer(2, steps=5), 'margin', SimulatedOracle(np.arange(6) % 2),
                      batch_size=4, budget=6)
    q = loop.query().tolist()
    assert len(q) == 4 and len(set(q)) == 4


def test_a_strategy_that_repeats_itself_is_topped_up_from_its_next_best():
    "Duplicates and rows outside the candidates are dropped; what is missing comes from asking the strategy again."
    X = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    calls = []
    def stubborn(loop, n):
        calls.append(n)
        c = loop.candidates
        return np.array([c[0], c[0], c[0], 0, 999])                    # its best, three times, a labeled row, junk
    loop = ActiveLoop(X, FakeScorer(), stubborn, SimulatedOracle(np.arange(30) % 3), labeled={0: 0}, batch_size=5,
                      budget=30)
    q = loop.query().tolist()
    assert len(q) == 5 and len(set(q)) == 5 and 0 not in q and 999 not in q
    assert q[:4] == [1, 2, 3, 4] and calls == [5, 4, 3, 2]           # each retry holds the earlier picks back
    assert loop.step() and len(loop.labeled) == 6
    assert loop.history[-1]['topped_up'] == 4


def test_a_strategy_with_nothing_new_is_filled_at_random():
    X = np.zeros((10, 2), np.float32)
    loop = ActiveLoop(X, FakeScorer(), lambda loop, n: np.array([0, 0]), None, labeled={0: 0}, batch_size=4, budget=10)
    q = loop.query().tolist()
    assert len(q) == 4 and len(set(q)) == 4 and 0 not in q and loop.topped_up == 4


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


# ---- budgets relative to the pool (issue 16, item 4) ----

@pytest.mark.parametrize('args, want', [((20, 881), (200, 10)), ((30, 36), (37, 1)), ((4, 241), (54, 5)),
                                        ((30, 36, 200, 10), (66, 10)), ((30, 36, 0, 50), (66, 36)),
                                        ((10, 0), (10, 1)), ((12, 5, 8), (12, 1))])
def test_relative_budget_never_more_than_there_is(args, want):
    budget, batch, note = relative_budget(*args)
    assert (budget, batch) == want, note
    n_labeled, n_pool = args[:2]
    assert n_labeled <= budget <= n_labeled + n_pool and 1 <= batch and (batch <= n_pool or n_pool == 0)
    assert f'budget {budget}' in note or f'using {budget}' in note or 'no queries' in note


def test_headless_import_does_not_load_widgets():
    "smallwb.active is the algorithms only: importing it must not pull in ipywidgets (the widget is in smallwb.labels)."
    code = "import sys, smallwb.active; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False'


def test_run_backbone_reads_the_model_the_run_hands_on(tmp_path, small):
    "The features' backbone and size come from the run's latest model; without one, lite0 at choose_size."
    import torch.nn as nn
    from smallwb.transfer import save_model
    from smallwb.core import write_metrics
    ds, _ = small
    assert run_backbone(tmp_path, ds)[0] == dict(backbone='lite0', size=32)
    save_model(tmp_path/'transfer'/'model.pth', nn.Linear(2, 2), dict(name='classifier', backbone='lite2', n_classes=2),
               ['a', 'b'], 96)
    write_metrics(tmp_path/'transfer', {'model': 'model.pth'})
    bb, why = run_backbone(tmp_path, ds)
    assert bb == dict(backbone='lite2', size=96) and 'model.pth' in why
    save_model(tmp_path/'distill'/'s.pth', nn.Linear(2, 2), dict(name='cnn', n_classes=2), ['a', 'b'], 32)
    write_metrics(tmp_path/'distill', {'model': 's.pth'})
    bb, why = run_backbone(tmp_path, ds)                            # a CNN student has no backbone to embed with
    assert bb == dict(backbone='lite0', size=32) and 'no backbone' in why and 's.pth' in why


# ---- the active stage on folders (issue 16, items 4 and 7) ----

def run_active(tmp_path, name, data, **params):
    "Run the active experiment alone into a run folder; return it."
    from smallwb.pipeline import run_chain
    ps = {'data': str(data), 'labels_per_class': 2, 'quick': True, 'n_seeds': 1, 'feature_spaces': 'pixels',
          'strategies': 'random,weighted_kmeans', **params}
    return run_chain(['active'], ps, name, tmp_path/'runs', log=lambda s: None)


def pool_folder(root, n_pool=14):
    "cat/ and dog/ with 6 images each, and an unlabeled pool/ of `n_pool` images."
    class_folder(root, n=6)
    for i in range(n_pool): noise(Path(root)/'pool'/f'u{i:02d}.png', seed=5000 + i)
    return Path(root)


def test_active_stage_with_an_unlabeled_pool_runs_the_real_loop(tmp_path):
    "The README's layout: queries (CSV + grid), the widget in the notebook, labels in the run's store; a rerun resumes."
    from smallwb.labels import LabelStore, dataset_id
    from smallwb.data import from_folder
    data = pool_folder(tmp_path/'pets')
    run = run_active(tmp_path, 'pets', data, batch_size=4, budget=0)
    m = read_json(run/'active'/'metrics.json')
    assert m['mode'] == 'label' and m['budget'] == 8 and m['batch_size'] == 4, m   # 4 start + a fifth of 14, in 4s
    q = pd.read_csv(run/'active'/'queries.csv')
    assert len(q) == 4 and q['item'].is_unique and all(i.startswith('pool/') for i in q['item']), q
    assert (run/'active'/'queries.png').stat().st_size > 1000 and (run/'labels.sqlite').exists()
    nb = nbformat.read(run/'active.ipynb', as_version=4)
    outs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outs), 'no widget shown'
    # a person labels two of the queries (what the widget does), then the stage runs again
    ds = from_folder(data, verbose=False)
    store = LabelStore(run/'labels.sqlite', ds.classes, dataset_id(ds))
    for item in q['path'][:2]: store.add(item, 'cat', 'me')
    store.close()
    run_active(tmp_path, 'pets', data, batch_size=4, budget=0)
    m2 = read_json(run/'active'/'metrics.json')
    assert m2['stored_labels'] == 2 and m2['n_labels'] == 6 and m2['unlabeled_left'] == 12, m2
    q2 = pd.read_csv(run/'active'/'queries.csv')
    assert len(q2) == 2 and not set(q2['path']) & set(q['path'][:2])     # the budget of 8 leaves two to ask
    assert LabelStore(run/'labels.sqlite', ds.classes, dataset_id(ds)).labels() == {p: 'cat' for p in q['path'][:2]}


def test_active_stage_on_a_small_labeled_folder_simulates_within_what_there_is(tmp_path):
    "No pool/: the simulation, with budget and batch relative to the pool, never more than there is (said so)."
    data = class_folder(tmp_path/'pets', n=8)          # 16 images: 8 test, 4 start labels, a pool of 4
    run = run_active(tmp_path, 'small', data, budget=200)
    m = read_json(run/'active'/'metrics.json')
    assert m['mode'] == 'simulate' and m['budget'] == 8 and 'using 8' in m['budget_note'], m
    c = pd.read_csv(run/'active'/'curves.csv')
    assert c.n_labels.max() == 8 and set(c.strategy) == {'random', 'weighted_kmeans'}


PHOTOS = Path(__file__).resolve().parents[2]/'shared'/'data'/'hymenoptera'

@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f'real photos not found at {PHOTOS} (CI has ../shared beside it)')
def test_active_stage_on_real_photos_with_a_pool(tmp_path):
    "Real photos (a few from hymenoptera, copied) with a pool/: lite0 features at its native size, the backbone space."
    import shutil
    root = tmp_path/'bugs'
    for cls in ('ants', 'bees'):
        files = sorted((PHOTOS/'train'/cls).iterdir())
        for sub, fs in ((cls, files[:5]), ('pool', files[5:9])):
            (root/sub).mkdir(parents=True, exist_ok=True)
            for f in fs: shutil.copy(f, root/sub/f.name)
    run = run_active(tmp_path, 'bugs', root, feature_spaces='pixels,backbone', budget=0, batch_size=0)
    m = read_json(run/'active'/'metrics.json')
    assert m['mode'] == 'label' and m['feature_space'] == 'backbone', m
    assert (m['backbone'], m['backbone_size']) == ('lite0', 224), m
    q = pd.read_csv(run/'active'/'queries.csv')
    assert len(q) == m['budget'] - 4 == 8 and all(i.startswith('pool/') for i in q['item'])
    assert q['guess'].isin(['ants', 'bees']).all()
