"""Synthetic-data benchmark: real only vs + simulated vs + generated, for the probe the run hands on.

Photos (shared/data/hymenoptera): train/ (245 photos; 5 or 10 labelled per class, the rest is the unlabeled pool that
supplies composite backgrounds and the base classes of distribution calibration) and val/ (153 photos, the test set).
The probe: a linear head on frozen Lite2 features at 260 px with timm's crop (what `transfer.auto` hands on for photos).
Simulated: composites of each labeled photo's object (GrabCut seeded by the ImageNet class activation map) on randomized
backgrounds (`synth.composite_views`). Generated: distribution calibration in the feature space (`synth.calibration_rows`).
Digits: the probe `transfer.auto` picks on Lite2 at 32 px (probe recipes), the renderer and the conditional VAE, and
distribution calibration as a second generator.
Every variant is the same probe refitted on the labeled items + the source's rows; test accuracy on the fixed test set.
The stage's own decision (5-fold CV on the labeled items, paired gain > 2 SE, `synth.hand_on`) is recorded per seed.
Mask quality: pasted objects re-found (IoU) and the probe's accuracy on pool cut-outs on grey vs on the full photos.
Stage time: experiments/04_synth.ipynb run by papermill into a run folder that holds a transfer-stage probe, with a fresh
feature cache that holds only what earlier stages compute (features of the labeled, pool and test photos).

Run: .venv/bin/python bench/synth/run.py [--seeds 0 1 2] [--parts photos digits masks timing] (per-part results cached
in runs/bench_synth/parts, so a killed run resumes; --fresh recomputes).
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time, warnings
from pathlib import Path
import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helpers
from _parts import cached_part
import numpy as np, pandas as pd
warnings.filterwarnings('ignore')
from smallwb.core import FeatureCache
from smallwb.data import digits, from_folder, budget_split
from smallwb.transfer import (Recipe, BACKBONES, auto, candidates, features, fit_probe, save_model, weights_id, input_key,
                              valid_score)
from smallwb.synth import (ProbeSpec, BACKGROUNDS, make_sources, composite_views, view_rows, calibration_rows, image_rows,
                           rendered, score_sources, compare_sources, hand_on, fit_with, mask_check, object_masks, mask_stats)

HERE, WORK = Path(__file__).parent, Path('runs/bench_synth')
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
LITE2 = dict(backbone='lite2', size=260, crop_pct=BACKBONES['lite2'].crop_pct)
RATIOS = (1, 2, 4)  # synthetic rows per labeled item on the test rows
STAGE_RATIO = 2  # the stage's default ratio: the one its cross-validated decision is recorded for


def part(name, fn, fresh=False):
    "A cached piece of the benchmark (`bench/_parts.py`): computed once, then read back (a killed run resumes here)."
    return cached_part(WORK, name, fn, fresh)


def test_rows(ds, sp, spec, srcs):
    "Test accuracy of real only and of every source: the probe refitted on the labeled items + the source's rows."
    ft, yt = spec.feats(ds, sp.test), ds.labels[sp.test]
    acc = lambda src: float((spec.probs(fit_with(ds, sp.labeled, spec, src), ft).argmax(1) == yt).mean())
    return {'real only': acc(None), **{n: acc(s) for n, s in srcs.items()}}


def decision(ds, sp, spec, srcs, seed):
    "The stage's cross-validated verdict at its default ratio: per source CV accuracy, paired gain ± SE, what it hands on."
    at = {n: s for n, s in srcs.items() if n in (f'simulated ×{STAGE_RATIO}', f'generated ×{STAGE_RATIO}')}  # the defaults
    t = compare_sources(score_sources(ds, sp, spec, at, 5, seed))
    best, why = hand_on(t, None)
    return dict(cv={r.recipe: [r.cv_accuracy, r.gain, r.gain_se] for r in t.itertuples()}, handed=best, why=why)


ALL_BG = f'simulated ×{STAGE_RATIO}, all backgrounds, unfiltered'  # domain randomization without the defaults' guards


def photos_part(ds, lpc, seed):
    sp = budget_split(ds, lpc, seed=seed)
    spec = ProbeSpec(Recipe('probe'), **LITE2)
    srcs, notes, info = make_sources(ds, sp, spec, ratios=RATIOS, seed=seed)
    views, usable, _ = composite_views(ds, sp.labeled, sp.pool, 'lite2', 260, LITE2['crop_pct'], STAGE_RATIO, seed,
                                       backgrounds=tuple(BACKGROUNDS))
    srcs[ALL_BG] = view_rows(spec, ds, views, usable)
    st = info['mask_stats']
    kept = {n: len(s(sp.labeled)[1]) for n, s in srcs.items()}
    return dict(test=test_rows(ds, sp, spec, srcs), **decision(ds, sp, spec, srcs, seed), notes=notes, kept=kept,
                masks=dict(n=st['n'], unusable=st['unusable'], mean_area=st['mean_area']))


def digits_part(ds, lpc, seed):
    sp = budget_split(ds, lpc, seed=seed)
    _, recipe, _ = auto(ds, sp.labeled, 'lite2', 32, recipes=candidates('lite2', len(sp.labeled), finetune=False), seed=seed)
    spec = ProbeSpec(recipe, 'lite2', 32)
    srcs, _, _ = make_sources(ds, sp, spec, ratios=RATIOS, seed=seed)
    srcs[f'simulated ×{STAGE_RATIO}, unfiltered'] = image_rows(spec, ds, rendered(ds, STAGE_RATIO, seed))
    srcs[f'calibration ×{STAGE_RATIO}'] = calibration_rows(spec, ds, sp.pool, STAGE_RATIO, seed)
    return dict(recipe=recipe.name, test=test_rows(ds, sp, spec, srcs), **decision(ds, sp, spec, srcs, seed))


def masks_part(ds, seed=0, n_pool=60):
    "Mask quality: re-finding pasted objects (IoU), and the probe on pool cut-outs on grey vs the full pool photos."
    sp = budget_split(ds, 10, seed=seed)
    spec = ProbeSpec(Recipe('probe'), **LITE2)
    prep = lambda ii: ds.images(ii, LITE2['size'], LITE2['crop_pct'])
    lm = object_masks(ds, sp.labeled, 'lite2', LITE2['size'], LITE2['crop_pct'])
    ok = mask_stats(lm)['usable']
    iou = mask_check(prep(sp.labeled[ok]), lm[ok], prep(sp.pool[:24]), 'lite2', seed=seed)
    pool = np.random.default_rng(seed).permutation(sp.pool)[:n_pool]
    pm = object_masks(ds, pool, 'lite2', LITE2['size'], LITE2['crop_pct'])
    import cv2
    mk = {int(i): cv2.resize(m, (LITE2['size'],) * 2) > 0.5 for i, m in zip(pool, pm)}
    grey = lambda i, im: np.where(mk[i][..., None], im, 128).astype(np.uint8)
    heads = fit_with(ds, sp.labeled, spec)
    right = lambda f: (spec.probs(heads, f).argmax(1) == ds.labels[pool])
    full, cut = right(spec.feats(ds, pool)), right(spec.feats(ds, pool, grey, 'cutout-on-grey:v1'))
    return dict(iou=iou.tolist(), pool_full=float(full.mean()), pool_cutout=float(cut.mean()), n_pool=len(pool),
                pool_stats={k: v for k, v in mask_stats(pm).items() if k != 'usable'})


def timing_part(ds, lpc=10, seed=0):
    "The synth stage as the chain runs it: a run folder with a transfer probe, a cache holding only the earlier stages' features."
    run, cache_root = Path(tempfile.mkdtemp(prefix='bench-synth-run-')), Path(tempfile.mkdtemp(prefix='bench-synth-cache-'))
    sp = budget_split(ds, lpc, seed=seed)
    key = f"{weights_id('lite2', True)}|{input_key(260, LITE2['crop_pct'])}|hflip=False"  # `transfer.features`' key
    F = features(ds, None, **LITE2)  # the labeled, pool and test features the earlier stages leave in the cache
    FeatureCache(cache_root/'features').get(key, ds.hashes, lambda pos: F[pos])
    m = fit_probe(ds, sp.labeled, seed=seed, **LITE2)
    save_model(run/'transfer'/'model.pth', m, m.arch, ds.classes, 260, (0.5,)*3, (0.5,)*3, LITE2['crop_pct'],
               recipe=dict(name='probe', C=0.5))
    va, on = valid_score(ds, sp, Recipe('probe'), seed=seed, **LITE2)
    (run/'transfer'/'metrics.json').write_text(json.dumps(dict(stage='transfer', model='model.pth', valid_accuracy=va, valid_on=on)))
    env = {**os.environ, 'SMALLWB_CACHE': str(cache_root)}
    t0 = time.time()
    subprocess.run([sys.executable, '-m', 'papermill', '-k', 'smallwb', 'experiments/04_synth.ipynb', str(run/'synth.ipynb'),
                    '-p', 'data', str(PHOTOS), '-p', 'labels_per_class', str(lpc), '-p', 'seed', str(seed),
                    '-p', 'out_dir', str(run)], check=True, env=env, capture_output=True)
    wall = time.time() - t0
    met = json.loads((run/'synth'/'metrics.json').read_text())
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(cache_root, ignore_errors=True)
    return dict(wall_seconds=wall, stage_seconds=met['stage_seconds'], synth_seconds=met['synth_seconds'],
                handed_on=met['handed_on'], load=os.getloadavg()[0])


def ms(v): return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"


def table(parts, lpcs, label):
    "Rows per budget and variant: test accuracy, paired gain over real only, and the stage's cross-validated decision."
    lines = [f'| labels/class | training data | test accuracy (mean ± std, {label}) | gain over real only, points (mean; min..max) '
             f'| stage verdict ×{STAGE_RATIO} (CV gain ± SE, points, per seed) |', '|---|---|---|---|---|']
    for lpc in lpcs:
        ps = parts[lpc]
        for name in ps[0]['test']:
            acc = [p['test'][name] for p in ps]
            gain = [100 * (p['test'][name] - p['test']['real only']) for p in ps]
            cv = [p['cv'].get(name) for p in ps]
            cvs = '; '.join(f"{100 * c[1]:+.0f} ± {100 * c[2]:.0f}" for c in cv if c) if name != 'real only' else ''
            g = '–' if name == 'real only' else f"{np.mean(gain):+.1f} ({min(gain):+.1f}..{max(gain):+.1f})"
            lines.append(f"| {lpc} | {name} | {ms(acc)} | {g} | {cvs} |")
    return lines


def plain(parts, lpcs, names):
    "One sentence per default source and budget: helped (mean gain ≥ +1 point and a gain in every seed), hurt, or neither."
    out = []
    for lpc in lpcs:
        for n in names:
            g = [100 * (p['test'][n] - p['test']['real only']) for p in parts[lpc]]
            word = ('helped' if np.mean(g) >= 1 and min(g) > 0 else 'hurt' if np.mean(g) <= -1 and max(g) < 0
                    else 'made no clear difference')
            out.append(f"- {lpc} labels/class, {n}: {word} ({np.mean(g):+.1f} points on the test set, {min(g):+.1f} to "
                       f"{max(g):+.1f} over {len(g)} seeds).")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--parts', nargs='+', default=['photos', 'digits', 'masks', 'timing'])
    ap.add_argument('--fresh', action='store_true')
    args = ap.parse_args()
    t0, lines = time.time(), []
    cmd = f"`.venv/bin/python bench/synth/run.py --seeds {' '.join(map(str, args.seeds))}`"
    lines += ['## Synthetic data: real only vs + simulated vs + generated', '',
              f"Command: {cmd}. Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, shared with other jobs "
              f"(load average {os.getloadavg()[0]:.0f} at the start of the report). Every variant is the run's probe refitted on "
              'the labeled items plus the source\'s rows; test accuracy is on the fixed test set, touched once per variant to '
              f'report. "Stage verdict" is what the synth stage decides on its own: 5-fold cross-validation on the labeled items '
              f'at its default ratio ({STAGE_RATIO} synthetic rows per labeled item), a source handed on only when its paired '
              'gain exceeds 2 standard errors.', '']
    if 'photos' in args.parts and PHOTOS.is_dir():
        ds = from_folder(PHOTOS, verbose=False)
        ph = {lpc: [part(f'photos_v2_{lpc}_{s}', lambda: photos_part(ds, lpc, s), args.fresh) for s in args.seeds] for lpc in (5, 10)}
        handed = [p['handed'] for ps in ph.values() for p in ps]
        lines += ['### Photos (hymenoptera: train/ labeled and pool, val/ the 153-photo test set)', '',
                  'The probe: a linear head on frozen Lite2 at 260 px (crop 0.89). Simulated ×r: r composites per labeled '
                  'photo. Generated ×r: r features per labeled photo sampled by distribution calibration (k = 2 nearest of 8 '
                  'k-means clusters of the pool, α = 0.2).', ''] + table(ph, (5, 10), f'{len(args.seeds)} seeds')
        lines += ['', 'Verdict at the stage\'s defaults ("helped" needs a mean gain of at least +1 point and a gain in every '
                  'seed; "hurt" the mirror image):'] + plain(ph, (5, 10), [f'simulated ×{STAGE_RATIO}', f'generated ×{STAGE_RATIO}'])
        lines += ['', f"The stage handed on a synthetic model in {sum(h is not None for h in handed)} of {len(handed)} runs"
                  + (f" ({', '.join(sorted(set(h for h in handed if h)))})" if any(handed) else '') + '.', '']
    if 'masks' in args.parts and PHOTOS.is_dir():
        mq = part('masks', lambda: masks_part(from_folder(PHOTOS, verbose=False)), args.fresh)
        iou = np.array(mq['iou'])
        lines += ['### Mask quality (photos)', '',
                  f"- Pasted objects re-found by the same method (GrabCut seeded by the Lite2 ImageNet class activation map) on "
                  f"the corners of other photos: IoU median {np.median(iou):.2f}, mean {iou.mean():.2f}, "
                  f"{(iou > 0.5).mean():.0%} above 0.5 ({len(iou)} objects of the 20 labeled photos, seed 0).",
                  f"- The real-only probe (10 labels/class, seed 0) on {mq['n_pool']} pool photos: {mq['pool_full']:.3f} on the full "
                  f"photos, {mq['pool_cutout']:.3f} on their cut-outs on grey (masks covering {mq['pool_stats']['mean_area']:.2f} "
                  f"of the photo on average, {mq['pool_stats']['unusable']} unusable): the cut-outs keep most of what the "
                  "probe recognises, but not all of it.", '']
    if 'digits' in args.parts:
        ds = digits()
        dg = {lpc: [part(f'digits_v2_{lpc}_{s}', lambda: digits_part(ds, lpc, s), args.fresh) for s in args.seeds] for lpc in (5, 10)}
        rec = ', '.join(p['recipe'] for ps in dg.values() for p in ps)
        handed = [p['handed'] for ps in dg.values() for p in ps]
        lines += ['### Digits (the fixed half of digits as the test set, 896 images)', '',
                  f'The probe `transfer.auto` chose on Lite2 at 32 px (per budget and seed: {rec}). Simulated: rendered digits; '
                  'generated: the conditional VAE (the digits default); calibration: distribution calibration on the pool.', '']
        lines += table(dg, (5, 10), f'{len(args.seeds)} seeds')
        lines += ['', 'Verdict at the stage\'s defaults:'] + plain(dg, (5, 10), [f'simulated ×{STAGE_RATIO}', f'generated ×{STAGE_RATIO}'])
        lines += ['', f"The stage handed on a synthetic model in {sum(h is not None for h in handed)} of {len(handed)} runs"
                  + (f" ({', '.join(sorted(set(h for h in handed if h)))})" if any(handed) else '') + '.', '']
    if 'timing' in args.parts and PHOTOS.is_dir():
        tm = part('timing', lambda: timing_part(from_folder(PHOTOS, verbose=False)), args.fresh)
        lines += ['### Time (photos, 10 labels/class, default parameters)', '',
                  f"The synth stage in a run folder holding a transfer probe, first run (masks and composites not cached; the "
                  f"labeled, pool and test features cached, as the earlier stages leave them): {tm['stage_seconds']:.0f} s in the "
                  f"stage ({tm['synth_seconds']:.0f} s building and scoring the sources), {tm['wall_seconds']:.0f} s with "
                  f"papermill's kernel start; load average {tm['load']:.0f} at the end. It handed on: {tm['handed_on']}.", '']
    spent = sum(json.loads(f.read_text()).get('seconds', 0) for f in (WORK/'parts').glob('*.json'))
    lines += [f'Compute time of the parts, as each recorded it when it ran: {spent / 60:.1f} min in all.']
    (HERE/'results.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print('\n'.join(lines))


if __name__ == '__main__': main()
