"""Transfer learning on real photos (and on digits) under a label budget: smallwb against the peers a user would try.

For each labels-per-class budget (5, 10, 20, all) and seed (0, 1, 2), on one fixed test set — `val/` of a
`train/` + `val/` photo folder (the PyTorch tutorial's layout), or the fixed half of digits:

- pixel logistic regression (scikit-learn, 32 px);
- scikit-learn `LogisticRegression(C=0.5)` on lite0 (224 px) and lite2 (260 px) pooled features, each image resized
  whole to the model's native size (the anchors of `../shared/data/README.md`);
- fastai as documented: `vision_learner` on the same lite0 weights at 224 px, `fine_tune` with its defaults
  (`aug_transforms`, base_lr 2e-3, one frozen epoch);
- smallwb `probe` (`fit_probe` at the input `choose_size` picks), `gradual` unfreezing (starting from that probe,
  keeping its best validation epoch) and `auto`.

Accuracy mean ± std over seeds and wall time per run. Each run's result is kept in `runs-<data>.csv`, so a killed
benchmark resumes where it stopped; `results.md` is rewritten after every run.

    .venv/bin/python bench/photos/run.py --data ../shared/data/hymenoptera
    .venv/bin/python bench/photos/run.py --data digits
"""
import argparse, os, platform, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from smallwb.core import set_seed
from smallwb.data import get_dataset, budget_split
from smallwb.transfer import (Probe, source_features, predict_heads, BACKBONES, auto, choose_size, features, fine_tune, fit_probe, package_state_dict, predict, stage_depths,
                              create_backbone, Recipe, valid_score)

HERE = Path(__file__).parent
BUDGETS, SEEDS = (5, 10, 20, None), (0, 1, 2)
EPOCHS = 8  # both fine-tuning peers: fastai fine_tune(7) = 1 frozen + 7 unfrozen; smallwb gradual: a head phase + 3 groups

def name_of(data): return Path(data).name if data != 'digits' else 'digits'
def ft_bs(n): return max(8, min(32, n // 6))  # at least 6 optimizer steps an epoch for both fine-tuning peers

def pixel_lr(ds, sp, seed, ctx):
    from sklearn.linear_model import LogisticRegression
    X = lambda ii: ds.images(ii, 32).reshape(len(ii), -1) / 255.
    return LogisticRegression(max_iter=5000).fit(X(sp.labeled), ds.labels[sp.labeled]).predict(X(sp.test))

def sk_probe(backbone):
    def f(ds, sp, seed, ctx):
        from sklearn.linear_model import LogisticRegression
        s = BACKBONES[backbone].size if ctx['photo'] else 32
        F = lambda ii: features(ds, ii, backbone, s)  # the whole image resized to the native size, as in the data README
        return LogisticRegression(C=0.5, max_iter=5000).fit(F(sp.labeled), ds.labels[sp.labeled]).predict(F(sp.test))
    return f

def sk_same_features(ds, sp, seed, ctx):
    "scikit-learn on exactly the cached features smallwb's probe trains on (lite2, the input choose_size picks)."
    from sklearn.linear_model import LogisticRegression
    F = lambda ii: features(ds, ii, ctx['backbone'], ctx['size'], crop_pct=ctx['crop'])
    return LogisticRegression(C=0.5, max_iter=5000).fit(F(sp.labeled), ds.labels[sp.labeled]).predict(F(sp.test))

def fastai_default(ds, sp, seed, ctx):
    "fastai as documented: DataBlock + aug_transforms(), vision_learner on timm lite0 with the same ImageNet weights, fine_tune."
    from fastai.vision.all import (DataBlock, ImageBlock, CategoryBlock, IndexSplitter, Resize, aug_transforms, Normalize,
                                   PILImage, vision_learner, accuracy)
    set_seed(seed)
    size = 224 if ctx['photo'] else 64
    lab, test = list(sp.labeled), list(sp.test)
    items = lab + lab[:10]  # fastai reports on a validation set after each epoch and chooses nothing from it: 10 copies of labeled items
                            # keep that report cheap without taking labels away from training
    dblock = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=ds.classes)), get_x=lambda i: PILImage.create(ds.image(i)),
                       get_y=lambda i: ds.classes[ds.labels[i]], splitter=IndexSplitter(range(len(lab), len(items))),
                       item_tfms=Resize(size), batch_tfms=[*aug_transforms(), Normalize.from_stats((0.5,)*3, (0.5,)*3)])
    dls = dblock.dataloaders(items, bs=ft_bs(len(lab)), num_workers=0, seed=seed)
    learn = vision_learner(dls, 'tf_efficientnet_lite0', pretrained=False, metrics=accuracy)
    body = learn.model[0].model
    sd = package_state_dict('tf_efficientnet_lite0', stage_depths(body))
    body.load_state_dict({k: v for k, v in sd.items() if not k.startswith('classifier.')}, strict=True)
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(EPOCHS - 1)
    preds, _ = learn.get_preds(dl=dls.test_dl(test))
    return preds.argmax(1).numpy()

def predict_cached(model, ds, idxs, ctx):
    "A frozen-backbone probe's predictions from the cached features of `idxs` (what its forward pass computes; the tests check it)."
    if isinstance(model, Probe):
        srcs = sorted({s for m in model.members for s in m})
        f = source_features(ds, idxs, srcs, ctx['backbone'], ctx['size'], True, model.hflip, crop_pct=ctx['crop'])
        return predict_heads(list(model.heads), f, model.members).argmax(1)
    with torch.no_grad(): return model.head.eval()(torch.tensor(features(ds, idxs, ctx['backbone'], ctx['size'], crop_pct=ctx['crop']))).argmax(1).numpy()

def smallwb_probe(ds, sp, seed, ctx):
    m = fit_probe(ds, sp.labeled, [['pool']], ctx['backbone'], ctx['size'], seed=seed, crop_pct=ctx['crop'])
    return predict_cached(m, ds, sp.test, ctx)

def smallwb_gradual(bn):
    def f(ds, sp, seed, ctx):
        size = ctx['size'] if ctx['photo'] else 64
        learn = fine_tune(ds, sp.labeled, 'gradual', ctx['backbone'], size, EPOCHS, bs=ft_bs(len(sp.labeled)), seed=seed,
                          show_progress=False, crop_pct=ctx['crop'], bn=bn)
        ctx['report'] = learn.report
        return predict(learn.model, ds, sp.test, size, (0.5,)*3, (0.5,)*3, crop_pct=ctx['crop']).argmax(1)
    return f

def smallwb_auto(ds, sp, seed, ctx):
    model, best, cv = auto(ds, sp.labeled, ctx['backbone'], ctx['size'], crop_pct=ctx['crop'], seed=seed)
    ctx['recipe'] = best.name
    if best.kind == 'probe': return predict_cached(model, ds, sp.test, ctx)
    return predict(model, ds, sp.test, ctx['size'], (0.5,)*3, (0.5,)*3, crop_pct=ctx['crop']).argmax(1)

METHODS = {
    'pixel logistic regression (sklearn, 32 px)': pixel_lr,
    'sklearn LogisticRegression(C=0.5) on lite0 features (native size, whole image)': sk_probe('lite0'),
    'sklearn LogisticRegression(C=0.5) on lite2 features (native size, whole image)': sk_probe('lite2'),
    'sklearn LogisticRegression(C=0.5) on the features smallwb probe uses': sk_same_features,
    'smallwb probe': smallwb_probe,
    'smallwb auto': smallwb_auto,
    'fastai vision_learner + fine_tune (defaults, lite0)': fastai_default,
    'smallwb gradual (BatchNorm train, fastai default)': smallwb_gradual('train'),
    'smallwb gradual (BatchNorm frozen, BnFreeze)': smallwb_gradual('frozen'),
}
SLOW = [m for m in METHODS if 'fine_tune' in m or 'gradual' in m]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', default='../shared/data/hymenoptera'); ap.add_argument('--backbone', default='lite2')
    ap.add_argument('--methods', default='', help='comma-separated substrings: only the methods that match')
    a = ap.parse_args()
    torch.set_num_threads(1)  # the cores are shared: one thread per process wastes less time waiting
    ds = get_dataset(a.data, verbose=False); name = name_of(a.data)
    size, crop, why = choose_size(ds, a.backbone)
    ctx0 = dict(backbone=a.backbone, size=size, crop=crop, photo=crop is not None)
    out = HERE/f'runs-{name}.csv'
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=['budget', 'seed', 'method', 'accuracy', 'seconds', 'note'])
    methods = [m for m in METHODS if not a.methods or any(s in m for s in a.methods.split(','))]
    fast = [(m, b, s) for b in BUDGETS for s in SEEDS for m in methods if m not in SLOW]
    # fine-tuning is slow on 2 cores: every budget of seed 0 first, then the next seed, so a stopped run has whole rows
    slow = [(m, b, s) for s in SEEDS for b in BUDGETS for m in methods if m in SLOW
            and not ('BnFreeze' in m and b not in (20, None))]  # BatchNorm handling: where fine-tuning can pay (20, all)
    order = fast + slow
    for m, b, s in order:
        key = 'all' if b is None else str(b)
        if ((done.budget.astype(str) == key) & (done.seed == s) & (done.method == m)).any(): continue
        sp = budget_split(ds, b, seed=s)
        ctx = dict(ctx0); t0 = time.time()
        pred = METHODS[m](ds, sp, s, ctx)
        row = dict(budget=key, seed=s, method=m, accuracy=float((np.asarray(pred) == ds.labels[sp.test]).mean()), seconds=time.time() - t0,
                   note=ctx.get('recipe') or ('' if 'report' not in ctx else
                        f"start {ctx['report']['start_valid_accuracy']:.3f} -> {ctx['report']['valid_accuracy']:.3f} (best epoch {ctx['report']['best_epoch']})"))
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True); done.to_csv(out, index=False)
        print(f"{key:>4}/class seed {s} {m[:60]:60s} {row['accuracy']:.3f} {row['seconds']:6.1f}s {row['note']}", flush=True)
        write()
    print(f'done: {out}')

PEERS = [m for m in METHODS if not m.startswith('smallwb')]

def _table(d:pd.DataFrame, name:str, n_test:int, why:str) -> list:
    "The markdown section for one data set: every method at every budget, then the targets."
    rank = {m: i for i, m in enumerate(METHODS)}
    d = d.assign(_b=d.budget.map({'5': 0, '10': 1, '20': 2, 'all': 3}), _m=d.method.map(rank)).sort_values(['_b', '_m'])
    g = d.groupby(['_b', '_m', 'budget', 'method'], sort=False)
    lines = [f'### {name}', '', f"Test set: {n_test} images, fixed for every run. smallwb's input: {why}.", '',
             '| labels/class | method | accuracy (mean ± std) | seeds | wall time per run | note |', '|---|---|---|---|---|---|']
    for (_, _, b, m), r in g:
        notes = '; '.join(sorted({str(n) for n in r.note if isinstance(n, str) and n})) if 'note' in r else ''
        lines.append(f"| {b} | {m} | {r.accuracy.mean():.3f} ± {r.accuracy.std(ddof=0):.3f} | {len(r)} | {r.seconds.mean():.1f} s | {notes} |")
    return lines + ['']

def _paired(d, b, a, p):
    "Mean and standard error of the per-seed difference a - p at budget b (seeds both have)."
    x = d[(d.budget == b) & (d.method == a)].set_index('seed').accuracy; y = d[(d.budget == b) & (d.method == p)].set_index('seed').accuracy
    k = x.index.intersection(y.index); diff = (x[k] - y[k])
    return (float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(k))) if len(k) > 1 else float('nan'), len(k)) if len(k) else (np.nan, np.nan, 0)

def _targets(d:pd.DataFrame, photos:bool) -> list:
    m = lambda b, meth: d[(d.budget == b) & (d.method == meth)].accuracy.mean()
    say = lambda ok: '**met**' if ok else '**missed**'
    out = ['Targets:', '']
    if photos:
        out += [f"- auto ≥ 0.95 at 5/class: {m('5', 'smallwb auto'):.3f} {say(m('5', 'smallwb auto') >= 0.95)}",
                f"- auto ≥ 0.96 with all labels: {m('all', 'smallwb auto'):.3f} {say(m('all', 'smallwb auto') >= 0.96)}"]
    else: out += [f"- digits: auto ≥ 0.889 at 5/class: {m('5', 'smallwb auto'):.3f} {say(m('5', 'smallwb auto') >= 0.889)}"]
    for b in ('5', '10', '20', 'all'):
        worst = []
        for p in PEERS:
            mu, se, n = _paired(d, b, 'smallwb auto', p)
            if n: worst.append((mu, se, p))
        if not worst: continue
        mu, se, p = min(worst)
        ok = mu >= 0 or (se == se and mu >= -2 * se)
        out.append(f"- {b}/class: auto vs its closest peer ({p}): {mu*100:+.1f} ± {se*100:.1f} points (per-seed paired difference ± SE) — "
                   f"{'above' if mu >= 0 else 'within noise' if ok else 'below'} {say(ok)}")
    same = 'sklearn LogisticRegression(C=0.5) on the features smallwb probe uses'
    for b in ('5', '10', '20'):
        mu, se, n = _paired(d, b, 'smallwb probe', same)
        if n: out.append(f"- {b}/class: smallwb probe vs scikit-learn on the same cached features: {mu*100:+.2f} points {say(mu >= -0.005)} (target: within 0.5)")
    for bn in ('train', 'frozen'):
        g = f"smallwb gradual (BatchNorm {bn}{', fastai default' if bn == 'train' else ', BnFreeze'})"
        mu, se, n = _paired(d, 'all', g, 'smallwb probe')
        if n: out.append(f"- all labels: {g} vs the probe it starts from: {mu*100:+.1f} ± {se*100:.1f} points {say(mu >= 0)}")
    return out + ['']

NOTES = ['Reading the fine-tuning rows:', '',
         '- They ran one after another on the 2 shared cores, one thread each, seed-major (every budget of seed 0 first). '
         'fastai ran for seed 0 only (over an hour a run at all labels); smallwb gradual for all 3 seeds (9-16 minutes a '
         'run at all labels, with other benchmarks on the cores), so the missing fastai rows are missing, not zero. The '
         'fastai row at all labels includes 31 minutes during which the process was paused (SIGSTOP) for a clean timing '
         'of another benchmark.',
         '- With all 245 labels gradual unfreezing ends at or above the probe it starts from on every seed (BatchNorm train: '
         '0.961/0.967/0.974, BnFreeze: 0.961/0.980/0.974, probe 0.961), keeping its best validation epoch: +0.7 and +1.1 '
         'points on average, one or two of the 153 test photos, at ~400 times the probe\'s cost (11-14 min against 2 s). '
         '`auto` keeps the probe there because its validation cannot tell them apart (the held-out labels are all '
         'classified correctly from the start, "start 1.000"), and a tie goes to the prior: on a folder this size, '
         'fine-tuning is worth a try when the extra point matters and the quarter hour does not (`strategy gradual`).',
         '- Where they ran, neither fine-tuning peer beats the frozen probe on the test set: with 10-40 labeled photos, '
         'the held-out validation items (a fifth of the labels) are classified perfectly by the probe it starts from '
         '("start 1.000"), so validation cannot tell epochs apart and the test set pays for the extra variance. That is why '
         '`auto` keeps the probe below `FINETUNE_MIN` labels and lists fine-tuning only from there on. BatchNorm in train '
         'mode vs frozen (BnFreeze) does not separate: equal at 20/class on seeds 0-1, train better on seed 2 (0.987 vs '
         '0.954), frozen better at all labels (+0.4 on average); the fastai default (train) stays.',
         '- The `transfer` experiment at its defaults (seed 0, 5 labels/class) scores 0.941, below 0.95: the seed-spread '
         'table shows why: the mean over 10 draws of the labeled photos is 0.953, seed 0\'s draw is one of the harder ones, '
         'and none of the alternatives tried (C 0.1 or 2, L2-normalised features, flip test-time augmentation, flipped '
         'copies as training views; 10 draws, cached features) raised the mean at 5 or 10/class by more than 0.2 points, '
         'against a 1.6-point spread over draws.', '']

SPREAD_SEEDS = range(10)

def _seed_spread(ds, size, crop, photos) -> list:
    "How much the draw of the labeled items alone moves the probe (10 seeds, cached features): the noise every target sits in."
    ctx = dict(backbone='lite2', size=size, crop=crop, photo=photos)
    out = ['The draw of the labeled items alone (the smallwb probe, the default `transfer` stage, over seeds 0-9):', '',
           '| labels/class | mean ± std | min..max | seed 0 (the experiment\'s default) |', '|---|---|---|---|']
    for b in (5, 10):
        acc = []
        for s in SPREAD_SEEDS:
            sp = budget_split(ds, labels_per_class=b, seed=s)
            acc.append(float((smallwb_probe(ds, sp, s, ctx) == ds.labels[sp.test]).mean()))
        out.append(f"| {b} | {np.mean(acc):.3f} ± {np.std(acc):.3f} | {min(acc):.3f}..{max(acc):.3f} | {acc[0]:.3f} |")
    return out + ['']

def write():
    "results.md from every runs-*.csv here."
    secs = ['## Transfer learning on real photos, and on digits', '',
            'Command: `.venv/bin/python bench/photos/run.py --data ../shared/data/hymenoptera` and `... --data digits` '
            '(each run is kept in `bench/photos/runs-<data>.csv`; a rerun resumes).', '',
            f'Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, torch {torch.__version__}; the cores were shared with other jobs '
            f'(1-minute load average {os.getloadavg()[0]:.1f} when this was written), so wall times compare within a row group only. '
            'Wall time per run is training plus scoring the test set, with frozen features already in the cache (one pass of lite2 '
            'over the folder is shared by every frozen-feature row); the fine-tuning rows run their backbone on every batch.', '']
    for f in sorted(HERE.glob('runs-*.csv')):
        d = pd.read_csv(f, dtype={'budget': str}); name = f.stem[5:]
        photos = name != 'digits'
        ds = get_dataset('digits' if not photos else f'../shared/data/{name}', verbose=False)
        size, crop, why = choose_size(ds, 'lite2'); n_test = len(budget_split(ds, 5).test)
        secs += _table(d, name, n_test, why) + _targets(d, photos) + _seed_spread(ds, size, crop, photos)
    (HERE/'results.md').write_text('\n'.join(secs + NOTES), encoding='utf-8')

if __name__ == '__main__':
    import sys
    if '--report' in sys.argv: write()
    else: main()
