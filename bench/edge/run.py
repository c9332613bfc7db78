"""Edge benchmark: the models a run ships, as ONNX Runtime int8 vs ORT fp32 vs torch eager, batch 1, 2 threads.

Models: on hymenoptera (10 labels/class, seed 0) the teacher (a linear probe on Lite2 at 260 px), the `distill` default
student (Lite0 at the size `distill` measures, a head on frozen features) and a probe on Lite0's stage taps (what `transfer.auto` picks on some
folders, whose int8 pre-processing needs the fallback); on digits the compact CNN student and its teacher. For each: export
at its own size, static int8 with `quantize_within_budget` choosing the nodes kept in float on training images that did not
calibrate it (agreement with fp32 must reach 99% on fewer than 200 images), then the test set, once: accuracy of every
engine, int8's agreement with fp32 and its Wilson interval, file sizes; latency of every engine of every model timed
interleaved in one loop.

Run from the repository root:  .venv/bin/python bench/edge/run.py   (writes bench/edge/results.md)
"""
import argparse, json, os, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from smallwb.core import set_seed, torch_threads
from smallwb.data import digits, from_folder, budget_split
from smallwb.transfer import (fit_probe, save_model, load_model, accuracy, model_input, features, tap_features,
                              BACKBONES, auto, candidates)
from smallwb.distill import distill, wilson
from smallwb.edge import (export_checkpoint, onnx_metadata, OnnxModule, check_parity, quantize_within_budget, torch_fn,
                          onnx_fn, int8_images,
                          time_interleaved, percentiles, cpu_info)

HERE, WORK = Path(__file__).parent, Path('runs/bench_edge')
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
TARGETS = dict(int8_vs_ort_fp32=1.6, int8_vs_torch=6.0, max_drop_points=0.5, max_size_ratio=0.3)


def warm(ds, idxs, fn, **kw):
    "Fill the feature cache 128 items at a time (the cache then serves every later call whole)."
    for i in range(0, len(idxs), 128): fn(ds, idxs[i:i+128], **kw)


def photo_models(ds, sp):
    "The models a hymenoptera run ships (built from the feature cache when bench/distill has not left them)."
    out, spec = {}, BACKBONES['lite2']
    warm(ds, np.arange(len(ds)), features, backbone='lite2', size=260, crop_pct=spec.crop_pct)
    t = WORK/'hym_teacher.pth'
    if not t.exists():
        m = fit_probe(ds, sp.labeled, backbone='lite2', size=260, crop_pct=spec.crop_pct)
        save_model(t, m, m.arch, ds.classes, 260, spec.mean, spec.std, spec.crop_pct)
    out['hymenoptera teacher: Lite2 probe @260'] = t
    s = WORK/'hym_student.pth'
    if not held_file(s).exists():
        m, rep = distill(ds, sp.labeled, t, sp.pool)  # its size measured against the teacher on this CPU
        r = rep['recipe']
        save_model(s, m, r['arch'], ds.classes, r['size'], r['mean'], r['std'], r['crop_pct'])
        held_file(s).write_text(json.dumps(rep['held_out']))
    out[f"hymenoptera student: Lite0 @{load_model(s)[1]['size']} head (`distill` default)"] = s
    p = WORK/'hym_taps.pth'
    if not p.exists():
        warm(ds, sp.labeled, tap_features, backbone='lite0', size=224, crop_pct=0.875)
        m = fit_probe(ds, sp.labeled, members=[['tap4', 'tap5']], backbone='lite0', size=224, crop_pct=0.875)
        save_model(p, m, m.arch, ds.classes, 224, (0.5,)*3, (0.5,)*3, 0.875)
    out['hymenoptera probe on Lite0 stage taps 4+5 @224'] = p
    return out


def digit_models(ds, sp):
    t, s = WORK/'digits_teacher.pth', WORK/'digits_student.pth'
    if not t.exists():
        m, recipe, _ = auto(ds, sp.labeled, 'lite0', 32, recipes=candidates('lite0', len(sp.labeled), flips=(False,)))
        save_model(t, m, m.arch, ds.classes, 32, (0.5,)*3, (0.5,)*3)
    if not held_file(s).exists():
        m, rep = distill(ds, sp.labeled, t, sp.pool, epochs=30)
        r = rep['recipe']
        save_model(s, m, r['arch'], ds.classes, r['size'], r['mean'], r['std'])
        held_file(s).write_text(json.dumps(rep['held_out']))
    return {'digits teacher: transfer auto @32': t, 'digits student: CNN @16 (`distill` default)': s}


def held_file(ck): return ck.with_suffix('.held_out.json')  # a student's pool items kept out of its training


def ship(name, ck, ds, sp, budget, threads, log):
    "Export, int8 chosen on training images the model did not learn from (`edge.int8_images`), then the test set once."
    net, meta = load_model(ck)
    stem = ck.stem
    f32 = export_checkpoint(ck, WORK/f'{stem}.onnx')
    q8 = WORK/f'{stem}.int8.onnx'
    held = json.loads(held_file(ck).read_text()) if held_file(ck).exists() else None
    calib, choice, on = int8_images(sp, held, 128, 512, seed=0)
    log(f'{name}: int8 chosen on {on}')
    par = check_parity(net, OnnxModule(f32, threads), ds, sp.test[:64], meta, name=f32.name)
    q = quantize_within_budget(f32, q8, ds.images(calib, meta['size'], meta.get('crop_pct')), ds, choice, budget,
                               labels=False,
                               threads=threads, log=lambda m: log(f'{name}: {m}'))
    acc = {e: accuracy(m, ds, sp.test, **model_input(meta))
           for e, m in (('torch fp32', net), ('ORT fp32', OnnxModule(f32, threads)), ('ORT int8', OnnxModule(q8,
                                                                                                             threads)))}
    t = check_parity(OnnxModule(f32, threads), OnnxModule(q8, threads), ds, sp.test, meta, rtol=None, min_agreement=0.)
    return dict(name=name, size=meta['size'], arch=meta['arch']['name'], n_test=len(sp.test), n_choice=len(choice),
                chosen_on=on,
                acc=acc,
                mb={'torch fp32': ck.stat().st_size/1e6, 'ORT fp32': f32.stat().st_size/1e6,
                    'ORT int8': q8.stat().st_size/1e6},
                parity=par, q=q, test_agreement=t['top1_agreement'], test_agreement_ci=t['agreement_ci'],
                preprocess=onnx_metadata(q8)['int8_preprocess'], engines=dict(net=net, f32=f32, q8=q8,
                                                                              size=meta['size']))


def time_all(res, rounds, runs, threads, log):
    "Every engine of every model, timed interleaved in one loop; median over rounds of each round's p50."
    eng = {}
    for r in res:
        e, x = r['engines'], np.random.default_rng(0).standard_normal((1, 3, r['engines']['size'],
                                                                       r['engines']['size'])).astype(np.float32)
        for k, f in (('torch fp32', torch_fn(e['net'])), ('ORT fp32', onnx_fn(e['f32'], threads)), ('ORT int8',
                                                                                                    onnx_fn(e['q8'],
                                                                                                            threads))):
            eng[(r['name'], k)] = (lambda f=f, x=x: f(x))
    t, loads = {k: [] for k in eng}, []
    with torch_threads(threads), torch.inference_mode():
        for i in range(rounds):
            loads.append(os.getloadavg()[0])
            for k, v in time_interleaved(eng, runs, warmup=5).items(): t[k].append(percentiles(v)['p50_ms'])
            log(f'latency round {i}: load {loads[-1]:.1f}')
    for r in res: r['lat'] = {k: float(np.median(t[(r['name'], k)])) for k in ('torch fp32', 'ORT fp32', 'ORT int8')}
    for r in res: r['spread'] = {k: (min(t[(r['name'], k)]), max(t[(r['name'], k)])) for k in ('torch fp32', 'ORT fp32',
                                                                                               'ORT int8')}
    return loads


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--runs', type=int, default=50)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--budget', type=float, default=0.5)
    a = ap.parse_args(argv)
    t0 = time.time()
    set_seed(0)
    torch.set_num_threads(a.threads)
    WORK.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(f"[edge bench {time.time()-t0:6.0f}s] {m}", flush=True)
    load0, res = os.getloadavg()[0], []
    if PHOTOS.exists():
        ds = from_folder(PHOTOS, verbose=False)
        sp = budget_split(ds, 10, seed=0)
        res += [ship(n, ck, ds, sp, a.budget, a.threads, log) for n, ck in photo_models(ds, sp).items()]
    dds = digits()
    dsp = budget_split(dds, 10, seed=0)
    res += [ship(n, ck, dds, dsp, a.budget, a.threads, log) for n, ck in digit_models(dds, dsp).items()]
    loads = time_all(res, a.rounds, a.runs, a.threads, log)
    write(res, a, cpu_info(), load0, loads, time.time() - t0)
    log(f"wrote {HERE/'results.md'}")


HEADER = """Machine: {cpu}, {cores} cores, VNNI: {vnni} ({flags}); batch 1, {threads} threads for every engine (ORT
spinning off), {runs} timed runs after 5 warm-up runs per round, every engine of every model timed interleaved in
one loop, median over {rounds} rounds of each round's p50 (min–max over rounds shown). Load average {load0:.1f} at
the start, {loads} at the rounds: the 2 cores are shared with other jobs, so absolute times are inflated; the
interleaving keeps the ratios fair.

int8: static QDQ, per-channel, 128 calibration images from the training split; the nodes kept in float are chosen on
up to 512 *other* training images the model did not learn from (`edge.int8_images`: the pool for a model fitted to
the labels, the pool items `distill` held out for a student fitted to the pool's pseudo-labels) by agreement with fp32,
observed and expected (`edge.expected_agreement`; ≥ 99% below 200 images, else ≥ 1 − budget; no labels used); the test set is then scored once. Budget: {budget}
points."""

WHY = """Reading the targets: static int8 pays off on CPUs with int8 dot-product instructions (AVX-512 VNNI,
AVX-VNNI); the machine line above says whether this one has them. ../shared/STACK.md measured int8 2.49 ms vs ORT
fp32 4.18 ms and torch 17.0 ms for Lite0 at 224 px on a machine of this kind *with* VNNI (1.68× and 6.8×); a speed
ratio missed here, on a CPU without VNNI, is that CPU's. With 153 test images one image is 0.65 points, so the
agreement with fp32 and its interval say more than the drop."""


def _row(r, e):
    "One table row: a model under one engine."
    sp, (lo, hi) = r['lat'][e] / r['lat']['ORT int8'], r['spread'][e]
    lo_ci, hi_ci = r['test_agreement_ci']
    ag = f"{r['test_agreement']:.3f} ({lo_ci:.3f}–{hi_ci:.3f})" if e == 'ORT int8' else ''
    ms = f"{r['lat'][e]:.2f} ({lo:.2f}–{hi:.2f})"
    speed = '×%.2f' % sp if e != 'ORT int8' else '–'
    cells = [r['name'], str(r['size']), e, f"{r['acc'][e]:.4f}", f"{r['mb'][e]:.1f}", ms, speed, ag]
    return '| ' + ' | '.join(cells) + ' |'


def _targets(r) -> str:
    "The four targets for one model, met or missed, and how int8 was chosen."
    ok, T = (lambda c: 'met' if c else 'MISSED'), TARGETS
    lat, acc, mb, q = r['lat'], r['acc'], r['mb'], r['q']
    s32, st = lat['ORT fp32'] / lat['ORT int8'], lat['torch fp32'] / lat['ORT int8']
    drop, ratio = 100 * (acc['ORT fp32'] - acc['ORT int8']), mb['ORT int8'] / mb['ORT fp32']
    return (f"- **{r['name']}** ({r['n_test']} test images; int8 pre-processing: {r['preprocess'][:60]}): "
            f"int8 vs ORT fp32 ×{s32:.2f} (≥ ×{T['int8_vs_ort_fp32']}: {ok(s32 >= T['int8_vs_ort_fp32'])}); "
            f"vs torch ×{st:.2f} (≥ ×{TARGETS['int8_vs_torch']}: {ok(st >= TARGETS['int8_vs_torch'])}); "
            f"file {ratio:.3f}× fp32 (≤ {TARGETS['max_size_ratio']}×: {ok(ratio <= TARGETS['max_size_ratio'])}); "
            f"test drop {drop:+.2f} points (≤ {TARGETS['max_drop_points']}: {ok(drop <= TARGETS['max_drop_points'])}); "
            f"choice: agreement {q['agreement']:.3f} (expected {q['expected_agreement']:.3f}) on {r['chosen_on']} "
            f"(required {q['required_agreement']:.3f}), {len(q['excluded'])} nodes kept in float, "
            + ('passed.' if q['within_budget'] else 'NOT passed: fp32 ships.'))


def write(res, a, cpu, load0, loads, secs):
    flags = ', '.join(cpu['vnni_flags']) or 'no AVX-512 VNNI / AVX-VNNI int8 dot-product instructions'
    L = ['## Edge: ONNX Runtime int8 vs fp32 vs torch eager, for the models a run ships', '',
         f'Command: `.venv/bin/python bench/edge/run.py` ({secs/60:.0f} min).', '',
         HEADER.format(flags=flags, threads=a.threads, runs=a.runs, rounds=a.rounds, load0=load0, budget=a.budget,
                       loads=', '.join(f'{l:.1f}' for l in loads), **cpu), '',
         '| model | px | engine | test acc. | MB | p50 ms (min–max) | int8 speedup | int8 agreement with fp32 on test '
         '(95% CI) |',
         '|---|---|---|---|---|---|---|---|']
    L += [_row(r, e) for r in res for e in ('torch fp32', 'ORT fp32', 'ORT int8')]
    L += ['', '### Targets (batch 1)', ''] + [_targets(r) for r in res] + ['', WHY, '']
    (HERE/'results.md').write_text('\n'.join(L), encoding='utf-8')


if __name__ == '__main__': main()
