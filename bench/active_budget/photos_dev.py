"""Why query strategies fall below random on hymenoptera: measurements on development splits of train/ only.

The main benchmark (run.py) found every strategy below random's mean curve somewhere on hymenoptera (test = val/).
This script looks for the cause without touching val/:

1. The first query of the benchmark's own setup (2 labels per class, batches of 5, the rest of train/ as the pool):
   how class-balanced and how typical (mean distance to the 20 nearest neighbours, as a percentile of the pool) the
   picks of margin and weighted_kmeans are, against random's, and the accuracy after that one round - measured on
   held-out train/ items (half of train/, the other half as the pool), never on val/.
2. The scorer: the same strategies with `HeadScorer` (the default: a linear head, dropout 0.2, 100 Adam steps) and with
   scikit-learn's LogisticRegression (C=0.5 and C=0.01) as the model that scores the pool and is measured, on 10
   development splits of train/ (110 held-out items, 2 labels per class to start, batches of 3, 45 queries).

Run: .venv/bin/python bench/active_budget/photos_dev.py  (writes photos_dev.md beside it; about 10 min on 2 cores)
"""
import time
from pathlib import Path
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
from smallwb.data import from_folder, budget_split
from smallwb.active import HeadScorer, ActiveLoop, SimulatedOracle, simulate, backbone_features, run_backbone, _sqdist

HERE = Path(__file__).parent
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
STRATS = ['random', 'margin', 'weighted_kmeans']


class LogRegScorer:
    "scikit-learn's LogisticRegression with the scorer interface `ActiveLoop` needs (fit, predict_proba, clone)."
    def __init__(self, n_classes, C=0.5, seed=0): self.n_classes, self.C, self.seed = n_classes, C, seed
    def clone(self, seed=None): return LogRegScorer(self.n_classes, self.C, self.seed if seed is None else seed)
    def fit(self, X, y):
        self.m = LogisticRegression(C=self.C, max_iter=2000).fit(X, y)
        return self
    def predict_proba(self, X):
        p = np.zeros((len(X), self.n_classes))
        p[:, self.m.classes_] = self.m.predict_proba(X)
        return p


def dev_splits(train, y, seeds, n_test=110):
    "(start, pool, held-out) rows per seed, all inside train/."
    for seed in seeds:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(train)
        test, cand = perm[:n_test], perm[n_test:]
        start = np.concatenate([rng.choice(cand[y[cand] == k], 2, replace=False) for k in range(2)])
        yield seed, start, np.setdiff1d(cand, start), test


def first_query(X, y, train, seeds):
    "Balance, typicality and one-round accuracy of each strategy's first batch of 5."
    rows = []
    for seed, start, pool, test in dev_splits(train, y, seeds):
        d = _sqdist(X[pool], X[pool])
        np.fill_diagonal(d, np.inf)
        typ = pd.Series(-np.sqrt(np.sort(d, 1)[:, :20]).mean(1), index=pool).rank(pct=True)
        for s in STRATS:
            loop = ActiveLoop(X, HeadScorer(2, seed=seed), s, SimulatedOracle(y), pool=pool,
                              labeled=dict(zip(start, y[start])), batch_size=5, budget=len(start) + 5, seed=seed)
            q = loop.query()
            loop.step()
            rows.append(dict(seed=seed, strategy=s, picks_of_one_class=int(max((y[q] == 0).sum(), (y[q] == 1).sum())),
                             typicality_percentile=float(typ[q].mean()),
                             accuracy=float((loop.scorer.predict_proba(X[test]).argmax(1) == y[test]).mean())))
    return pd.DataFrame(rows)


SCORERS = {'HeadScorer (default)': lambda s: HeadScorer(2, seed=s),
           'LogisticRegression C=0.5': lambda s: LogRegScorer(2, 0.5, s),
           'LogisticRegression C=0.01': lambda s: LogRegScorer(2, 0.01, s)}


def scorer_curves(X, y, train, seeds):
    rows = []
    for seed, start, pool, test in dev_splits(train, y, seeds):
        for name, mk in SCORERS.items():
            for s in STRATS:
                c = simulate(X, y, s, start, pool, test, scorer=mk(seed), batch_size=3, budget=len(start) + 45,
                             seed=seed)
                rows.append(c.assign(strategy=s, scorer=name, seed=seed))
    return pd.concat(rows, ignore_index=True)


def main():
    t0 = time.time()
    ds = from_folder(PHOTOS, verbose=False)
    bb, why = run_backbone(Path('/nonexistent-run'), ds)
    X, y = backbone_features(ds, **bb), ds.labels
    sp = budget_split(ds, labels_per_class=2, seed=0)
    train = np.sort(np.concatenate([sp.labeled, sp.pool]))  # train/ only: val/ is never read here
    seeds = range(100, 110)
    fq = first_query(X, y, train, seeds)
    fq_t = fq.groupby('strategy', sort=False)[['picks_of_one_class', 'typicality_percentile', 'accuracy']].mean()
    cur = scorer_curves(X, y, train, seeds)
    m = cur.groupby(['scorer', 'strategy', 'n_labels'], sort=False).accuracy.mean().unstack()
    budgets = [n for n in m.columns if n in (4, 7, 10, 13, 19, 28, 40, 49)]
    L = ['# Active learning on photos: why strategies fall below random (development splits of train/)', '',
         f'`.venv/bin/python bench/active_budget/photos_dev.py` ({(time.time() - t0) / 60:.0f} min). Features: {why} '
         f'({bb}). 10 development splits of hymenoptera train/ (seeds 100-109): 110 held-out train/ items to measure '
         'on, 2 labels per class to start, the rest the pool; val/ is not read.', '',
         '## 1. The first query (batch of 5 after 4 labels, HeadScorer)', '',
         '| strategy | picks of the more frequent class (of 5) | typicality percentile of the picks '
         '| accuracy after the round |', '|---|---|---|---|']
    L += [f'| {s} | {r.picks_of_one_class:.1f} | {r.typicality_percentile:.2f} | {r.accuracy:.3f} |'
          for s, r in fq_t.iterrows()]
    L += ['', '## 2. The scorer', '', 'Mean accuracy over the 10 splits by labels; "worst" and "mean" = the strategy '
          'minus random with the same scorer, over all budgets, in points.', '',
          '| scorer | strategy | ' + ' | '.join(f'@{n}' for n in budgets) + ' | worst vs random | mean vs random |',
          '|---|---|' + '---|' * len(budgets) + '---|---|']
    for (sc, s), r in m.iterrows():
        d = (r - m.loc[(sc, 'random')]) * 100
        L.append(f'| {sc} | {s} | ' + ' | '.join(f'{r[n]:.3f}' for n in budgets) +
                 (' | – | – |' if s == 'random' else f' | {d.min():+.1f} | {d.mean():+.1f} |'))
    (HERE/'photos_dev.md').write_text('\n'.join(L) + '\n', encoding='utf-8')
    print('\n'.join(L))


if __name__ == '__main__': main()
