"""Assemble BENCHMARKS.md from every bench/<name>/results.md (each written by its own bench/<name>/run.py)."""
from pathlib import Path

ORDER = ['photos', 'augment_ablation', 'distill', 'synth', 'active_budget', 'edge', 'chain_photos', 'sweep']

def main(root=Path(__file__).resolve().parent):
    found = {p.parent.name: p for p in root.glob('*/results.md')}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    out = ['# Benchmarks', '',
           'Every table below was produced by the command shown with it, on the project machine (2 CPU cores, no GPU)',
           'unless its section says otherwise. Each `bench/<name>/run.py` writes `bench/<name>/results.md`;',
           '`python bench/collect.py` assembles this file. Targets come from the issues; a missed target says by how much and why.', '']
    out += ['| benchmark | source |', '|---|---|'] + [f'| [{n}](#{n.replace("_", "-")}) | `bench/{n}/run.py` |' for n in names] + ['']
    for n in names:
        body = found[n].read_text(encoding='utf-8').strip()
        out += [f'<a id="{n.replace("_", "-")}"></a>', '', body, '']
    (root.parent/'BENCHMARKS.md').write_text('\n'.join(out), encoding='utf-8')
    print(f"BENCHMARKS.md: {len(names)} sections ({', '.join(names) or 'none yet'})")

if __name__ == '__main__': main()
