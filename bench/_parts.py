"""Shared by the benchmark scripts: cached pieces of a benchmark, so that a killed run resumes where it stopped."""
import json, time
from pathlib import Path


def cached_part(work:Path, name:str, fn, fresh:bool=False) -> dict:
    "`fn()`'s dict, kept in `work/parts/<name>.json`: computed once (with its `seconds`), then read back."
    p = Path(work)/'parts'/f'{name}.json'
    if p.exists() and not fresh: return json.loads(p.read_text())
    t0 = time.time()
    out = fn()
    out['seconds'] = time.time() - t0
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, default=float))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {({k: v for k, v in out.items() if k != 'rows'})}", flush=True)
    return out
