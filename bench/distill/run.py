"""Distillation benchmark: teacher vs students on real photos (hymenoptera, 10 labels/class) and on the built-in digits.

Hymenoptera: train/ (245 photos; 10 labelled per class, the rest is the unlabeled pool) and val/ (153 photos, the test set,
touched once per model). Teacher: a linear probe on frozen Lite2 at 260 px (what `transfer` builds on photos). Students,
3 seeds each: Lite0 heads on frozen features at several input sizes (labels only, or + the teacher's hard pseudo-labels for
the pool: the `distill` default), a truncated Lite0 (stages 0-5, a head on the pooled stage-5 output), and, on one seed
(they are expensive), the whole Lite0 fine-tuned with KD and a timm mobile net from random weights (no offline weights).
Choices are made on agreement with the teacher on held-out pool items (cross-fitted), never on the test set.
Digits: teacher `transfer.auto` on Lite0 at 32 px; student the compact CNN at 16 px (labels only / + KD / `distill`).
Latency: batch 1, torch eager, ORT fp32 and ORT int8, every architecture timed interleaved in one loop.

Run: .venv/bin/python bench/distill/run.py [--seeds 0 1 2] [--parts photos digits latency] (per-part results cached in
runs/bench_distill/parts, so a killed run resumes; --fresh recomputes).
"""
import argparse, json, os, shutil, time, warnings
from pathlib import Path
import sys
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the shared helpers
from _parts import cached_part
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from smallwb.core import FeatureCache, set_seed, torch_threads
from smallwb.data import digits, from_folder, budget_split
from smallwb.transfer import (fit_probe, save_model, features, tap_features, tap_dims, fit_head, create_backbone, Probe,
                              auto,
                              candidates, predict_logits, model_input, BACKBONES)
from smallwb.distill import (distill, fit_head_student, fit_student, teacher_logits, load_teacher, accuracy_of, flops,
                             n_params,
                             head_agreement, wilson)
from smallwb.edge import export_checkpoint, quantize, onnx_fn, torch_fn, time_interleaved, percentiles, cpu_info

HERE, WORK = Path(__file__).parent, Path('runs/bench_distill')
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
TEACHER = dict(backbone='lite2', size=260, crop_pct=BACKBONES['lite2'].crop_pct)
TARGETS = dict(retained=0.97, speedup=3.0)


def part(name, fn, fresh=False):
    "A cached piece of the benchmark (`bench/_parts.py`): computed once, then read back (a killed run resumes here)."
    return cached_part(WORK, name, fn, fresh)


def warm(ds, idxs, fn, **kw):
    "Fill the feature cache 128 items at a time (the cache then serves every later call whole)."
    for i in range(0, len(idxs), 128): fn(ds, idxs[i:i+128], **kw)


def test_acc(model, ds, sp, recipe):
    return accuracy_of(predict_logits(model, ds, sp.test, **model_input(recipe)), ds.labels[sp.test])


def teacher_ckpt(ds, sp, seed):
    p = WORK/f'teacher_{seed}.pth'
    if not p.exists():
        m = fit_probe(ds, sp.labeled, seed=seed, **TEACHER)
        spec = BACKBONES['lite2']
        save_model(p, m, m.arch, ds.classes, TEACHER['size'], spec.mean, spec.std, TEACHER['crop_pct'])
    if seed == 0: shutil.copy(p, WORK/'teacher.pth')
    return p


def truncated(ds, sp, teacher, tap=6, size=224, crop=0.875):
    "Lite0 cut after stage 5 (tap 6, its pooled output), a head fitted to the labels and the teacher's pseudo-labels."
    x = np.concatenate([sp.labeled, sp.pool])
    y = np.concatenate([ds.labels[sp.labeled], teacher_logits(teacher, ds, sp.pool).argmax(1)])
    warm(ds, x, tap_features, backbone='lite0', size=size, crop_pct=crop)
    head = fit_head(tap_features(ds, x, [tap], 'lite0', size, crop_pct=crop), y, 2)
    bb = create_backbone('lite0', True)
    dims = tap_dims(bb, size)
    m = Probe(bb, [[f'tap{tap}']], 2, dims)
    m.heads[0].load_state_dict(head.state_dict())
    arch = dict(name='probe', backbone='lite0', n_classes=2, members=[[f'tap{tap}']], dims=dims, hflip=False, hidden=0)
    return m.eval(), dict(arch=arch, size=size, mean=(0.5,)*3, std=(0.5,)*3, crop_pct=crop)


def photo_seed(ds, seed, variants):
    sp = budget_split(ds, 10, seed=seed)
    tp = teacher_ckpt(ds, sp, seed)
    t_test = teacher_logits(tp, ds, sp.test)
    rows = [dict(model='teacher: Lite2 probe @260', accuracy=accuracy_of(t_test, ds.labels[sp.test]), arch='teacher')]
    for name, (arch, fn) in variants.items():
        t0 = time.time()
        model, rec, rep = fn(ds, sp, tp)
        agree_test = float((predict_logits(model, ds, sp.test,
                                           **model_input(rec)).argmax(1) == t_test.argmax(1)).mean())
        arch = f"lite0_{rec['size']}" if arch == 'measured' else arch
        rows.append(dict(model=name, arch=arch, accuracy=test_acc(model, ds, sp, rec), test_agreement=agree_test,
                         pool_agreement=rep.get('agreement'), train_seconds=time.time() - t0, size=rec['size'],
                         why=rep.get('why', '')))
        if seed == 0: save_model(WORK/f'{arch}.pth', model, rec['arch'], ds.classes, rec['size'], rec['mean'],
                                 rec['std'], rec['crop_pct'])
        print(f"  seed {seed} {name}: {rows[-1]['accuracy']:.3f} (teacher {rows[0]['accuracy']:.3f})", flush=True)
    return dict(rows=[dict(r, seed=seed) for r in rows])


def head(size, crop=0.875, pseudo='hard'):
    def fn(ds, sp, tp):
        warm(ds, np.concatenate([sp.labeled, sp.pool]), features, backbone='lite0', size=size, crop_pct=crop)
        kw = dict(size=size, crop_pct=crop)
        m, info = fit_head_student(ds, sp.labeled, teacher=tp, pool_idx=sp.pool, pseudo=pseudo, **kw)
        ag = head_agreement(ds, sp.labeled, tp, sp.pool, **kw) if pseudo else {}
        return m, info['recipe'], ag
    return fn


def default(ds, sp, tp):
    "What the distillation stage runs: `distill` with every default (student 'auto', its size from measured latency)."
    m, rep = distill(ds, sp.labeled, tp, sp.pool)
    return m, rep['recipe'], rep

DEFAULT = 'Lite0 head + pseudo-labels at the size `distill` measures (`distill` default)'
OLD_DEFAULT = 'Lite0 @192, head + pseudo-labels (`distill` default)'  # the FLOPs-sized default of earlier runs: @192


def trunc(ds, sp, tp):
    m, rec = truncated(ds, sp, tp)
    agree = predict_logits(m, ds, sp.pool, **model_input(rec)).argmax(1) == teacher_logits(tp, ds, sp.pool).argmax(1)
    return m, rec, dict(agreement=float(agree.mean()))  # on the pool it was fitted to: not held out


def whole(student, size, epochs, lr):
    def fn(ds, sp, tp):
        learn, info = fit_student(ds, sp.labeled, student, tp, sp.pool, 'soft', epochs=epochs, lr=lr, bs=16, size=size,
                                  threads=2)
        return learn.model.eval().cpu(), info['recipe'], {}
    return fn


PHOTO_VARIANTS = {  # name → (architecture for the latency table, how to train); 3 seeds
    'Lite0 @192, head, labels only': ('lite0_192', head(192, pseudo=None)),
    'Lite0 @192, head + pseudo-labels': ('lite0_192', head(192)),
    'Lite0 @192 squashed (no crop), head + pseudo-labels': ('lite0_192', head(192, crop=None)),
    'Lite0 @160, head + pseudo-labels': ('lite0_160', head(160)),
    'Lite0 @224, head + pseudo-labels': ('lite0_224', head(224)),
    'Lite0 stages 0-5 @224 (truncated), head + pseudo-labels': ('lite0_trunc6_224', trunc),
}
EXPENSIVE = {  # one seed
    'Lite0 @192, whole network, KD + soft pool (fastai, 8 epochs)': ('lite0_192_ft', whole('lite0', 192, 8, 1e-3)),
    'mobilenetv3_small_100 @224 from random init, KD + soft pool (20 epochs)': ('mnv3s100_224', whole('mnv3s100', 224,
                                                                                                      20, 3e-3)),
}


def digits_seed(ds, seed, epochs):
    sp = budget_split(ds, 10, seed=seed)
    cache = FeatureCache()
    t0 = time.time()
    model, recipe, _ = auto(ds, sp.labeled, 'lite0', 32, recipes=candidates('lite0', len(sp.labeled), flips=(False,)),
                            seed=seed, cache=cache)
    spec = BACKBONES['lite0']
    tp = save_model(WORK/f'digits_teacher_{seed}.pth', model, model.arch, ds.classes, 32, spec.mean, spec.std)
    t_test = teacher_logits(tp, ds, sp.test)
    rows = [dict(model=f'teacher: transfer auto ({recipe.name}) @32', arch='digits_teacher',
                 accuracy=accuracy_of(t_test, ds.labels[sp.test]),
                 train_seconds=time.time() - t0)]
    runs = {'CNN @16, labels only': lambda: fit_student(ds, sp.labeled, 'cnn', epochs=epochs, seed=seed)[0].model,
            'CNN @16 + KD': lambda: fit_student(ds, sp.labeled, 'cnn', tp, epochs=epochs, seed=seed)[0].model,
            'CNN @16 + KD + soft pool (`distill` default, 10% of the pool held out)':
                lambda: distill(ds, sp.labeled, tp, sp.pool, epochs=epochs, seed=seed)}
    for name, fn in runs.items():
        t0 = time.time()
        out = fn()
        m, rep = out if isinstance(out, tuple) else (out, {})
        rows.append(dict(model=name, arch='cnn_16', accuracy=accuracy_of(predict_logits(m, ds, sp.test, 16, (0.5,)*3,
                                                                                        (0.5,)*3), ds.labels[sp.test]),
                         pool_agreement=rep.get('agreement'), train_seconds=time.time() - t0))
        if seed == 0 and rep: save_model(WORK/'cnn_16.pth', m, rep['recipe']['arch'], ds.classes, 16, (0.5,)*3, (0.5,
                                                                                                                 )*3)
    if seed == 0: shutil.copy(tp, WORK/'digits_teacher.pth')
    return dict(rows=[dict(r, seed=seed) for r in rows])


def calibration(arch, meta):
    "48 training photos, or 64 digits, at the model's input size and crop."
    if arch.startswith(('digits', 'cnn')): return digits().images(np.arange(64), meta['size'])
    ds = from_folder(PHOTOS, verbose=False)
    return ds.images(np.flatnonzero(ds.splits == 'train')[::4][:48], meta['size'], meta.get('crop_pct'))


def latency(archs, rounds=3, runs=30, threads=2):
    "Batch-1 latency of every architecture under torch eager, ORT fp32 and ORT int8, all timed interleaved in one loop."
    from smallwb.transfer import load_model
    import onnx
    eng, info = {}, {}
    for a, ck in archs.items():
        m, meta = load_model(ck)
        f32 = WORK/'onnx'/f'{a}.onnx'
        q8 = WORK/'onnx'/f'{a}.int8.onnx'
        if not f32.exists(): export_checkpoint(ck, f32)
        if not q8.exists(): quantize(f32, q8, calibration(a, meta))
        g = onnx.load(str(f32))
        params = int(sum(np.prod(t.dims) for t in g.graph.initializer))
        info[a] = dict(size=meta['size'], params=params, torch_params=n_params(m), fp32_mb=f32.stat().st_size/1e6,
                       int8_mb=q8.stat().st_size/1e6, gflops=flops(m, meta['size'])/1e9)
        x = np.random.default_rng(0).standard_normal((1, 3, meta['size'], meta['size'])).astype(np.float32)
        for e, f in (('torch', torch_fn(m)), ('ORT fp32', onnx_fn(f32, threads)), ('ORT int8', onnx_fn(q8, threads))):
            eng[(a, e)] = (lambda f=f, x=x: f(x))
    t = {k: [] for k in eng}
    loads = []
    with torch_threads(threads), torch.inference_mode():
        for r in range(rounds):
            loads.append(os.getloadavg()[0])
            for k, v in time_interleaved(eng, runs, warmup=3).items(): t[k].append(percentiles(v)['p50_ms'])
    rows = [dict(arch=a, engine=e, p50_ms=float(np.median(t[(a, e)])), lo=float(min(t[(a, e)])), hi=float(max(t[(a,
                                                                                                                 e)])),
                 **info[a])
            for a, e in eng]
    return dict(rows=rows, loads=loads, cpu=cpu_info(), threads=threads, rounds=rounds, runs=runs)


def summary(df):
    df = df.reindex(columns=sorted(set(df.columns) | {'pool_agreement', 'test_agreement', 'train_seconds'}))
    return df.groupby('model', sort=False).agg(acc=('accuracy', 'mean'), std=('accuracy', 'std'), n=('seed', 'nunique'),
                                               arch=('arch', 'first'), agree=('pool_agreement', 'mean'),
                                               secs=('train_seconds', 'mean'))


def _num(v, f): return '–' if v is None or v != v else format(v, f)

def table(df, lat):
    "One markdown row per model: accuracy over seeds, agreement, size, FLOPs and latency of its architecture."
    L = ['| model | test accuracy (mean ± std) | seeds | agreement with the teacher, held-out pool | parameters '
         '| GFLOPs | fp32 MB | int8 MB | torch ms | ORT fp32 ms | ORT int8 ms | train s |', '|---' * 12 + '|']
    for name, r in summary(df).iterrows():
        l = lat[lat.arch == r.arch].set_index('engine') if lat is not None and r.arch in set(lat.arch) else None
        i = l.iloc[0] if l is not None else {}
        ms = [_num(l.loc[e, 'p50_ms'], '.2f') if l is not None else '–' for e in ('torch', 'ORT fp32', 'ORT int8')]
        acc = f"{r.acc:.3f}" + (f" ± {r['std']:.3f}" if r.n > 1 else '')
        cells = [name, acc, str(r.n), _num(r.agree, '.3f'), _num(i.get('params'), ',.0f'), _num(i.get('gflops'), '.3f'),
                 _num(i.get('fp32_mb'), '.1f'), _num(i.get('int8_mb'), '.1f'), *ms, _num(r.secs, '.0f')]
        L.append('| ' + ' | '.join(cells) + ' |')
    return L


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--parts', nargs='+', default=['photos', 'expensive', 'digits', 'latency'])
    ap.add_argument('--digits-epochs', type=int, default=30)
    ap.add_argument('--fresh', action='store_true')
    a = ap.parse_args(argv)
    t0 = time.time()
    set_seed(0)
    torch.set_num_threads(2)
    WORK.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()[0]
    photo, dig, lat = [], [], None
    if PHOTOS.exists() and ('photos' in a.parts or 'expensive' in a.parts):
        ds = from_folder(PHOTOS, verbose=False)
        warm(ds, np.arange(len(ds)), features, backbone='lite2', size=260, crop_pct=TEACHER['crop_pct'])
        for s in (a.seeds if 'photos' in a.parts else []):
            rows = part(f'photos_{s}', lambda s=s: photo_seed(ds, s, PHOTO_VARIANTS), a.fresh)['rows']
            photo += [dict(r, model='Lite0 @192, head + pseudo-labels' if r['model'] == OLD_DEFAULT else r['model'])
                      for r in rows]  # the parts of earlier runs: their default was head + pseudo-labels at 192
            rows = part(f'photos_default_{s}', lambda s=s: photo_seed(ds, s, {DEFAULT: ('measured', default)}),
                        a.fresh)['rows']
            photo += [r for r in rows if r['arch'] != 'teacher']
        if 'expensive' in a.parts:
            for name, v in EXPENSIVE.items():
                rows = part(f'photos_{v[0]}', lambda v=v, name=name: photo_seed(ds, 0, {name: v}), a.fresh)['rows']
                photo += [r for r in rows if r['arch'] != 'teacher']
    if 'digits' in a.parts:
        dds = digits()
        dig = [r for s in a.seeds for r in part(f'digits_{s}', lambda s=s: digits_seed(dds, s, a.digits_epochs),
                                                a.fresh)['rows']]
    if 'latency' in a.parts:
        names = ['teacher', 'lite0_192', 'lite0_160', 'lite0_224', 'lite0_trunc6_224', 'lite0_192_ft', 'mnv3s100_224',
                 'digits_teacher', 'cnn_16']
        archs = {n: WORK/f'{n}.pth' for n in names if (WORK/f'{n}.pth').exists()}
        lat = pd.DataFrame(part('latency', lambda: latency(archs), a.fresh)['rows'])
        new = sorted({r['arch'] for r in photo if r['model'] == DEFAULT} - set(lat.arch))
        if new:  # a size the latency part has not timed: timed with the teacher, interleaved, in a part of its own
            more = {n: WORK/f'{n}.pth' for n in ['teacher', *new]}
            extra = pd.DataFrame(part('latency_' + '_'.join(new), lambda: latency(more, runs=10), a.fresh)['rows'])
            lat = pd.concat([lat[~lat.arch.isin(new)], extra.assign(arch=extra.arch.replace('teacher', 'teacher_b'))])
    write(pd.DataFrame(photo), pd.DataFrame(dig), lat, a, t0, load0)


HEADER = """Machine: {cpu}, {cores} cores, VNNI: {vnni}, no GPU, shared with other jobs (load average {load0:.1f}
at the start, {load1:.1f} at the end). Latency: batch 1, 2 threads, median over 3 rounds of each round's p50 (30
runs), every engine of every architecture timed interleaved in one loop, each model at its own input size; int8 =
static QDQ per-channel, 48 calibration images, no exclusions (the edge stage tunes that; see bench/edge). Test sets
are touched once per model."""

PHOTO_NOTE = """Teacher: a linear probe on frozen Lite2 at 260 px (centre crop 0.89), what `transfer` builds on
photos. "head" = a logistic-regression head on the student's frozen, cached features (`fit_head_student`);
"pseudo-labels" = the teacher's argmax on the pool. Agreement with the teacher is cross-fitted on held-out pool
items (5 folds; for the truncated student it is on the pool it was fitted to, so optimistic; – where not measured).
Default choices were made on that agreement and on measured latency, never on the test set: `distill` sizes the
student itself, at the start of each run, as the largest input (from the FLOPs bound down, in steps of 16 px) at which it
times Lite0 ≥ 3× faster than the teacher under ONNX Runtime fp32 at batch 1 on this machine; on a loaded machine that
measurement varies, so seeds may get different sizes. Earlier runs sized it by FLOPs alone (192 px: 2.40× here)."""


def photo_targets(photo, lat):
    "The two targets for the `distill` default student against the teacher, met or missed."
    s, T = summary(photo), photo[photo.arch == 'teacher'].accuracy.mean()
    D = s.loc[DEFAULT]
    sizes = photo[photo.model == DEFAULT].groupby('seed')['size'].first()
    ok = lambda b: 'met' if b else 'MISSED'
    L = ['', f'Targets (the `distill` default student, Lite0 at {"/".join(map(str, sizes))} px for seeds '
         f'{" ".join(map(str, sizes.index))}, vs the teacher):',
         f'- accuracy ≥ {TARGETS["retained"]:.0%} of the teacher\'s: {ok(D.acc / T >= TARGETS["retained"])} '
         f'({D.acc:.3f} vs {T:.3f}, {100 * D.acc / T:.1f}%, mean of {int(D.n)} seeds).']
    if lat is None: return L + ['- speed: not measured.']
    f, g = lat[lat.engine == 'ORT fp32'].set_index('arch').p50_ms, lat.groupby('arch').gflops.first()
    a = D.arch  # seed 0's choice: the one in the latency table
    t = 'teacher_b' if 'teacher_b' in f else 'teacher'  # the teacher timed in the same loop as the student
    sp = f[t] / f[a]
    whys = '; '.join(f'seed {r.seed}: {r.why}' for r in photo[photo.model == DEFAULT].itertuples())
    return L + [f'- ≥ {TARGETS["speedup"]:g}× faster at batch 1, ORT fp32 for both: {ok(sp >= TARGETS["speedup"])} '
                f'({sp:.2f}× for {a}: {f[a]:.1f} ms vs the teacher\'s {f[t]:.1f} ms, timed together in one loop'
                + (' (a later timing than the other rows, at another load: compare ratios, not ms across rows)'
                   if t == 'teacher_b' else '') + f'; FLOPs ratio {g["teacher"] / g[a]:.2f}×).',
                f'- How `distill` sized the student (its own measurement, at the start of each run): {whys}.']


def write(photo, dig, lat, a, t0, load0):
    cpu = cpu_info()
    L = ['## Distillation: teacher vs students (hymenoptera photos and digits, 10 labels per class)', '',
         f'Command: `.venv/bin/python bench/distill/run.py` (seeds {" ".join(map(str, a.seeds))}; this run '
         f'{(time.time()-t0)/60:.0f} min, per-part results cached in `runs/bench_distill/parts`).',
         HEADER.format(load0=load0, load1=os.getloadavg()[0], **cpu), '']
    if len(photo):
        L += ['### Hymenoptera (train/: 20 labelled + 225 unlabeled pool; test: val/, 153 photos)', '', PHOTO_NOTE, '']
        L += table(photo, lat) + photo_targets(photo, lat)
    if len(dig):
        L += ['', '### Digits (100 labelled, 801 pool, 896 test)', '',
              f'Teacher: `transfer.auto` on Lite0 at 32 px. Student: the compact CNN at 16 px, {a.digits_epochs} '
              'epochs, from scratch; KD alpha=0.7, T=4.', '']
        L += table(dig, lat)
        s = summary(dig)
        T, S = s.iloc[0].acc, s.iloc[-1].acc
        L += ['', f'- student (`distill` default) keeps {100 * S / T:.1f}% of the teacher\'s accuracy '
              f'({S:.3f} vs {T:.3f}); the pool adds {100 * (S - s.iloc[1].acc):+.1f} points over labels only.']
    (HERE/'results.md').write_text('\n'.join(L) + '\n', encoding='utf-8')
    pd.concat([photo.assign(data='hymenoptera'), dig.assign(data='digits')]).to_csv(HERE/'results.csv', index=False)
    print('\n'.join(L))


if __name__ == '__main__': main()
