"""The whole default chain, one model lineage, on real photos and on digits (issue 16).

For each seed, one `smallwb run` at its defaults (hymenoptera: `-p labels_per_class 10`, its own `train/` + `val/`
layout, `val/` the test set; digits: the demo's defaults) into `runs/bench_chain/`. The first seed of each data set
runs with an empty feature cache (`$SMALLWB_CACHE` in the bench folder, removed first), so its wall time is a first
run's. Then, per stage: the model it handed on (`metrics.json`'s lineage keys), its test accuracy over seeds, and for
seed 0's models the parameters, file size and batch-1 latency under torch eager, ONNX Runtime fp32 and ORT int8
(static QDQ, calibrated on 32 labeled images; every engine timed interleaved in one loop, 2 threads).

    .venv/bin/python bench/chain_photos/run.py                 # both data sets, seeds 0 1 2
    .venv/bin/python bench/chain_photos/run.py --report        # results.md from what has run
"""
import argparse, json, os, platform, shutil, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
warnings.filterwarnings('ignore')

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
WORK = ROOT/'runs'/'bench_chain'
PHOTOS = ROOT.parent/'shared'/'data'/'hymenoptera'
DATA = {'hymenoptera': ['-p', 'data', str(PHOTOS), '-p', 'labels_per_class', '10'], 'digits': []}
STAGES = ['data', 'transfer', 'augment', 'distill', 'synth', 'active', 'edge']


def run_chain(name:str, seed:int, fresh:bool) -> dict:
    "One `smallwb run` of the default chain; its wall time and exit code (the run folder is replaced)."
    run = f'{name}-s{seed}'
    shutil.rmtree(WORK/run, ignore_errors=True)
    env = dict(os.environ, SMALLWB_CACHE=str(WORK/f'cache-{name}'))
    if fresh: shutil.rmtree(env['SMALLWB_CACHE'], ignore_errors=True)
    cmd = [str(ROOT/'.venv'/'bin'/'smallwb'), 'run', '--name', run, '--runs-dir', str(WORK), *DATA[name],
           '-p', 'seed', str(seed)]
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    took = time.time() - t0
    (WORK/run/'bench.json').write_text(json.dumps(dict(seconds=took, rc=rc, fresh_cache=fresh, cmd=cmd)))
    print(f"{run}: exit {rc} after {took/60:.1f} min", flush=True)
    return dict(seconds=took, rc=rc)


def stage_rows(name:str, seed:int) -> list:
    "Per stage of one run: what it took and handed on, test accuracy, parameters, size, its own latency, its time."
    run = WORK/f'{name}-s{seed}'
    rows = []
    for s in STAGES:
        f = run/s/'metrics.json'
        if not f.exists(): continue
        m = json.loads(f.read_text())
        model = os.path.normpath(run/s/m['model']) if m.get('model') else None
        rows.append(dict(data=name, seed=seed, stage=s, model=model, took=m.get('took'), accuracy=m.get('accuracy'),
                         valid_accuracy=m.get('valid_accuracy'), valid_on=m.get('valid_on'),
                         params=m.get('model_params'), mb=m.get('model_mb'), latency_ms=m.get('latency_ms'),
                         seconds=m.get('seconds') or m.get('took_s'), arch=_arch(model)))
    return rows


def _arch(model):
    if not model or not Path(model).exists() or not model.endswith('.pth'): return None
    from smallwb.transfer import load_model
    _, meta = load_model(model)
    a = meta.get('arch') or {}
    name = (a.get('backbone') or a.get('name')) if isinstance(a, dict) else str(a)
    return f"{name} @{meta['size']}px"


def latencies(model:str, ds, idx, threads:int=1) -> dict:
    "Batch-1 p50 ms under torch eager, ORT fp32 and ORT int8 of one checkpoint, interleaved; file sizes in MB."
    import torch
    from smallwb.transfer import load_model
    from smallwb.edge import export_checkpoint, quantize, torch_fn, onnx_fn, time_interleaved, normalize_np
    torch.set_num_threads(threads)
    net, meta = load_model(model)
    calib = normalize_np(ds.images(idx, int(meta['size']), crop_pct=meta.get('crop_pct')), meta['mean'], meta['std'])
    out = WORK/'onnx'/Path(model).parent.parent.name/Path(model).parent.name
    out.mkdir(parents=True, exist_ok=True)
    fp32 = export_checkpoint(model, out/'model.onnx')
    int8 = quantize(fp32, out/'model.int8.onnx', calib=calib)
    x = calib[:1]
    fns = {'torch': torch_fn(net), 'ort_fp32': onnx_fn(fp32, threads), 'ort_int8': onnx_fn(int8, threads)}
    t = time_interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, runs=50)
    r = {f'{k}_ms': float(np.median(v)) for k, v in t.items()}
    r.update(fp32_mb=fp32.stat().st_size/2**20, int8_mb=int8.stat().st_size/2**20,
             params=sum(p.numel() for p in net.parameters()), size=meta['size'])
    return r


def calib_items(name:str, n:int=32):
    "The data set and `n` labeled items (fixed draw) to calibrate int8 on."
    from smallwb.data import get_dataset
    ds = get_dataset(str(PHOTOS) if name == 'hymenoptera' else 'digits', verbose=False)
    return ds, np.random.default_rng(0).choice(np.flatnonzero(ds.labeled & (ds.splits != "test")), n, replace=False)


def measure(name:str) -> pd.DataFrame:
    "Latency of every distinct model seed 0's run handed on (cached in latency-<name>.csv)."
    f = HERE/f'latency-{name}.csv'
    models = [r['model'] for r in stage_rows(name, 0) if r['model'] and r['model'].endswith('.pth')]
    done = pd.read_csv(f) if f.exists() else pd.DataFrame(columns=['model'])
    items = None
    for m in dict.fromkeys(models):
        if (done.model == m).any(): continue
        items = calib_items(name) if items is None else items
        r = dict(model=m, **latencies(m, *items))
        print(f"{m}: {r}", flush=True)
        done = pd.concat([done, pd.DataFrame([r])], ignore_index=True)
        done.to_csv(f, index=False)
    return done


def fmt(v, f='{:.3f}'): return '–' if v is None or (isinstance(v, float) and np.isnan(v)) else f.format(v)


def section(name:str) -> list:
    runs = sorted(WORK.glob(f'{name}-s*/bench.json'))
    if not runs: return []
    rows = pd.DataFrame([r for p in runs for r in stage_rows(name, int(p.parent.name.split('-s')[-1]))])
    lat = pd.read_csv(HERE/f'latency-{name}.csv') if (HERE/f'latency-{name}.csv').exists() else pd.DataFrame(columns=['model'])
    bench = {p.parent.name: json.loads(p.read_text()) for p in runs}
    what = ("hymenoptera, 10 labels/class from `train/` (the rest of `train/` the pool), `val/` (153 photos) the test set"
            if name == 'hymenoptera' else 'digits at the demo\'s defaults (`make demo`)')
    out = [f'### {name}', '', f'Data: {what}. Runs: ' + '; '.join(
        f"{k} {v['seconds']/60:.1f} min{' (empty feature cache)' if v['fresh_cache'] else ''}, exit {v['rc']}"
        for k, v in bench.items()) + '.', '',
        '| stage | model it hands on (seed 0) | took | test accuracy (mean ± std) | seeds | parameters | fp32 MB | int8 MB '
        '| torch ms | ORT fp32 ms | ORT int8 ms |', '|---|---|---|---|---|---|---|---|---|---|---|']
    s0 = rows[rows.seed == 0].set_index('stage')
    for st in STAGES:
        r = rows[rows.stage == st]
        if not len(r): continue
        acc = r.accuracy.dropna().astype(float)
        m0 = s0.loc[st] if st in s0.index else None
        model = m0['model'] if m0 is not None and isinstance(m0['model'], str) else None
        L = lat[lat.model == model].iloc[0] if model is not None and (lat.model == model).any() else {}
        g = lambda k: L[k] if len(L) and k in L else None
        gave = (os.path.relpath(model, WORK/f'{name}-s0') if model else '–') + (f" ({m0['arch']})" if model and isinstance(m0['arch'], str) else '')
        took = m0['took'] if m0 is not None and isinstance(m0['took'], str) else '–'
        out.append(f"| {st} | {gave} | {took} | {fmt(acc.mean()) if len(acc) else '–'} ± {fmt(acc.std(ddof=0)) if len(acc) else '–'} "
                   f"| {len(acc)} | {fmt(g('params'), '{:,.0f}')} | {fmt(g('fp32_mb'), '{:.1f}')} | {fmt(g('int8_mb'), '{:.1f}')} "
                   f"| {fmt(g('torch_ms'), '{:.1f}')} | {fmt(g('ort_fp32_ms'), '{:.1f}')} | {fmt(g('ort_int8_ms'), '{:.1f}')} |")
    out += ['', 'The edge stage\'s own measurement of what it shipped (batch 1, its 2 threads; from `edge/metrics.json`; a run '
            'that shared the 2 cores with other benchmarks shows torch with 2 threads slowed by an order of magnitude, '
            'ORT much less):', '']
    for k in bench:
        f = WORK/k/'edge'/'metrics.json'
        if not f.exists(): continue
        m = json.loads(f.read_text())
        lat, sp = m.get('latency', {}).get('b1_ms', {}), m.get('latency', {}).get('int8_speedup_from_ms', {})
        ci = m.get('test_agreement_ci') or [float('nan')] * 2
        out.append(f"- {k}: shipped the {m.get('shipped')} as {m.get('engine')}; ORT int8 {lat.get('ORT int8', float('nan')):.1f} ms, "
                   f"ORT fp32 {lat.get('ORT fp32', float('nan')):.1f} ms, torch {lat.get('torch fp32', float('nan')):.1f} ms: "
                   f"int8 ×{sp.get('vs_ort_fp32_b1', float('nan')):.2f} vs ORT fp32 (target ≥ 1.6), "
                   f"×{sp.get('vs_torch_b1', float('nan')):.2f} vs torch (target ≥ 6); file {m.get('int8_size_ratio', float('nan')):.3f}× fp32 "
                   f"(target ≤ 0.3); accuracy drop {m.get('drop_points', float('nan')):+.2f} points (target ≤ 0.5); agreement with fp32 "
                   f"{m.get('test_agreement', float('nan')):.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f}). Why: {m.get('shipped_why', '')}")
    return out + ['']


def report():
    from smallwb.edge import cpu_info
    c = cpu_info()
    out = ['## The whole chain on real photos and on digits', '',
           'Command: `.venv/bin/python bench/chain_photos/run.py` (then `--report`). Every stage at its defaults; '
           'test accuracy is what each stage\'s `metrics.json` reports for the model it hands on (a stage that keeps the '
           'model it took reports that model). Latency: batch 1, 1 thread (the cores were shared with other benchmarks), p50 of 50 runs with torch eager, ORT fp32 '
           'and ORT int8 timed interleaved, for the models seed 0 handed on (int8 here: static QDQ on 32 labeled '
           'images, no nodes kept in float; the edge stage\'s own choice is in its metrics).', '',
           f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({c['cpu']}, VNNI: {c['vnni']}), no GPU.", '']
    for name in DATA: out += section(name)
    (HERE/'results.md').write_text('\n'.join(out), encoding='utf-8')
    print((HERE/'results.md').read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', nargs='+', default=list(DATA))
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--report', action='store_true', help='only write results.md from what has run')
    ap.add_argument('--skip-done', action='store_true', help='keep runs that finished before')
    a = ap.parse_args()
    if not a.report:
        for name in a.data:
            if name == 'hymenoptera' and not PHOTOS.exists(): sys.exit(f"{PHOTOS}: not found (the photo benchmark needs ../shared)")
            for i, s in enumerate(a.seeds):
                b = WORK/f'{name}-s{s}'/'bench.json'
                if a.skip_done and b.exists() and json.loads(b.read_text())['rc'] == 0: continue
                run_chain(name, s, fresh=(i == 0 and s == 0))
                report()
            measure(name)
    report()


if __name__ == '__main__': main()
