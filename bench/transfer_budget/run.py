"""Label-budget benchmark for transfer learning on the built-in digits.

At 5, 10 and 20 labels per class, 3 seeds each, one fixed test set (half of digits): pixel logistic regression,
fastai's default fine-tuning, smallwb's probe, gradual unfreezing and `auto`; accuracy mean ± std and wall time.
Also: a probe epoch on cached features vs an epoch that recomputes the frozen backbone.
Run: .venv/bin/python bench/transfer_budget/run.py [--epochs 6] [--quick]
"""
import argparse, os, platform, tempfile, time, warnings
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)  # the machine is shared; one thread per process wastes less time waiting
warnings.filterwarnings('ignore')
from smallwb.core import FeatureCache, set_seed
from smallwb.data import digits, budget_split
from smallwb.transfer import (Probe, source_features, predict_heads, BACKBONES, auto, create_backbone, features, fine_tune, fit_probe, lite0_package_state_dict, normalize, predict)

HERE = Path(__file__).parent
SIZE, NORM = 32, dict(mean=(0.5,)*3, std=(0.5,)*3)
FT_SIZE = 64  # fine-tuning peers: at 32 px lite0's last stages see 1×1 maps and fine-tuning stalls (see results.md); set by --ft-size

def ft_bs(n): return max(8, min(32, n // 6))  # ≥ 6 optimizer steps per epoch for both fine-tuning peers (bs 32 on 50 items is 1 step/epoch)

def pixel_lr(ds, sp, seed, epochs):
    from sklearn.linear_model import LogisticRegression
    X = ds.arrays[..., 0].reshape(len(ds), -1) / 255.
    return LogisticRegression(max_iter=5000).fit(X[sp.labeled], ds.labels[sp.labeled]).predict(X[sp.test])

def fastai_default(ds, sp, seed, epochs):
    "fastai as documented: DataBlock + aug_transforms(), vision_learner on timm lite0 with the same ImageNet weights, fine_tune."
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, IndexSplitter, Resize, aug_transforms, Normalize,
                                   PILImage, vision_learner, accuracy)
    set_seed(seed)
    lab = list(sp.labeled); items = lab + lab[:10]  # the last 10 (copies of labeled items) are fastai's validation set
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=ds.classes)), get_x=lambda i: PILImage.create(ds.image(i)),
                       get_y=lambda i: ds.classes[ds.labels[i]], splitter=IndexSplitter(range(len(lab), len(items))),
                       item_tfms=Resize(FT_SIZE), batch_tfms=[*aug_transforms(), Normalize.from_stats(*NORM.values())])
    dls = dblock.dataloaders(items, bs=ft_bs(len(lab)), num_workers=0, seed=seed)
    learn = vision_learner(dls, 'tf_efficientnet_lite0', pretrained=False, metrics=accuracy)
    body = learn.model[0].model
    sd = {k: v for k, v in lite0_package_state_dict().items() if not k.startswith('classifier.')}
    body.load_state_dict(sd, strict=True)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(epochs - 1)  # 1 frozen epoch + epochs-1 unfrozen
    preds, _ = learn.get_preds(dl=dls.test_dl(list(sp.test)))
    return preds.argmax(1).numpy()

def predict_cached(model, ds, idxs):
    "A probe's predictions from the cached features of `idxs` (equal to its forward pass: tests/test_transfer.py checks it)."
    if isinstance(model, Probe):
        feats = source_features(ds, idxs, sorted({s for m in model.members for s in m}), size=SIZE, hflip=model.hflip)
        return predict_heads(list(model.heads), feats, model.members).argmax(1)
    with torch.no_grad(): return model.head(torch.tensor(features(ds, idxs, size=SIZE))).argmax(1).numpy()

def smallwb_probe(ds, sp, seed, epochs):
    return predict_cached(fit_probe(ds, sp.labeled, [['pool']], size=SIZE, seed=seed), ds, sp.test)

def smallwb_gradual(ds, sp, seed, epochs):
    learn = fine_tune(ds, sp.labeled, 'gradual', size=FT_SIZE, epochs=epochs, bs=ft_bs(len(sp.labeled)), seed=seed, show_progress=False)
    return predict(learn.model, ds, sp.test, FT_SIZE, **NORM).argmax(1)

CHOSEN = {}
def smallwb_auto(ds, sp, seed, epochs):
    model, best, cv = auto(ds, sp.labeled, size=SIZE, seed=seed)
    CHOSEN.setdefault(len(sp.labeled), []).append(best.name)
    return predict_cached(model, ds, sp.test) if best.kind == 'probe' else predict(model, ds, sp.test, SIZE, **NORM).argmax(1)

METHODS = {'pixel logistic regression (sklearn)': pixel_lr, 'fastai default (fine_tune + aug_transforms)': fastai_default,
           'smallwb probe (cached features)': smallwb_probe, 'smallwb gradual unfreezing': smallwb_gradual, 'smallwb auto': smallwb_auto}

def epoch_speedup(ds, n=200, bs=32, reps=3):
    "Seconds of one head-training epoch on cached features vs one that runs the frozen backbone for every batch."
    idx = np.arange(n); y = torch.as_tensor(ds.labels[idx])
    with tempfile.TemporaryDirectory() as d:
        F = torch.tensor(features(ds, idx, size=SIZE, cache=FeatureCache(d)))
    bb = create_backbone('lite0').eval(); X = normalize(ds.images(idx, SIZE), **NORM)
    def epoch(get):
        head = torch.nn.Linear(F.shape[1], 10); opt = torch.optim.SGD(head.parameters(), 0.1)
        t0 = time.perf_counter()
        for i in range(0, n, bs):
            opt.zero_grad(); torch.nn.functional.cross_entropy(head(get(i)), y[i:i+bs]).backward(); opt.step()
        return time.perf_counter() - t0
    def recompute(i):
        with torch.no_grad(): return bb(X[i:i+bs])
    cached = min(epoch(lambda i: F[i:i+bs]) for _ in range(reps)); full = min(epoch(recompute) for _ in range(reps))
    return cached, full

FINETUNE = ('fastai default (fine_tune + aug_transforms)', 'smallwb gradual unfreezing')

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--epochs', type=int, default=6); ap.add_argument('--quick', action='store_true')
    ap.add_argument('--ft-seeds', type=int, default=3, help='seeds for the two fine-tuning methods (they are the slow ones)')
    ap.add_argument('--ft-size', type=int, default=64, help='input size of the two fine-tuning methods')
    ap.add_argument('--sanity', action='store_true', help='also fine-tune both peers on every non-test digit (1 seed): a pipeline check')
    a = ap.parse_args(); global FT_SIZE; FT_SIZE = a.ft_size; LOAD.append(os.getloadavg()[0])
    budgets, seeds = ((5,), (0,)) if a.quick else ((5, 10, 20), (0, 1, 2))
    ds = digits(); rows = {}; t_all = time.time(); sp = None
    def run(lpc, seed, names):
        sp = budget_split(ds, lpc, seed=seed)  # test_seed fixed: the same test half every time
        if lpc == 87: N_SANITY[:] = [len(sp.labeled)]
        for name in names:
            t0 = time.time(); pred = METHODS[name](ds, sp, seed, a.epochs); dt = time.time() - t0
            rows.setdefault((lpc, name), []).append((float((np.asarray(pred) == ds.labels[sp.test]).mean()), dt))
            print(f'{lpc:3d}/class seed {seed}  {name:45s} {rows[(lpc, name)][-1][0]:.3f}  {dt:6.1f}s', flush=True)
        return len(sp.test)
    # cheap methods over the whole grid first, then the fine-tuning peers, then the epoch speed-up: results.md is rewritten after each step
    for lpc in budgets:
        for seed in seeds:
            n_test = run(lpc, seed, [m for m in METHODS if m not in FINETUNE]); write(rows, budgets, a, None, t_all, n_test)
    for seed in seeds[:a.ft_seeds]:
        for lpc in budgets:
            run(lpc, seed, FINETUNE); write(rows, budgets, a, None, t_all, n_test)
    if a.sanity: run(87, 0, FINETUNE); write(rows, budgets, a, None, t_all, n_test)  # 87/class: every digit outside the test half
    write(rows, budgets, a, epoch_speedup(ds), t_all, n_test)

LOAD, N_SANITY = [], []

def write(rows, budgets, a, speed, t_all, n_test):
    total = time.time() - t_all; load = os.getloadavg()[0]
    mean = lambda lpc, m: np.mean([r[0] for r in rows[(lpc, m)]])
    cmd = (f'.venv/bin/python bench/transfer_budget/run.py --epochs {a.epochs} --ft-seeds {a.ft_seeds} --ft-size {a.ft_size}'
           + (' --sanity' if a.sanity else '') + (' --quick' if a.quick else ''))
    lines = ['# Transfer learning under a label budget (digits)', '', f'Command: `{cmd}` (total {total/60:.1f} min).', '',
             f'Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}, one torch thread; '
             f'1-minute load average {LOAD[0]:.1f} at the start and {load:.1f} now (other jobs share the cores), so wall times are '
             f'only comparable within this table. Pixel, probe and `auto` rows: {SIZE} px. The two fine-tuning peers get the same '
             f'budget: {a.ft_size} px, {a.epochs} epochs (fastai: `fine_tune({a.epochs-1})`, i.e. 1 frozen + {a.epochs-1} unfrozen; '
             f'smallwb gradual: a head phase then one phase per unfrozen group, split evenly), the same lite0 package weights, batch size '
             f'max(8, min(32, n/6)) so every epoch makes at least 6 optimizer steps'
             + (f'; they ran {a.ft_seeds} seed(s) only, for time' if a.ft_seeds < 3 else '') + f'. Same test set for every row: {n_test} images (half of digits).', '',
             '| labels/class | method | accuracy (mean ± std over seeds) | seeds | wall time per run |', '|---|---|---|---|---|']
    for lpc in list(budgets) + ([87] if a.sanity else []):
        for m in METHODS:
            r = np.array(rows.get((lpc, m), []))
            tag = f'{lpc} (all non-test, sanity)' if lpc == 87 else lpc
            if len(r): lines.append(f'| {tag} | {m} | {r[:, 0].mean():.3f} ± {r[:, 0].std():.3f} | {len(r)} | {r[:, 1].mean():.1f} s |')
            elif lpc != 87: lines.append(f'| {tag} | {m} | not run (out of time) | 0 | |')
    lines += ['', 'Recipes `auto` chose (by 5-fold CV on the labeled items): ' +
              '; '.join(f'{n//10}/class: {", ".join(v)}' for n, v in CHOSEN.items()), '']
    if speed:
        cached, full = speed
        lines += [f'Probe epoch on cached features: {cached*1e3:.1f} ms; epoch recomputing the frozen backbone: {full*1e3:.1f} ms '
                  f'(200 items, batch 32, {SIZE} px, best of 3): **{full/cached:.0f}× faster**.', '']
    lines += ['## What the fine-tuning rows mean', '',
              'An earlier version of this table had both fine-tuning peers at chance (0.12–0.30), at 32 px and 4 epochs. What changed: batch size 32 on '
              '50–200 items gave 1–6 optimizer steps per epoch, so 4 epochs were a handful of steps from a random head; 32 px inputs leave '
              "lite0's last stages a 1×1 map (fine-tuning at 32 px stalls well below the probe); and smallwb gradual started from a head "
              'with the feature standardization folded in (first loss ≈ 37, which wrecked the backbone in the first steps; it now starts from '
              'a probe on the raw features, first loss ≈ 4 — train-mode BatchNorm and augmentation keep it above the probe\'s clean 0.3; '
              'keeping BatchNorm on ImageNet\'s running statistics started lower but ended 12–25 points worse in side runs, so it stays '
              'in train mode as in fastai). smallwb gradual\'s head rate is now 1e-2 (3e-3 was too slow for a few dozen steps). Labels (fastai vocab = dataset class order) and normalization (mean = std = 0.5, '
              "lite0's own) were checked and were right. The fastai peer is kept exactly as the issue defines it (`fine_tune` with its default "
              "base_lr 2e-3 and `aug_transforms()`, whose horizontal flips turn some digits into other symbols); in a side check on all 870 "
              "non-test digits at 4 epochs, dropping the flips or raising base_lr to 1e-2 each lifted it by about 8 points, which is "
              "the size of what its defaults cost here. Even so, fastai default stays well below smallwb gradual at every budget and "
              "in the sanity run; the cause of the rest of that gap (its own head with two BatchNorm layers, its lower rate, its "
              "augmentations at 64 px) was not isolated."]
    for m in FINETUNE:
        if (87, m) in rows:
            v = mean(87, m)
            lines.append(f'- Sanity check, {m} on all {N_SANITY[0] if N_SANITY else 870} non-test digits: {v:.3f} ' + ('(≥ 0.95: the pipeline works)' if v >= 0.95 else
                         f'(below the 0.95 a working pipeline should reach with enough epochs: {a.epochs} epochs at {a.ft_size} px are not enough on this budget)'))
    lines += ['- Few labels: fine-tuning all of lite0 on 50–200 upscaled 8×8 glyphs is a poor trade against pixel logistic regression and '
              'the probes at this 8-epoch budget (more epochs were not tried here); `auto` only cross-validates fine-tuning from `FINETUNE_MIN` = 1000 '
              'labeled items, so its rows do not depend on these.', '']
    lines += ['## Targets', '']
    for lpc in budgets:
        peers = [m for m in METHODS if m != 'smallwb auto' and (lpc, m) in rows]
        if (lpc, 'smallwb auto') not in rows: continue
        best = max(peers, key=lambda m: mean(lpc, m)); d = mean(lpc, 'smallwb auto') - mean(lpc, best)
        lines.append(f'- {lpc}/class: auto {mean(lpc, "smallwb auto"):.3f} vs best peer ({best}) {mean(lpc, best):.3f}: '
                     + ('**met**' if d >= 0 else f'**missed** by {-d:.3f}') + ('' if len(peers) == len(METHODS) - 1 else ' (not every peer ran)'))
    if (5, 'smallwb auto') in rows:
        v = mean(5, 'smallwb auto'); lines.append(f'- auto ≥ 0.889 at 5/class: {v:.3f} ' + ('**met**' if v >= 0.889 else f'**missed** by {0.889-v:.3f}'))
    if speed: lines.append(f'- probe epoch speed-up ≥ 20×: {full/cached:.0f}× ' + ('**met**' if full/cached >= 20 else '**missed**'))
    (HERE/'results.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines))

if __name__ == '__main__': main()
