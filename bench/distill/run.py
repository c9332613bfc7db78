"""Distillation benchmark on the built-in digits at 10 labels per class, 3 seeds, one fixed test set (half of digits).

Teacher: transfer's `auto` (the transfer stage's recipe: chosen by cross-validation on the labeled items), lite0 at 32px.
Student (a compact CNN at 16px, from scratch, same recipe each time): labels only; + KD on the labeled items;
+ KD on the labeled items and the teacher-labelled pool (soft pseudo-labels). Accuracy, parameters, batch-1 CPU latency.
Run: .venv/bin/python bench/distill/run.py [--epochs 30] [--seeds 0 1 2] [--student cnn]
"""
import argparse, os, platform, tempfile, time, warnings
from pathlib import Path
import numpy as np, pandas as pd, torch
warnings.filterwarnings('ignore')
from smallwb.core import FeatureCache, set_seed
from smallwb.data import digits, budget_split
from smallwb.transfer import BACKBONES, auto, candidates, save_model
from smallwb.distill import fit_student, load_teacher, teacher_logits, predict_logits, accuracy_of, n_params, cpu_latency_ms

HERE = Path(__file__).parent

def run_seed(ds, seed, args, tmp, cache):
    sp = budget_split(ds, 10, seed=seed); test = sp.test; y = ds.labels[test]
    t0 = time.time()
    model, recipe, _ = auto(ds, sp.labeled, 'lite0', 32, recipes=candidates('lite0', len(sp.labeled), flips=(False,)), seed=seed, cache=cache)
    spec = BACKBONES['lite0']; tp = save_model(tmp/f'teacher{seed}.pth', model, model.arch, ds.classes, 32, spec.mean, spec.std)
    rows = [dict(seed=seed, model=f'teacher ({recipe.name})', accuracy=accuracy_of(teacher_logits(tp, ds, test, cache), y), train_seconds=time.time() - t0)]
    tm, tmeta = load_teacher(tp, ds.classes)
    rows[0].update(params=n_params(tm), latency_ms=cpu_latency_ms(tm, 32, n=args.n_latency))
    variants = {'student, labels only': {}, 'student + KD': dict(teacher=tp),
                'student + KD + pseudo-labels': dict(teacher=tp, pool_idx=sp.pool, pseudo='soft')}
    for name, kw in variants.items():
        t0 = time.time()
        learn, info = fit_student(ds, sp.labeled, args.student, epochs=args.epochs, seed=seed, cache=cache, **kw)
        r = info['recipe']; m = learn.model.eval().cpu()
        rows.append(dict(seed=seed, model=name, accuracy=accuracy_of(predict_logits(m, ds, test, r['size'], r['mean'], r['std']), y),
                         params=n_params(m), latency_ms=cpu_latency_ms(m, r['size'], n=args.n_latency), train_seconds=time.time() - t0,
                         n_pseudo=info['n_pseudo'], pseudo_accuracy=info['pseudo_accuracy']))
        print(rows[-1], flush=True)
    print(rows[0], flush=True)
    return rows

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--epochs', type=int, default=30); ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--student', default='cnn'); ap.add_argument('--n_latency', type=int, default=100)
    args = ap.parse_args()
    ds = digits(); tmp = Path(tempfile.mkdtemp()); cache = FeatureCache()
    t0 = time.time()
    df = pd.DataFrame([r for s in args.seeds for r in run_seed(ds, s, args, tmp, cache)])
    df.to_csv(HERE/'results.csv', index=False)
    order = list(dict.fromkeys(df.model.str.replace(r'teacher \(.*\)', 'teacher', regex=True)))
    df['row'] = df.model.str.replace(r'teacher \(.*\)', 'teacher', regex=True)
    g = df.groupby('row', sort=False)
    t = g.agg(acc_mean=('accuracy', 'mean'), acc_std=('accuracy', 'std'), params=('params', 'median'), latency_ms=('latency_ms', 'median'),
              train_seconds=('train_seconds', 'mean'), n_pseudo=('n_pseudo', 'mean'), pseudo_accuracy=('pseudo_accuracy', 'mean')).loc[order]
    T, S, L, K = t.loc['teacher'], t.loc['student + KD + pseudo-labels'], t.loc['student, labels only'], t.loc['student + KD']
    recipes = ', '.join(df[df.row == 'teacher'].model.str.extract(r'\((.*)\)')[0])
    lines = ['## Distillation (digits, 10 labels per class)', '',
             f'Command: `.venv/bin/python bench/distill/run.py --epochs {args.epochs} --seeds {" ".join(map(str, args.seeds))} --student {args.student}` '
             f'({(time.time()-t0)/60:.1f} min). Machine: {os.cpu_count()} CPU cores, no GPU, {platform.processor() or platform.machine()}; shared with other jobs '
             f'(load average {os.getloadavg()[0]:.0f} at the end), so times are noisy. Latency: torch eager, batch 1, 1 thread, median of {args.n_latency} runs, each model at its own input size '
             f'(teacher 32px, student {16 if args.student.startswith("cnn") else 32}px). Test set: the fixed half of digits ({len(budget_split(ds, 10).test)} images), touched once per model.', '',
             f'Teacher: transfer `auto` on lite0 at 32px (recipe per seed: {recipes}). Student: `{args.student}` from scratch, {args.epochs} epochs, same recipe in every row; '
             f'KD alpha=0.7, T=4; pseudo-labels: the teacher\'s soft distribution on the whole unlabeled pool.', '',
             '| model | test accuracy (mean ± std, 3 seeds) | parameters | batch-1 CPU latency | train time | pool items used | their pseudo-label accuracy |', '|---|---|---|---|---|---|---|']
    for name, r in t.iterrows():
        lines.append(f"| {name} | {r.acc_mean:.3f} ± {r.acc_std:.3f} | {int(r.params):,} | {r.latency_ms:.2f} ms | {r.train_seconds:.0f} s | "
                     + (f"{r.n_pseudo:.0f} | {r.pseudo_accuracy:.3f} |" if r.n_pseudo == r.n_pseudo and r.n_pseudo > 0 else '– | – |'))
    pr, sp_, keep = T.params / S.params, T.latency_ms / S.latency_ms, S.acc_mean / T.acc_mean
    gain = (S.acc_mean - L.acc_mean) * 100
    ok = lambda b: 'met' if b else 'missed'
    lines += ['', 'Targets:',
              f'- Student ≥ 5× fewer parameters than the teacher: {ok(pr >= 5)} ({pr:.0f}×).',
              f'- Student ≥ 3× faster (batch-1 CPU): {ok(sp_ >= 3)} ({sp_:.1f}×).',
              f'- Student keeps ≥ 97% of the teacher\'s accuracy: {ok(keep >= 0.97)} ({keep*100:.1f}%; student + KD + pseudo-labels {S.acc_mean:.3f} vs teacher {T.acc_mean:.3f}).',
              f'- With pseudo-labels, ≥ +2 points over the student trained on labels alone: {ok(gain >= 2)} ({gain:+.1f} points; KD on the labeled items alone: {(K.acc_mean - L.acc_mean)*100:+.1f}).']
    (HERE/'results.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print('\n'.join(lines))

if __name__ == '__main__': main()
