"""Synthetic-data benchmark on the built-in digits at 5 labels per class, 3 seeds, one fixed test set (half of digits).

Real only vs real + simulated (domain-randomized rendered digits) vs real + generated (conditional VAE fitted to the
labeled items), at 1 and 4 synthetic images per real one; the same student recipe (compact CNN, 16px, from scratch,
the same number of optimizer steps) for every mix. Reports accuracy and the gain over real only, in points.
Run: .venv/bin/python bench/synth/run.py [--steps 300] [--seeds 0 1 2]
"""
import argparse, os, platform, time, warnings
from pathlib import Path
import numpy as np, pandas as pd
warnings.filterwarnings('ignore')
from smallwb.data import digits, budget_split
from smallwb.synth import render_digits, fit_cvae, sample_cvae, evaluate_synthetic, verdict

HERE = Path(__file__).parent

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--steps', type=int, default=300); ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    ap.add_argument('--ratios', type=float, nargs='+', default=[0, 1, 4]); ap.add_argument('--lpc', type=int, default=5)
    args = ap.parse_args(); t0 = time.time(); ds = digits(); n_per = int(np.ceil(max(args.ratios) * args.lpc)); rows = []
    for seed in args.seeds:
        sp = budget_split(ds, args.lpc, seed=seed)
        vae = fit_cvae(ds, sp.labeled, seed=seed)
        for name, (x, y) in {'simulated': render_digits(n_per, seed=seed), 'generated': sample_cvae(vae, n_per, seed=seed)}.items():
            df = evaluate_synthetic(ds, sp, x, y, ratios=args.ratios if name == 'simulated' else [r for r in args.ratios if r], seeds=[seed], steps=args.steps)
            rows.append(df.assign(source=name)); print(df.assign(source=name).to_string(index=False), flush=True)
    df = pd.concat(rows)
    base = df[df.ratio == 0].set_index('seed').accuracy
    df['gain_points'] = (df.accuracy - df.seed.map(base)) * 100
    df.to_csv(HERE/'results.csv', index=False)
    lines = [f'## Synthetic data (digits, {args.lpc} labels per class)', '',
             f'Command: `.venv/bin/python bench/synth/run.py --steps {args.steps} --seeds {" ".join(map(str, args.seeds))}` ({(time.time()-t0)/60:.1f} min). '
             f'Machine: {os.cpu_count()} CPU cores, no GPU; shared with other jobs (load average {os.getloadavg()[0]:.0f} at the end). '
             f'Test set: the fixed half of digits ({len(budget_split(ds, args.lpc).test)} images). Recipe: compact CNN student at 16px from scratch, '
             f'{args.steps} optimizer steps of batch 32 for every mix (so a larger training set is not simply more training). '
             'Simulated: glyphs of 17 matplotlib fonts, domain-randomized (font, stroke, rotation, shear, scale, aspect, position, blur, background, contrast, noise), '
             'block-averaged to 8×8 on the 0..16 grid like sklearn digits. Generated: a conditional VAE (MLP, z=8) fitted to the labeled items only.', '',
             '| training data | synthetic per real | test accuracy (mean ± std) | gain over real only (points, mean; min..max over seeds) |', '|---|---|---|---|']
    b = df[df.ratio == 0]
    lines.append(f'| real only ({args.lpc * 10} images) | 0 | {b.accuracy.mean():.3f} ± {b.accuracy.std():.3f} | – |')
    for (src, r), g in df[df.ratio > 0].groupby(['source', 'ratio'], sort=False):
        lines.append(f'| real + {src} | {r:g} | {g.accuracy.mean():.3f} ± {g.accuracy.std():.3f} | {g.gain_points.mean():+.1f} ({g.gain_points.min():+.1f}..{g.gain_points.max():+.1f}) |')
    lines += ['', 'Verdict (at the pre-declared ratio of 1 synthetic image per real one; "helped" needs a mean gain ≥ +1 point and a gain in every seed):']
    lines += [f'- {verdict(df[df.source == s], "real + " + s)}.' for s in ('simulated', 'generated')]
    best = df[df.ratio > 0].groupby(['source', 'ratio']).gain_points.mean()
    lines += [f'- Best mix over all ratios (read off the test set, so not a choice to ship on): {best.idxmax()[0]} at {best.idxmax()[1]:g}×, {best.max():+.1f} points.']
    (HERE/'results.md').write_text('\n'.join(lines) + '\n', encoding='utf-8')
    print('\n'.join(lines))

if __name__ == '__main__': main()
