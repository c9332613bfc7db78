"""Active-learning label budgets, every strategy in `smallwb.active.STRATEGIES` against random sampling, on the built-in
digits and on real photos (hymenoptera: simulation over train/, test = val/).

Digits: labels each strategy needs to reach 95% of full-pool accuracy, as a ratio to random's (target <= 0.4x), with a
bootstrap interval over seeds. Photos: the curves, which saturate early; the bar is that no strategy ends below
random at any budget. Both: mean +- std over seeds, what a round costs. Per-seed curves are cached, so a killed run
resumes.

Run: .venv/bin/python bench/active_budget/run.py [--seeds N] [--only digits|photos] [--available]"""
import argparse, os, platform, time
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from smallwb.core import cache_dir
from smallwb.data import digits, from_folder, budget_split
from smallwb.active import (STRATEGIES, HeadScorer, ActiveLoop, SimulatedOracle, simulate, labels_to_reach,
                            full_pool_accuracy, compare_spaces, spaces_for, run_backbone, relative_budget,
                            backbone_features)
from smallwb.transfer import choose_size

HERE = Path(__file__).parent
PARTS = cache_dir()/'bench'/'active_budget'  # per-seed curves: a rerun only computes what is missing
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
STRATS = list(STRATEGIES)
TARGET = 0.95
# (labels per class at the start, budget): digits as the earlier runs of this benchmark; photos to 104 labels
SETUP = {'digits': (2, 300), 'hymenoptera': (2, 104)}


def part(name:str, seed:int, fn) -> pd.DataFrame:
    "The cached curves `name` of `seed`, computed by `fn()` when missing."
    p = PARTS/f'{name}-seed{seed}.csv'
    if p.exists(): return pd.read_csv(p)
    df = fn()
    PARTS.mkdir(parents=True, exist_ok=True)
    df.to_csv(p.with_suffix('.tmp'), index=False)
    os.replace(p.with_suffix('.tmp'), p)
    return df


def curves_for(key:str, ds, X, y, seeds, start_per_class:int, budget:int, available:bool=False) -> pd.DataFrame:
    "Every strategy x seed: accuracy after every round (cached per seed)."
    out = []
    for seed in seeds:
        sp = budget_split(ds, labels_per_class=start_per_class, seed=seed)
        b, batch, note = relative_budget(len(sp.labeled), len(sp.pool), budget)
        def run(sp=sp, seed=seed, b=b, batch=batch):
            rows = []
            for s in STRATS:
                t0 = time.perf_counter()
                c = simulate(X, y, s, sp.labeled, sp.pool, sp.test, batch_size=batch, budget=b, seed=seed)
                rows.append(c.assign(strategy=s, seed=seed))
                dt = time.perf_counter() - t0
                print(f'{key} seed {seed} {s:17s} acc@{b} {c.accuracy.iloc[-1]:.3f} ({dt:.1f}s)', flush=True)
            return pd.concat(rows, ignore_index=True)
        if available and not (PARTS/f'{key}-seed{seed}.csv').exists(): continue
        out.append(part(key, seed, run))
    return pd.concat(out, ignore_index=True), batch, b, note


def mean_curves(curves:pd.DataFrame) -> pd.DataFrame:
    return curves.groupby(['strategy', 'n_labels'])['accuracy'].agg(['mean', 'std']).reset_index().fillna({'std': 0})


def reach(curves:pd.DataFrame, target:float) -> dict:
    "Labels to reach `target` on each strategy's mean curve (NaN: not within the budget)."
    m = mean_curves(curves).rename(columns={'mean': 'accuracy'})
    return {s: labels_to_reach(m[m.strategy == s], target) for s in curves.strategy.unique()}


def crossing(mean:pd.DataFrame, s:str, target:float) -> float:
    "Labels at which `s`'s mean curve crosses `target`, linearly interpolated between rounds (NaN: never)."
    m = mean[mean.strategy == s].sort_values('n_labels')
    x, v = m.n_labels.to_numpy(float), m['mean'].to_numpy()
    hit = np.flatnonzero(v >= target)
    if not len(hit): return float('nan')
    i = hit[0]
    return float(x[0]) if i == 0 else float(x[i-1] + (x[i] - x[i-1]) * (target - v[i-1]) / (v[i] - v[i-1]))


def ratio_interval(curves:pd.DataFrame, s:str, target:float, n_boot:int=2000, level:float=0.9) -> tuple:
    "Bootstrap interval (over seeds) of labels-to-target of `s` / of random, read off resampled mean curves."
    seeds, rng = np.array(sorted(curves.seed.unique())), np.random.default_rng(0)
    by_seed = {k: g for k, g in curves[curves.strategy.isin([s, 'random'])].groupby('seed')}
    r = []
    for _ in range(n_boot):
        pick = rng.choice(seeds, len(seeds))
        c = pd.concat([by_seed[k].assign(seed=i) for i, k in enumerate(pick)])
        need = reach(c, target)
        r.append(need[s] / need['random'] if need['random'] == need['random'] else 0.)  # random never there: 0x
    r = np.nan_to_num(np.array(r), nan=np.inf)   # the strategy never there: no better than the budget allows
    return tuple(np.quantile(r, [(1 - level) / 2, (1 + level) / 2]))


def round_times(X, y, n_pool:int, n_labeled:int, batch:int, rounds:int=3) -> dict:
    "Median (wall, CPU) seconds of one `step()` (query + oracle + retrain) per strategy."
    rows = np.random.default_rng(0).permutation(len(X))
    lab, pool = rows[:n_labeled], rows[n_labeled:n_labeled + n_pool]
    out = {}
    for s in STRATS:
        loop = ActiveLoop(X, HeadScorer(int(y.max()) + 1), s, SimulatedOracle(y), pool=pool,
                          labeled=dict(zip(lab, y[lab])), batch_size=batch, budget=n_labeled + batch * rounds)
        ts, cs = [], []
        while True:
            t0, c0 = time.perf_counter(), time.process_time()
            if not loop.step(): break
            ts.append(time.perf_counter() - t0)
            cs.append(time.process_time() - c0)
        out[s] = (float(np.median(ts)), float(np.median(cs)))
    return out


def plot(mean:pd.DataFrame, title:str, target=None, ylim=None, highlight=()) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in STRATS:
        m = mean[mean.strategy == s]
        bold = s == 'random' or s in highlight
        ax.plot(m.n_labels, m['mean'], label=s, lw=2.2 if bold else 1, color='k' if s == 'random' else None)
        ax.fill_between(m.n_labels, m['mean'] - m['std'], m['mean'] + m['std'], alpha=.10)
    if target: ax.axhline(target, color='k', ls='--', lw=1, label=f'95% of full pool ({target:.3f})')
    ax.set_xlabel('labels')
    ax.set_ylabel('test accuracy')
    if ylim: ax.set_ylim(*ylim)
    ax.set_title(title, fontsize=10)
    ax.legend(ncol=2, fontsize=8)
    ax.grid(alpha=.3)
    return fig


def at(mean:pd.DataFrame, s:str, n:int) -> float:
    v = mean[(mean.strategy == s) & (mean.n_labels == n)]['mean']
    return float(v.iloc[0]) if len(v) else float('nan')


def fmt_times(t:dict, s:str) -> str: return f"{t[s][0]*1000:.0f} ({t[s][1]*1000:.0f})"


# ---------------------------------------------------------------------------------------------------- digits

def digits_part(seeds, available:bool) -> str:
    ds = digits()
    y = ds.labels
    bb, why = run_backbone(Path('/nonexistent-run'), ds)     # no run: lite0 at the size choose_size gives digits
    spaces = spaces_for(ds, ['pixels', 'backbone'], bb)
    sp0 = budget_split(ds, labels_per_class=SETUP['digits'][0], seed=0)
    loo = compare_spaces(spaces, y, sp0.labeled, HeadScorer(10))   # chosen on the 20 starting labels only
    space = next(iter(loo))
    X = spaces[space]
    print('digits feature spaces (leave-one-out on the start labels):', loo, '->', space, flush=True)
    full = full_pool_accuracy(X, y, np.concatenate([sp0.labeled, sp0.pool]), sp0.test)
    target = TARGET * full
    curves, batch, budget, note = curves_for(f'digits-{space}', ds, X, y, seeds, *SETUP['digits'], available)
    seeds = sorted(curves.seed.unique())
    curves.to_csv(HERE/'curves.csv', index=False)
    mean = mean_curves(curves)
    need = reach(curves, target)
    one = lambda s, k: labels_to_reach(curves[(curves.strategy == s) & (curves.seed == k)], target)
    per_seed = {s: [one(s, k) for k in seeds] for s in STRATS}
    rnd = need['random']
    ratios = {s: need[s] / rnd for s in STRATS if s != 'random' and need[s] == need[s]}
    best = min(ratios, key=ratios.get) if ratios else None
    lo, hi = ratio_interval(curves, best, target) if best else (np.nan, np.nan)
    times = {k: round_times(v, y, 1000, 100, batch) for k, v in spaces.items()}
    plot(mean, f'digits: accuracy vs labels ({space} features, mean ± sd over {len(seeds)} seeds)', target, (0.6, 1),
         [best]).savefig(HERE/'curves.png', dpi=100, bbox_inches='tight')
    rows = [f"| {s} | {need[s]:.0f} | {need[s]/rnd:.2f} | {' '.join(f'{v:.0f}' for v in per_seed[s])} | "
            f"{at(mean, s, 50):.3f} | {at(mean, s, 100):.3f} | {at(mean, s, budget):.3f} | "
            f"{fmt_times(times['pixels'], s)} | {fmt_times(times['backbone'], s)} |" for s in STRATS]
    header = (f"| strategy | labels to 95% | ratio vs random | per seed | acc @50 | acc @100 | acc @{budget} "
              f"| round ms, pixels | round ms, {bb['backbone']} |")
    slow = max(times[space].values())
    losers = ', '.join(f'{s} {r:.2f}×' for s, r in ratios.items() if r > 1) or 'none'
    missing = ', '.join(s for s in STRATS if need[s] != need[s]) or 'none'
    best_ratio = ratios.get(best, float('nan'))
    xb, xr = crossing(mean, best, target), crossing(mean, 'random', target)
    short = target - at(mean, best, int(need[best]) - batch)
    verdict = 'met' if best and best_ratio <= 0.4 else 'missed'
    return f"""## Digits: labels to reach 95% of full-pool accuracy

Setup: built-in digits (1,797 images), fixed test half ({len(sp0.test)} images), start from {SETUP['digits'][0]}
labels per class (a seed-dependent draw), pool of {len(sp0.pool)} items, {note}, {len(seeds)} seeds
({seeds[0]}–{seeds[-1]}), simulated oracle, scorer `HeadScorer` (linear softmax head, input dropout 0.2,
100 full-batch Adam steps).
Feature space chosen on the 20 starting labels of seed 0 (leave-one-out; the space that suits tiny images, pixels,
is kept unless another is clearly better): {', '.join(f'{k} {v:.2f}' for k, v in loo.items())} → **{space}**
(backbone = {bb['backbone']} at {bb['size']} px: {why}).
Full-pool accuracy (all {len(sp0.labeled) + len(sp0.pool)} pool labels): {full:.3f};
target = 95% of it = **{target:.3f}**. "Labels to 95%" is read off the mean curve over seeds (first budget at or above
the target; NaN = not reached by {budget}); per-seed values beside it. Round time = one `step()` (query + oracle +
retrain) with 100 labels and a 1,000-item pool,
median of 3 rounds, wall-clock ms with process CPU ms in brackets, on pixels (64-d) and on the {bb['backbone']} features
(1280-d).

{header}
|---|---|---|---|---|---|---|---|---|
""" + '\n'.join(rows) + f"""

![digits curves](curves.png)

- Target (best strategy ≤ 0.4× the labels random needs): **{verdict}** — best is {best} at {best_ratio:.2f}×
  ({need.get(best, float('nan')):.0f} vs {rnd:.0f} labels); 90% bootstrap interval over seeds {lo:.2f}–{hi:.2f}×.
  Interpolated between rounds the mean curves cross the target at {xb:.1f} and {xr:.1f} labels ({xb / xr:.2f}×); one
  round earlier, at {int(need[best]) - batch} labels, {best}'s mean is {short * 100:.1f} points short of the target.
  Strategies that lose to random (ratio > 1): {losers}; not reaching the target within {budget}: {missing}.
- Slowest round on the {space} features the run uses: {slow[0]*1000:.0f} ms wall, {slow[1]*1000:.0f} ms CPU.
"""


# ---------------------------------------------------------------------------------------------------- photos

def below_random(curves:pd.DataFrame, s:str, z:float=2.) -> tuple:
    "(largest shortfall of `s`'s mean below random's over budgets, at which budget, whether beyond z paired SEs there)."
    a = curves[curves.strategy == s].pivot(index='seed', columns='n_labels', values='accuracy')
    r = curves[curves.strategy == 'random'].pivot(index='seed', columns='n_labels', values='accuracy')
    d = (a - r).dropna(axis=1)
    gap = d.mean()
    n = gap.idxmin()
    se = d[n].std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.inf
    return float(gap[n]), int(n), bool(gap[n] < -z * se)


def photos_space(ds, name:str, bb:dict, seeds, available:bool) -> tuple:
    y = ds.labels
    t0 = time.perf_counter()
    X = backbone_features(ds, **bb)
    feat_s = time.perf_counter() - t0
    sp0 = budget_split(ds, labels_per_class=SETUP['hymenoptera'][0], seed=0)
    full = full_pool_accuracy(X, y, np.concatenate([sp0.labeled, sp0.pool]), sp0.test)
    curves, batch, budget, note = curves_for(f'hymenoptera-{name}', ds, X, y, seeds, *SETUP['hymenoptera'], available)
    curves.to_csv(HERE/f'curves_hymenoptera_{name}.csv', index=False)
    mean = mean_curves(curves)
    n_seeds = curves.seed.nunique()
    plot(mean, f'hymenoptera: accuracy vs labels ({name} features, mean ± sd over {n_seeds} seeds)', None,
         (0.5, 1)).savefig(HERE/f'curves_hymenoptera_{name}.png', dpi=100, bbox_inches='tight')
    times = round_times(X, y, len(sp0.pool), len(sp0.labeled) + 10, batch)
    checks = {s: below_random(curves, s) for s in STRATS if s != 'random'}
    marks = sorted({4, 9, 14, 24, 54, budget} & set(mean.n_labels))
    head = ' | '.join(f'acc @{n}' for n in marks)
    sd = lambda s, n: mean[(mean.strategy == s) & (mean.n_labels == n)]['std'].iloc[0]
    def gap(s):
        if s not in checks: return '—'
        return f"{checks[s][0]*100:+.1f} @{checks[s][1]} {'**yes**' if checks[s][2] else 'no'}"
    rows = [f"| {s} | " + ' | '.join(f"{at(mean, s, n):.3f} ± {sd(s, n):.3f}" for n in marks)
            + f" | {gap(s)} | {fmt_times(times, s)} |" for s in STRATS]
    strict = [s for s, c in checks.items() if c[0] < 0]
    real = [s for s, c in checks.items() if c[2]]
    strict_list = ''.join(f'; {s} {checks[s][0]*100:+.1f} points at {checks[s][1]} labels' for s in strict)
    real_list = ''.join(f'; {s}' for s in real)
    crop = f", centre crop {bb['crop_pct']}" if bb.get('crop_pct') else ''
    return f"""### {name} features ({bb['backbone']} at {bb['size']} px{crop})

Full-pool accuracy (all {len(sp0.labeled) + len(sp0.pool)} train/ labels): {full:.3f}. {note}. Features of the
398 images: {feat_s:.0f} s (0 when cached). Round = one `step()` with {len(sp0.labeled) + 10} labels and the
{len(sp0.pool)}-item pool (median of 3, wall ms with CPU ms in brackets).

| strategy | {head} | worst vs random (points @labels), beyond 2 paired SE? | round ms |
|---|{'---|' * len(marks)}---|---|
""" + '\n'.join(rows) + f"""

![hymenoptera {name} curves](curves_hymenoptera_{name}.png)

- No strategy below random at any budget: strictly (mean below random's mean at some budget):
  **{'met' if not strict else 'missed'}**{strict_list}; beyond the noise (paired over seeds, more than 2 standard
  errors): **{'met' if not real else 'missed'}**{real_list}.
""", strict, real


def photos_part(seeds, available:bool) -> str:
    if not PHOTOS.is_dir(): return f"## Hymenoptera\n\nSkipped: {PHOTOS} not found.\n"
    ds = from_folder(PHOTOS, verbose=False)
    spaces_bb = {'lite0': run_backbone(Path('/nonexistent-run'), ds)[0]}   # what a run without a model uses
    size, *crop, _ = choose_size(ds, 'lite2')
    spaces_bb['lite2'] = dict(backbone='lite2', size=size, **({'crop_pct': crop[0]} if crop and crop[0] else {}))
    sp0 = budget_split(ds, labels_per_class=SETUP['hymenoptera'][0], seed=0)
    X0 = spaces_for(ds, ['pixels', 'backbone'], spaces_bb['lite0'])
    loo = compare_spaces(X0, ds.labels, sp0.labeled, HeadScorer(2))
    parts = [photos_space(ds, k, v, seeds, available) for k, v in spaces_bb.items()]
    return f"""## Hymenoptera (real photos): the curves

Setup: `from_folder(hymenoptera)`: train/ (245: ants 124, bees 121) are the candidates, val/ (153) the test set.
Start from {SETUP['hymenoptera'][0]} labels per class, the rest of train/ is the pool ({len(sp0.pool)}), simulated
oracle, same scorer, {len(seeds)} seeds. Feature space on seed 0's 4 starting labels:
{', '.join(f'{k} {v:.2f}' for k, v in loo.items())} → {next(iter(loo))} (the backbone suits photos and is kept unless
pixels are clearly better). Two backbones: lite0 (what a
run without a model uses) and lite2 (the strongest offline backbone, what a transfer stage on photos is likely to hand
on).
Accuracies are mean ± std over seeds; "worst vs random" is the largest shortfall of the strategy's mean curve below
random's over all budgets.

""" + '\n'.join(p[0] for p in parts)


def main():
    a = argparse.ArgumentParser()
    a.add_argument('--seeds', type=int, default=10)
    a.add_argument('--only', choices=['digits', 'photos'])
    a.add_argument('--available', action='store_true', help='assemble results.md from the cached seeds only')
    args = a.parse_args()
    t0, seeds = time.perf_counter(), range(args.seeds)
    md = {}
    if args.only != 'photos': md['digits'] = digits_part(seeds, args.available)
    if args.only != 'digits': md['photos'] = photos_part(seeds, args.available)
    for k, v in md.items(): (PARTS/f'{k}.md').write_text(v)
    for k in ('digits', 'photos'):
        if k not in md and (PARTS/f'{k}.md').exists(): md[k] = (PARTS/f'{k}.md').read_text()
    head = f"""# Active learning: label budgets on digits and on real photos

`.venv/bin/python bench/active_budget/run.py` (this run {time.perf_counter()-t0:.0f} s; per-seed curves cached in
`$SMALLWB_CACHE/bench/active_budget/`). Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, shared
with other jobs (load average {os.getloadavg()[0]:.1f} at the end), so times are noisy upper bounds; the accuracies
repeat exactly.

"""
    notes = """
## Notes
- Honesty about selection: `weighted_kmeans` (margin prefilter of 10× the batch, then uncertainty-weighted k-means,
  Zhdanov 2019) was added after a first run of this benchmark in which the best strategy was margin at 0.56×; its one
  knob (prefilter 10) is the paper's default. Since then no strategy, scorer or setting was changed after looking at
  these test splits: variants (prefilter 5/20/all, sharper weights, density weighting, TypiClust, cluster-margin,
  heavier regularisation) were tried on a development split of the digits (test_seed=1, seeds 100–104) and none beat
  `weighted_kmeans` there, so none was added. This run uses 10 seeds (the earlier one 5) to narrow the noise.
- "Labels to 95%" of random comes from a noisy crossing: random's mean curve is flat near the target, so every ratio
  carries that noise; the bootstrap interval says how much.
- Hymenoptera, why strategies dip below random (measured in `bench/active_budget/photos_dev.md` by
  `bench/active_budget/photos_dev.py`, on 10 development splits of train/ only; val/ not read): with the default
  `HeadScorer`, random labels already bring the lite0 head within 2-3 points of its full-pool accuracy after ~10
  labels, and margin / weighted_kmeans track random within noise there (mean difference over all budgets +0.1 and
  -0.3 points; worst -1.2 and -2.7); their first picks are not more class-skewed or less typical than random's
  (3.6 vs 3.4 of 5 from one class; typicality percentile 0.46/0.44 vs 0.42). So there is no headroom for a strategy
  to use, and the dips in the tables above are that noise (one val/ photo is 0.65 points), not a systematic loss.
  With a scorer that leaves headroom (scikit-learn LogisticRegression, C=0.5 or 0.01) every strategy is at or
  above random at every budget (+3.2 to +4.7 points on average) - but that scorer is worse in absolute terms with
  few labels (0.69-0.74 at 7 labels vs the HeadScorer's 0.87), so it would not help a user: `HeadScorer` stays.
  The photo target ("no strategy below random at any budget") is therefore missed by noise-sized margins, with
  this cause; on photos, labelling at random costs nothing against the strategies.
- Query-by-committee with KL disagreement tends to lose to random on digits; a likely reason (not verified): heads
  trained on bootstrap samples of 20–100 labels disagree most on outliers. Vote entropy does much better.
"""
    (HERE/'results.md').write_text(head + md.get('digits', '') + '\n' + md.get('photos', '') + notes)
    print((HERE/'results.md').read_text())


if __name__ == '__main__': main()
