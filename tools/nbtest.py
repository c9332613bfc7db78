"""`nbdev_test`, keeping each executed notebook for the docs build.

`make test` runs the notebooks once. nbdev's own test runner executes them here (cells flagged with settings.ini
`tst_flags` skipped, `--n_workers` at a time), and this wrapper saves each notebook that passed, with its outputs,
where `tools/docs.py` looks for executed copies (`.cache/docs/exec/`, keyed by the notebook's cells and the
library's source). The docs test then renders them without running them a second time.

    python tools/nbtest.py [any nbdev_test arguments]
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import docs
from execnb.shell import CaptureShell
from execnb.nbio import read_nb, write_nb

_init, _run_all = CaptureShell.__init__, CaptureShell.run_all

def __init__(self, path=None, *args, **kwargs):
    _init(self, path, *args, **kwargs)
    self._sw_path = Path(path) if path else None

def run_all(self, nb, *args, **kwargs):
    "Run as nbdev_test does; when every cell passed, keep the executed copy for the docs."
    r = _run_all(self, nb, *args, **kwargs)
    if self.exc is None and getattr(self, '_sw_path', None) and self._sw_path.suffix == '.ipynb': keep(self._sw_path, nb)
    return r

def keep(fn:Path, ran):
    "Write the executed notebook `ran` of `fn` to the docs cache, under the key tools/docs.py computes."
    c = docs.cfg()
    if fn.resolve().parent != c['nbs'].resolve(): return
    key = docs.sha(docs.VERSION, docs.nb_cells_hash(fn), docs.lib_hash(c['lib']), ','.join(c['flags']), False)
    nb = read_nb(fn)
    for cell, done in zip(nb.cells, ran.cells):
        if cell.cell_type == 'code': cell.outputs = list(getattr(done, 'outputs', []) or [])
    d = docs.CACHE/'exec'; d.mkdir(parents=True, exist_ok=True)
    write_nb(nb, d/fn.name); (d/(fn.stem + '.key')).write_text(key)

CaptureShell.__init__, CaptureShell.run_all = __init__, run_all

if __name__ == '__main__':
    from nbdev.test import nbdev_test
    sys.argv[0] = 'nbdev_test'
    nbdev_test()
