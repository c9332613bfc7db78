"""Sweep benchmark (issue 15): a 12-cell grid run one cell after another, by 2 local worker processes, and through a
2-worker dask.distributed LocalCluster; wall-clock speed-up (target >= 1.6x on 2 cores) and identical metrics.

The grid: labels_per_class 2,5,10 x transfer.strategy probe,auto x seed 0,1, each cell one
`smallwb run --stages transfer -p quick true -p data ...` (the real transfer stage, quick settings), on the built-in
digits (every mode) and on the real photos of ../shared/data/hymenoptera (one after another and 2 local workers: the
default against the baseline). One after another, a cell gets both cores (2 threads); two at a time, one each (the
sweep's default: cores over cells at once). A fourth mode on digits runs two at a time with 2 threads each (what
happens without the cap). Every mode starts from an empty feature cache of its own, so each does the same work. Modes
run in turn, in alternating order over rounds; the speed-up of each round is its own pair of wall-clock times, and the
tables show the median over rounds.

Resumable: each finished mode's timing is kept in bench/out/sweep/timings.json and not run again (`--fresh` forgets).

Run from the repository root:  .venv/bin/python bench/sweep/run.py [--rounds 1] [--data digits,photos]
(writes bench/sweep/results.md and its figures)
"""
import argparse, json, math, os, platform, shutil, statistics, sys, time
from pathlib import Path
from smallwb.core import read_json, write_json, stage_metrics, deterministic_metrics
from smallwb.sweep import sweep, results_table, write_results, cores

HERE, OUT = Path(__file__).resolve().parent, Path('bench/out/sweep').resolve()
PHOTOS = Path(__file__).resolve().parents[3]/'shared'/'data'/'hymenoptera'
GRID = {'labels_per_class': [2, 5, 10], 'transfer.strategy': ['probe', 'auto'], 'seed': [0, 1]}
STAGES = ['transfer']
BASE, PAR, DASK, UNCAPPED = ('one after another', '2 local workers', '2-worker LocalCluster',
                             '2 local workers, 2 threads each')
MODES = {BASE: dict(workers=1), PAR: dict(workers=2), DASK: dict(dask=2), UNCAPPED: dict(workers=2, threads=2)}
DATA = {'digits': ('digits', [BASE, PAR, DASK, UNCAPPED]),  # data set → (the `data` parameter, the modes run on it)
        'photos': (str(PHOTOS), [BASE, PAR])}
TARGET = 1.6


def load(): return f'{os.getloadavg()[0]:.1f}'


def run_mode(mode, key, grid, stages, params, log=print):
    "Run the grid in `mode` from an empty feature cache into its own sweep folder; its timing record."
    opts, d = dict(MODES[mode]), OUT/key
    shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(OUT/f'cache-{key}', ignore_errors=True)
    os.environ['SMALLWB_CACHE'] = str(OUT/f'cache-{key}')  # the cells (and a LocalCluster's workers) inherit it
    rec, t0 = {'load_start': load()}, time.time()
    if 'dask' in opts:
        from distributed import LocalCluster
        with LocalCluster(n_workers=opts['dask'], threads_per_worker=1, processes=True, host='127.0.0.1',
                          dashboard_address=None) as cluster:
            rec['cluster_start_seconds'] = time.time() - t0
            t0 = time.time()
            sweep(grid, stages, params, key, OUT, scheduler=cluster.scheduler_address, progress=False, log=log)
            rec['wall_seconds'] = time.time() - t0
    else:
        sweep(grid, stages, params, key, OUT, workers=opts['workers'], threads=opts.get('threads'), progress=False,
              log=log)
        rec['wall_seconds'] = time.time() - t0
    info = read_json(d/'sweep.json')
    rec.update(load_end=load(), cells=len(info['cells']), done=sum(c['status'] == 'done' for c in info['cells']),
               mean_cell_seconds=statistics.mean(c['cell_seconds'] for c in info['cells']),
               threads=sorted({str(c['threads']) for c in info['cells']}), executor=info['executor'])
    return rec


def metrics(key, stages):
    "Cell → stage → metrics without timings, for one mode's sweep."
    d = OUT/key
    return {c['name']: {s: deterministic_metrics(stage_metrics(d/'runs'/c['name'], s)) for s in stages}
            for c in read_json(d/'sweep.json')['cells']}


def differences(a, b) -> list:
    "The (cell, stage, metric) entries whose values differ between two modes."
    out = []
    for c in a:
        for s in a[c]:
            ma, mb = a[c][s] or {}, (b.get(c) or {}).get(s) or {}
            out += [(c, s, k) for k in sorted(set(ma) | set(mb)) if ma.get(k) != mb.get(k)]
    return out


def cpu_model() -> str:
    try: return next(l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name'))
    except (OSError, StopIteration): return platform.processor() or 'unknown CPU'


def slug(mode): return mode.replace(' ', '-').replace(',', '')


def key(data, mode, r): return f'{data}-{slug(mode)}-r{r}'


def speedup(times, data, mode, rounds) -> float:
    "The median over rounds of each round's wall time one after another over the mode's."
    return statistics.median(times[key(data, BASE, r)]['wall_seconds'] / times[key(data, mode, r)]['wall_seconds']
                             for r in range(rounds))


def table(times, data, modes, rounds, stages):
    "Rows of one data set's table: median wall time and speed-up over rounds, per mode."
    rows = ['| mode | cells at once | threads per cell | wall s (median) | speed-up vs one after another '
            '| mean cell s | load average (start → end) | metrics vs one after another |', '|' + '---|' * 8]
    ref = metrics(key(data, BASE, 0), stages)
    for m in modes:
        recs = [times[key(data, m, r)] for r in range(rounds)]
        diff = differences(ref, metrics(key(data, m, 0), stages))
        same = 'identical' if not diff else f'{len(diff)} values differ (e.g. {diff[0]})'
        at_once = MODES[m].get('workers') or MODES[m].get('dask')
        rows.append(f"| {m} | {at_once} | {', '.join(recs[0]['threads'])} | "
                    f"{statistics.median(r['wall_seconds'] for r in recs):.0f} | "
                    f"×{speedup(times, data, m, rounds):.2f} | "
                    f"{statistics.median(r['mean_cell_seconds'] for r in recs):.0f} | "
                    + '; '.join(f"{r['load_start']} → {r['load_end']}" for r in recs) + f" | {same} |")
    return rows


def run_all(times, tp, names, rounds, grid, stages, smoke):
    "Run every mode of every data set (alternating the order over rounds), keeping each timing as it comes."
    for name in names:
        data, modes = DATA[name]
        params = {'quick': True, 'data': data}
        for r in range(rounds):
            for m in (modes if r % 2 == 0 else modes[::-1]):
                k = key(name, m, r)
                if k in times:
                    print(f'{k}: kept from an earlier run ({times[k]["wall_seconds"]:.0f} s)')
                    continue
                print(f'{k}: running (load average {load()})', flush=True)
                times[k] = run_mode(m, k, grid, stages, params, log=lambda s: print('   ', s, flush=True))
                write_json(tp, times)
                print(f'{k}: {times[k]["wall_seconds"]:.0f} s', flush=True)


def section(times, name, rounds, stages, dest) -> list:
    "The results of one data set: its table, the LocalCluster's start-up, the target, the figures and cells."
    data, modes = DATA[name]
    seq = OUT/key(name, BASE, 0)
    write_results(seq, target=0.8)
    for f in ('accuracy_vs_labels', 'labels_to_target'):
        if (seq/f'{f}.png').exists(): shutil.copy(seq/f'{f}.png', dest/f'{name}_{f}.png')
    what = 'the built-in digits' if name == 'digits' else f'the real photos of `{PHOTOS.name}` (train/ and val/)'
    lines = [f'## {name}', '', f"Each cell: `smallwb run --stages {','.join(stages)} -p quick true -p data "
             f"{Path(data).name}` on "
             f"{what}.", ''] + table(times, name, modes, rounds, stages) + ['']
    dask = [times[key(name, DASK, r)] for r in range(rounds)] if DASK in modes else []
    if dask: lines += [f"The LocalCluster took {statistics.median(t['cluster_start_seconds'] for t in dask):.1f} s to "
                       "start (not in its wall time: a cluster a sweep is sent to is already up).", '']
    up = speedup(times, name, PAR, rounds)
    same = not differences(metrics(seq.name, stages), metrics(key(name, PAR, 0), stages))
    lines += [f"- 2 local workers vs one after another: ×{up:.2f} (target ≥ ×{TARGET}): "
              + ('met' if up >= TARGET else f'MISSED by {TARGET - up:.2f}×'),
              f"- metrics of every cell identical between the two (timings aside): {'yes' if same else 'NO'}", '']
    res = results_table(seq)
    lines += [f'![accuracy vs labels]({name}_accuracy_vs_labels.png)', '',
              f'![labels to target]({name}_labels_to_target.png)', '']
    if 'transfer.accuracy' in res:
        lines += ['| cell | transfer accuracy |', '|---|---|']
        lines += [f"| {c} | {v:.4f} |" for c, v in zip(res['cell'], res['transfer.accuracy'])] + ['']
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=1, help='rounds over the modes (order alternating)')
    ap.add_argument('--data', default='digits,photos', help='comma-separated data sets: digits, photos')
    ap.add_argument('--fresh', action='store_true', help='forget the timings of earlier runs')
    ap.add_argument('--smoke', action='store_true', help='two cells of the data stage on digits: to try the script')
    a = ap.parse_args()
    names = [n for n in a.data.split(',') if n and (n != 'photos' or PHOTOS.is_dir())]
    if 'photos' in a.data and 'photos' not in names: print(f'photos skipped: {PHOTOS} is not there')
    grid, stages = ({'labels_per_class': [2, 3]}, ['data']) if a.smoke else (GRID, STAGES)
    OUT.mkdir(parents=True, exist_ok=True)
    tp = OUT/('timings-smoke.json' if a.smoke else 'timings.json')
    times = {} if a.fresh or not tp.exists() else read_json(tp)
    t_all = time.time()
    run_all(times, tp, names, a.rounds, grid, stages, a.smoke)
    dest = OUT/'smoke' if a.smoke else HERE
    dest.mkdir(exist_ok=True)
    lines = ['# Sweep: a 12-cell grid on 2 local workers, one after another, and on a 2-worker Dask LocalCluster', '',
             f"Command: `.venv/bin/python bench/sweep/run.py --rounds {a.rounds} --data {','.join(names)}` "
             f"({sum(t['wall_seconds'] for t in times.values())/60:.0f} min of sweeps).", '',
             f"Machine: {cpu_model()}, {cores()} cores usable, Python {platform.python_version()}. "
             "The machine is shared "
             "with other engineers' jobs: the load average at the start and end of each mode is in the tables (2.0 "
             "means both cores busy before the sweep adds its own work).", '',
             "Grid: " + ' × '.join(f"`{k}` {', '.join(map(str, v))}" for k, v in grid.items()) +
             f" = {math.prod(map(len, grid.values()))} cells, each one `smallwb run` (its own process, parameter and "
             "data checks, a papermill kernel, the "
             "real stage). One after another a cell gets both cores (2 threads), two at a time one each (the "
             "sweep's default: cores over cells at once); the last mode leaves each of two cells 2 threads. Each mode "
             "starts from an empty feature cache of its own, so each does the same work; the cells' threads are "
             "capped through OMP_NUM_THREADS & co. (torch in the kernel reports them: tests/test_sweep.py). Modes "
             "run in turn; with several rounds the order alternates and each round's speed-up is its own pair.", '']
    for name in names: lines += section(times, name, a.rounds, stages, dest)
    (dest/'results.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print(f"{dest/'results.md'} written ({(time.time() - t_all)/60:.1f} min)")


if __name__ == '__main__': main()
