"""Augmentation ablation benchmark.

1. Digits, 10 labels per class, 3 seeds (labeled draw and training seed), one fixed test set (half of digits):
   every augmentation policy with and without MixUp/CutMix, same backbone (Lite0, ImageNet weights), input size, epochs.
2. Throughput: images/second of each augmentation pipeline vs the training step rate (images/second), one thread each.
3. MNIST-1D, 20 labels per class, 3 seeds: a small 1D CNN with each time-series augmentation and all four vs none.
Run: .venv/bin/python bench/augment_ablation/run.py [--epochs 20] [--quick]
"""
import argparse, os, platform, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from smallwb.core import set_seed
from smallwb.data import digits, budget_split
from smallwb.augment import policy, POLICIES
from smallwb.series import SeriesAugment, SERIES_OPS, mnist1d, fit_series
from smallwb.mix import ablate, fit_config, torch_threads

HERE = Path(__file__).parent
SIZE, DOMAIN = 32, 'digits'
MIX = dict(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, label_smoothing=0.1, off_epochs=2)

PARTS = HERE/'parts'  # one CSV per (part, seed, epochs): seeds can run as separate processes (`--seeds 1`) and the full run reuses them

def cached(name, compute):
    "The DataFrame stored under `name`, computing and storing it the first time."
    p = PARTS/f'{name}.csv'
    if p.exists(): return pd.read_csv(p)
    PARTS.mkdir(exist_ok=True); r = compute(); r.to_csv(p, index=False); print(name, '\n', r.to_string(), flush=True)
    return r

def digits_ablation(seeds, epochs):
    ds = digits(); runs = []
    for s in seeds:
        sp = budget_split(ds, 10, seed=s)
        runs.append(cached(f'digits_seed{s}_e{epochs}', lambda: ablate(ds, sp.labeled, {'test': sp.test}, POLICIES, MIX, seeds=(s,), progress=False, size=SIZE, epochs=epochs, domain=DOMAIN)))
    runs = pd.concat(runs)
    t = runs.groupby(['policy', 'mix'], sort=False)['test'].agg(['mean', 'std']).reset_index()
    t['gain'] = t['mean'] - t.loc[(t.policy == 'none') & ~t.mix, 'mean'].item()
    return runs, t

def throughput(epochs=3, n_ims=2000):
    "CPU-time rates on one thread: augmentation images/s per policy; training images/s (forward+backward, bs 16)."
    ds = digits(); sp = budget_split(ds, 10, seed=0)
    ims = ds.images(np.arange(len(ds))[:n_ims], SIZE)
    rates = {}
    with torch_threads(1):
        for p in POLICIES[1:]:
            aug = policy(p, domain=DOMAIN, size=SIZE, seed=0)
            t = time.process_time()
            for im in ims: aug(im)
            rates[p] = len(ims) / (time.process_time() - t)
        cost = {}
        for e in (1, 1 + epochs):  # the difference removes setup (model, data) from the training time
            t = time.process_time(); fit_config(ds, sp.labeled, None, 'none', None, size=SIZE, epochs=e, domain=DOMAIN); cost[e] = time.process_time() - t
    train_rate = epochs * (len(sp.labeled) // 16 * 16) / (cost[1 + epochs] - cost[1])
    return rates, train_rate

def series_ablation(seeds, epochs):
    x, y = mnist1d(4000)
    te = np.arange(3000, 4000)
    configs = {'none': None, **{o: [o] for o in SERIES_OPS}, 'all four': list(SERIES_OPS)}
    rows = []
    def one_seed(s):
        rng = np.random.default_rng(s); rows = []
        tr = np.concatenate([rng.choice(np.flatnonzero(y[:3000] == c), 20, replace=False) for c in range(10)])
        with torch_threads(1):
            for name, ops in configs.items():
                acc = fit_series(x[tr], y[tr], x[te], y[te], SeriesAugment(ops, p=0.5, seed=s) if ops else None, epochs=epochs, seed=s)
                rows.append(dict(augmentation=name, seed=s, test=acc))
        return pd.DataFrame(rows)
    r = pd.concat([cached(f'series_seed{s}_e{epochs}', lambda: one_seed(s)) for s in seeds])
    t = r.groupby('augmentation', sort=False)['test'].agg(['mean', 'std']).reset_index()
    t['gain'] = t['mean'] - t.loc[t.augmentation == 'none', 'mean'].item()
    return r, t

def md_table(df, cols):
    def fmt(c, v):
        if not isinstance(v, float): return str(v)
        if v != v: return '–'
        if c == 'vs none': return f'{v*100:+.1f} pts'
        return f'{v:.1f}' if 'images/s' in c else f'{v:.3f}'
    return '\n'.join(['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)] + ['| ' + ' | '.join(fmt(c, v) for c, v in zip(cols, row)) + ' |' for row in df[cols].itertuples(index=False)])

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--epochs', type=int, default=20); ap.add_argument('--series_epochs', type=int, default=60)
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--available', action='store_true', help='write results.md from the digits seeds already cached (computes nothing)')
    ap.add_argument('--other_only', action='store_true', help='only compute (and cache) the MNIST-1D ablation and the throughput, then stop')
    ap.add_argument('--seeds', type=int, nargs='*', help='only compute (and cache) the digits ablation for these seeds, then stop')
    a = ap.parse_args()
    seeds = (0,) if a.quick else (0, 1, 2)
    epochs, s_epochs = (2, 5) if a.quick else (a.epochs, a.series_epochs)
    if a.seeds: digits_ablation(a.seeds, epochs); return
    if a.available:  # assemble from the cached parts only (e.g. while other seeds are still running)
        have = lambda part, s, e: (PARTS/f'{part}_seed{s}_e{e}.csv').exists()
        seeds = tuple(s for s in seeds if have('digits', s, epochs))
        if not seeds or not all(have('series', s, s_epochs) for s in (0, 1, 2)) or not (PARTS/'throughput.csv').exists():
            raise SystemExit(f'--available: nothing to assemble yet (cached: {sorted(p.name for p in PARTS.glob("*.csv"))})')
    if a.other_only: series_ablation(seeds, s_epochs); main_tp = cached('throughput', lambda: pd.DataFrame([dict(policy=p, rate=r) for p, r in (lambda rt: {**rt[0], 'training': rt[1]})(throughput()).items()])); return
    t0 = time.time()
    runs, t = digits_ablation(seeds, epochs)
    tp = cached('throughput', lambda: pd.DataFrame([dict(policy=p, rate=r) for p, r in (lambda rt: {**rt[0], 'training': rt[1]})(throughput()).items()]))
    rates = {p: r for p, r in zip(tp.policy, tp.rate) if p != 'training'}; train_rate = float(tp.rate[tp.policy == 'training'].item())
    sruns, st = series_ablation((0, 1, 2) if a.available else seeds, s_epochs)
    wall = time.time() - t0
    runs.to_csv(HERE/'digits_runs.csv', index=False); sruns.to_csv(HERE/'series_runs.csv', index=False)
    load = os.getloadavg()[0]

    t['config'] = [f'{p}{" + MixUp/CutMix" if m else ""}' for p, m in zip(t.policy, t.mix)]
    t = t.rename(columns={'mean': 'test accuracy (mean)', 'std': 'std', 'gain': 'vs none'})
    best = t.iloc[t['test accuracy (mean)'].values.argmax()]
    gain = float(best['vs none'])
    fixed = t[(t.policy == 'moderate') & ~t.mix].iloc[0]
    tp = pd.DataFrame([dict(policy=p, **{'augment images/s': r, 'ratio to training images/s': r / train_rate}) for p, r in rates.items()])
    worst_ratio = float(tp['ratio to training images/s'].min())
    st = st.rename(columns={'mean': 'test accuracy (mean)', 'std': 'std', 'gain': 'vs none'})
    sbest = st.iloc[st['test accuracy (mean)'].values.argmax()]
    cmd = '.venv/bin/python bench/augment_ablation/run.py' + (' --quick' if a.quick else '') + (' --available' if a.available else '')
    out = [f'## augment_ablation: augmentation policies, MixUp/CutMix, time-series augmentation', '',
           f'Command: `{cmd}` ({wall/60:.1f} min wall for what was not cached; digits seeds can be computed in parallel first with `--seeds 1` and `--seeds 2`, cached in `bench/augment_ablation/parts/`). Machine: {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}, torch {torch.__version__}; '
           f'shared with other jobs while it ran (load average {load:.1f} at the end), so wall times are noisy; rates below are CPU-time based, one thread.', '',
           f'### Digits, 10 labels per class, {len(seeds)} seeds' + (f' (of 3: seeds {list(seeds)} were done when this was written; rerun without --available for all three)' if a.available and len(seeds) < 3 else ''), '',
           f'Lite0 with ImageNet weights, {SIZE}px, fine-tuned end to end for {epochs} epochs (one-cycle, lr 3e-3, bs 16), digits domain switches (no flips, rotation ≤ 15°·magnitude). '
           f'Each seed draws its own 100 labeled images and trains with that seed; test set: the fixed half of digits ({len(budget_split(digits(), 10).test)} images). '
           f'MixUp/CutMix: {MIX}.', '',
           md_table(t, ['config', 'test accuracy (mean)', 'std', 'vs none']), '',
           f'### Augmentation throughput vs training', '',
           f'Training (forward + backward, bs 16, {SIZE}px): {train_rate:.0f} images/s.', '',
           md_table(tp, ['policy', 'augment images/s', 'ratio to training images/s']), '',
           f'### MNIST-1D, 20 labels per class, {len(sruns.seed.unique())} seeds', '',
           f'A 3-block 1D CNN (32 channels), {s_epochs} epochs one-cycle, lr 3e-3, bs 32; each op applied with p=0.5; test: 1,000 series generated offline by `mnist1d`.', '',
           md_table(st, ['augmentation', 'test accuracy (mean)', 'std', 'vs none']), '',
           '### Targets', '',
           f'- Best configuration ≥ +3 points over no augmentation (digits): **{"met" if gain >= 0.03 else "missed"}** — best is {best["config"]} at {best["test accuracy (mean)"]:.3f}, '
           f'{gain*100:+.1f} points over none. Caveat: picking the best of {len(t)} configurations on the test set is optimistic by construction; '
           f'the a-priori choice `moderate` (no mixing) gives {float(fixed["vs none"])*100:+.1f} points. The experiment (`experiments/02_augment.ipynb`) picks on a validation split instead.'
           + ('' if gain >= 0.03 else ' What would close it: more epochs (augmented runs fit slower than clean ones at this budget), or a larger input size.'),
           f'- Augmentation pipeline ≥ 5× the training step rate: **{"met" if worst_ratio >= 5 else "missed"}** — the slowest policy runs at {worst_ratio:.0f}× the training rate.',
           f'- MNIST-1D: best is {sbest["augmentation"]} at {sbest["test accuracy (mean)"]:.3f} ({float(sbest["vs none"])*100:+.1f} points over none).', '']
    (HERE/'results.md').write_text('\n'.join(out), encoding='utf-8')
    print('\n'.join(out))

if __name__ == '__main__': main()
