"""Build the docs offline: nbs/ executed (cached) → nbdev's processors (`show_doc` tables) → Sphinx + myst-nb → `_docs/`.

Quarto (what `nbdev_docs` uses) cannot be installed offline, so this renders the same notebooks with Sphinx:

1. **execute**: each `nbs/*.ipynb` runs the way `nbdev_test` runs it (cells flagged with settings.ini `tst_flags`
   or `#| eval: false` skipped, notebooks with `skip_exec: true` not run), in parallel subprocesses with a
   timeout; the executed copy is cached under `.cache/docs/exec/`, keyed by the notebook's cells and the
   library's source, so only changed notebooks run again.
2. **process**: nbdev's own processors (what `nbdev_proc_nbs` applies before quarto) turn each executed notebook
   into a page: front matter, `#| hide`/`#| export` cells dropped, a `show_doc` entry for every exported name,
   backticked names linked. `show_doc` entries get a parameter table from docments (`DocmentTbl`).
3. **convert**: the processed notebooks become myst-nb pages: `show_doc` outputs become markdown sections with a
   label per API entry (`smallwb.core.Stage`), nbdev's links to those entries become cross-references that
   `sphinx-build -W` checks, `.html` links to pages become page links.
4. **render**: `sphinx-build -W` with sphinx-book-theme (search box, sidebar with every page) into `_docs/`,
   then a check that every internal link and anchor in `_docs/` resolves.

Experiment notebooks (`experiments/`) are pages too: with the outputs of `runs/demo/` when `make demo` has run.

    python tools/docs.py [--timeout 300] [--workers 2] [--run demo] [--allow-errors]
"""
from __future__ import annotations
import argparse, hashlib, json, os, re, shutil, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urldefrag, urlparse

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT/'.cache'/'docs'
VERSION = '4'  # bump to invalidate every cached page
PLOT_HINTS = re.compile(r'\b(plt\.|show_images|show_dataset|show_batch|\.plot\(|imshow|subplots|show_results|plot_)')


class DocsError(Exception): "A docs build failure; the message names the notebook or page and what to do."


def cfg():
    "settings.ini values the build needs."
    from nbdev.config import get_config
    c = get_config(path=ROOT)
    return dict(lib=c.lib_name, title=c.get('title', c.lib_name), description=c.get('description', ''),
                flags=c.get('tst_flags', '').split(), doc_url=f"{c.doc_host}{c.doc_baseurl}".rstrip('/') + '/',
                doc_path=ROOT/c.get('doc_path', '_docs'), nbs=ROOT/c.get('nbs_path', 'nbs'), git_url=c.get('git_url', ''), branch=c.get('branch', 'main'))

def sha(*parts) -> str:
    h = hashlib.sha256()
    for p in parts: h.update(p if isinstance(p, bytes) else str(p).encode()); h.update(b'\0')
    return h.hexdigest()[:16]

def lib_hash(lib) -> str:
    return sha(*(p.read_bytes() for p in sorted((ROOT/lib).glob('*.py'))))

def nb_cells_hash(path) -> str:
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    return sha(json.dumps([(c['cell_type'], ''.join(c['source'])) for c in nb['cells']]), json.dumps(nb.get('metadata', {}).get('kernelspec', {})))

def write_if_changed(path: Path, text: str):
    "Write only when the text differs, so Sphinx's incremental build sees unchanged pages as unchanged."
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding='utf-8') != text: path.write_text(text, encoding='utf-8')

# ---------------------------------------------------------------- 1. execute
def _exec_one(src, dst, flags, allow_errors):
    "Child process: run `src` like nbdev_test does (flagged cells skipped) and write it, with outputs, to `dst`."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor, extract_directives
    from nbdev.frontmatter import FrontmatterProc
    os.environ['IN_TEST'] = '1'
    src, dst, flags = Path(src), Path(dst), set(flags.split(',')) - {''}
    fm = getattr(NBProcessor(src, procs=FrontmatterProc, process=True).nb, 'frontmatter_', {})
    nb = read_nb(src)
    for c in nb.cells:
        if c.cell_type == 'code': c.outputs = []
    if str(fm.get('skip_exec', '')).lower() not in ('true', '1', 'yes'):
        direcs = [extract_directives(c, remove=False) if c.cell_type == 'code' else {} for c in nb.cells]
        skip = {id(c) for c, d in zip(nb.cells, direcs)
                if c.cell_type != 'code' or (d.get('eval:', [''])[0].lower() == 'false') or (flags & d.keys()) or 'nbdev_export(' in c.source}
        k = CaptureShell(src)
        try:
            with working_directory(src.parent): k.run_all(nb, exc_stop=not allow_errors, preproc=lambda c: id(c) in skip)
        except BaseException:
            sys.stderr.write(k.prettytb(fname=src) + '\n'); sys.exit(3)
    write_nb(nb, dst)

def execute(nbs, flags, lib, timeout, workers, allow_errors) -> dict:
    "Executed copies of `nbs` under .cache/docs/exec (cached by content); returns {notebook: executed path}."
    out, todo = {}, []
    (CACHE/'exec').mkdir(parents=True, exist_ok=True)
    lh = lib_hash(lib)
    for nb in nbs:
        key = sha(VERSION, nb_cells_hash(nb), lh, ','.join(flags), allow_errors)
        dst, kf = CACHE/'exec'/nb.name, CACHE/'exec'/(nb.stem + '.key')
        out[nb] = dst
        if not (dst.exists() and kf.exists() and kf.read_text() == key): todo.append((nb, dst, kf, key))
    def run(item):
        nb, dst, kf, key = item
        t = time.time()
        cmd = [sys.executable, __file__, '_exec', str(nb), str(dst), ','.join(flags)] + (['--allow-errors'] if allow_errors else [])
        try: r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"{nb.relative_to(ROOT)}: still running after {timeout} s (flag long cells `#| slow`, or pass --timeout)"
        if r.returncode:
            err = r.stderr if len(r.stderr) < 5000 else r.stderr[:1500] + '\n[...]\n' + r.stderr[-3000:]
            return f"{nb.relative_to(ROOT)}: a cell failed while executing for the docs (it runs like nbdev_test; --allow-errors renders it anyway):\n{err}"
        kf.write_text(key)
        print(f"  executed {nb.relative_to(ROOT)} in {time.time()-t:.0f} s", flush=True)
    if todo: print(f"executing {len(todo)} notebook(s), {workers} at a time ({len(nbs)-len(todo)} cached)", flush=True)
    with ThreadPoolExecutor(workers) as ex: errs = [e for e in ex.map(run, todo) if e]
    if errs: raise DocsError('\n\n'.join(errs))
    return out

# ---------------------------------------------------------------- 2. process (nbdev's processors)
def _lib_twin(sym):
    "The library's own object for a `sym` that nbdev re-defined in its shell (its annotations may not resolve there)."
    import importlib
    lib = cfg()['lib']
    for mod in importlib.import_module(f'{lib}._modidx').d['syms']:
        o = getattr(importlib.import_module(mod), getattr(sym, '__name__', ''), None)
        if o is not None and getattr(o, '__doc__', None) == getattr(sym, '__doc__', None): return o

def _table_renderer():
    "Make nbdev's `show_doc` append a docments parameter table (`DocmentTbl`) to its signature."
    from fastcore.docments import DocmentTbl
    from nbdev import showdoc
    base = showdoc.BasicMarkdownRenderer._repr_markdown_
    if getattr(base, '_sw_table', False): return
    def _repr_markdown_(self):
        md = base(self)
        for sym in (self.sym, _lib_twin(self.sym)):  # the shell's copy may have no source for docments to read
            try: tbl = DocmentTbl(sym)
            except Exception: continue
            if tbl.has_docment: return md + '\n\n' + tbl._repr_markdown_()
        return md
    _repr_markdown_._sw_table = True
    showdoc.BasicMarkdownRenderer._repr_markdown_ = _repr_markdown_

def _imports_only_showdoc_exec():
    """nbdev re-runs every cell that imports, to render `show_doc`; run only the cell's import statements (so an example
    that also imports is not executed a second time)."""
    import ast, warnings
    from fastcore.basics import str2bool
    from nbdev import processors as P
    if getattr(P.exec_show_docs.__call__, '_sw', False): return
    def __call__(self, cell):
        if not self.nb.has_docs_ or not hasattr(self, 'k'): return
        fm = getattr(self.nb, 'frontmatter_', {})
        if str2bool(fm.get('skip_showdoc', False)): return
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)
            if not P._do_eval(cell): return
        trees = cell.parsed_()
        if (cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}) or P._show_docs(trees): self.k.cell(cell)
        else: self.k.run_cell('\n'.join(ast.unparse(n) for n in trees if isinstance(n, (ast.Import, ast.ImportFrom))))
        if self.k.exc: raise Exception(f"Error in cell {cell.idx_}:\n{cell.source}") from self.k.exc
    __call__._sw = True
    P.exec_show_docs.__call__ = __call__

def process(executed: dict) -> dict:
    "nbdev's doc processors over each executed notebook, cached beside it; returns {notebook: processed path}."
    from nbdev.serve_drv import exec_nb
    from nbdev.processors import FilterDefaults
    _table_renderer(); _imports_only_showdoc_exec()
    out = {}
    (CACHE/'proc').mkdir(parents=True, exist_ok=True)
    for nb, ex in executed.items():
        dst, kf = CACHE/'proc'/nb.name, CACHE/'proc'/(nb.stem + '.key')
        key = sha(VERSION, ex.read_bytes())
        if not (dst.exists() and kf.exists() and kf.read_text() == key):
            os.environ['IN_TEST'] = '1'
            try: exec_nb(ex, dst, FilterDefaults)
            except Exception as e: raise DocsError(f"{nb.relative_to(ROOT)}: nbdev's processors failed: {e}") from e
            finally: os.environ.pop('IN_TEST', None)
            kf.write_text(key)
        out[nb] = dst
    return out

# ---------------------------------------------------------------- 3. convert to myst-nb pages
def front_matter(cells):
    "Title, description and output file from the processed notebook's YAML front matter (nbdev writes it)."
    import yaml
    if cells and cells[0]['cell_type'] == 'raw' and text(cells[0]['source']).lstrip().startswith('---'):
        fm = yaml.safe_load(text(cells[0]['source']).strip().strip('-')) or {}
        return fm, cells[1:]
    return {}, cells

def directives(src: str):
    "Quarto-style `#| key: value` lines → dict, and the source without them."
    d, keep = {}, []
    for l in src.splitlines():
        m = re.match(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*)$', l)
        if m: d[m.group(1)] = m.group(2).strip()
        else: keep.append(l)
    return d, '\n'.join(keep).strip('\n')

def text(o) -> str: return o if isinstance(o, str) else ''.join(o)

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp')

class Linker:
    "Rewrites nbdev's doc links (`{doc_url}core.html#stage`) and page links (`core.html`) for Sphinx."
    def __init__(self, lib, doc_url, pages, aliases=None, git_url='', branch='main'):
        import importlib
        self.git_url, self.branch = git_url.rstrip('/'), branch
        self.doc_url, self.pages, self.aliases, self.entries = doc_url, pages, aliases or {}, set()
        self.assets = {}  # repository images the pages show (e.g. ../docs/img/*.png): copied into the site
        idx = importlib.import_module(f'{lib}._modidx').d['syms']
        self.by_url = {rel: sym for mod in idx.values() for sym, (rel, _) in mod.items()}
        self.syms = set(self.by_url.values())
    def target(self, sym):
        "The label for `sym`'s API entry, else its class's, else None."
        while sym.count('.') >= 2:
            if sym in self.entries: return sym
            sym = sym.rsplit('.', 1)[0]
    def url(self, url: str, prefix: str = '') -> str | None:
        "The Sphinx link for `url`, or None to leave it alone."
        rel = url[len(self.doc_url):] if url.startswith(self.doc_url) else url
        if re.match(r'^[a-z]+:', rel) or rel.startswith(('#', '/')): return None
        if rel in self.by_url:
            t = self.target(self.by_url[rel])
            if t: return f'#{t}'
        page, _, frag = rel.partition('#')
        page = page.removesuffix('.html').removesuffix('.ipynb').removesuffix('.md')
        for name in (prefix + page, page, self.aliases.get(page), self.aliases.get(prefix + page)):
            if name in self.pages: return f'/{name}.ipynb'
        base = ROOT/('experiments' if prefix else 'nbs')
        f = (base/rel.partition('#')[0]).resolve()
        if f.is_relative_to(ROOT) and f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:  # an image elsewhere in the repository
            dst = Path('repo_assets')/f.relative_to(ROOT); self.assets[dst] = f
            return '../'*prefix.count('/') + dst.as_posix()
        if self.git_url and f.is_relative_to(ROOT) and f.exists() and not rel.endswith('.html'):  # a repository file, e.g. ../DEVELOPING.md
            return f"{self.git_url}/blob/{self.branch}/{f.relative_to(ROOT)}" + (f'#{frag}' if frag else '')
        return None
    def markdown(self, md: str, prefix: str = '') -> str:
        def sub(m):
            new = self.url(m.group(2), prefix)
            return m.group(0) if new is None else f'{m.group(1)}({new})'
        return re.sub(r'(\[[^\]]*\])\(([^)\s]+)\)', sub, md)

CALLOUTS = {'note': 'note', 'tip': 'tip', 'warning': 'warning', 'important': 'important', 'caution': 'caution'}
def quarto_md(md: str) -> str:
    "Quarto-only markdown → MyST: callouts become admonitions, `{target=...}` link attributes go."
    md = re.sub(r'^:::\s*\{\.callout-(\w+)[^}]*\}', lambda m: f":::{{{CALLOUTS.get(m.group(1), 'note')}}}", md, flags=re.M)
    return re.sub(r'\)\{[^}\n]*\}', ')', md)

def api_entry(md: str, module: str, linker: Linker, page: str) -> tuple[str, str | None]:
    "A `show_doc` markdown output → a MyST section with a label (only on the symbol's own page); returns (md, label)."
    md = re.sub(r'^\s*---\s*\n', '', md)
    src = re.search(r'\[source\]\(([^)]+)\)(\{[^}]*\})?\s*\n', md)
    if src: md = md.replace(src.group(0), '')
    m = re.search(r'^(#+) (.+)$', md, re.M)
    label = None
    if m:
        name = m.group(2).strip()
        sym = f'{module}.{name}' if module else None
        extra = f'\n\n<a class="sw-source reference external" href="{src.group(1)}" target="_blank">[source]</a>' if src else ''
        head = f'{m.group(1)} {name}{extra}'
        if sym and sym not in linker.entries and sym in linker.syms:
            linker.entries.add(sym); label = sym
            head = f'({sym})=\n{head}'
        md = md[:m.start()] + head + md[m.end():]
    return md.strip() + '\n', label

def md_cell(src): return {'cell_type': 'markdown', 'metadata': {}, 'source': src}

def is_widget(o): return 'application/vnd.jupyter.widget-view+json' in o.get('data', {})

def convert(nb: dict, page: str, linker: Linker, module: str | None, prefix: str = '', note: str = '') -> tuple[dict, dict]:
    "A processed notebook → (myst-nb notebook, page facts for the manifest)."
    fm, cells = front_matter(nb['cells'])
    title, desc = fm.get('title'), fm.get('description', '')
    out, labels, figures, plots = [], [], 0, 0
    for c in cells:
        c = dict(c); src = text(c.get('source', ''))
        if c['cell_type'] == 'raw': continue
        if c['cell_type'] == 'markdown':
            if src.strip().startswith('<!-- WARNING'): continue
            if title is None and (m := re.match(r'^#\s+(.+)\n*(?:>\s*(.+))?', src)):
                title, desc = m.group(1).strip(), (m.group(2) or '').strip(); src = src[m.end():].strip()
                if not src: continue
            out.append(md_cell(quarto_md(src))); continue
        d, code = directives(src)
        if d.get('include') == 'false': continue
        outputs = [o for o in c.get('outputs', []) if not is_widget(o)]
        if len(outputs) < len(c.get('outputs', [])):
            outputs.append({'output_type': 'stream', 'name': 'stdout', 'text': '(an interactive widget: open the notebook in Jupyter to use it)\n'})
        if d.get('output') == 'asis':
            md = ''.join(text(o.get('data', {}).get('text/markdown', '')) for o in outputs)
            if 'show_doc' in code and md:
                md, label = api_entry(md, module, linker, page)
                if label: labels.append(label)
            if md.strip(): out.append(md_cell(quarto_md(md)))
            continue
        tags = [t for t in c.get('metadata', {}).get('tags', []) if t not in ('parameters', 'injected-parameters')]
        if d.get('echo') == 'false': tags.append('remove-input')
        if d.get('output') == 'false': outputs, tags = [], tags + ['remove-output']
        if not code.strip() and not outputs: continue
        figures += sum('image/png' in o.get('data', {}) or 'image/svg+xml' in o.get('data', {}) for o in outputs)
        plots += bool(PLOT_HINTS.search(re.sub(r'^\s*(from|import)\s.*$', '', code, flags=re.M)))
        for o in outputs:
            if 'data' in o: o['data'] = {k: v for k, v in o['data'].items() if not k.startswith('application/vnd.jupyter')}
        out.append({'cell_type': 'code', 'metadata': {'tags': tags} if tags else {}, 'source': code,
                    'outputs': outputs, 'execution_count': c.get('execution_count')})
    title = title or page
    head = f'# {title}\n\n' + (f'<p class="sw-lead">{desc}</p>\n' if desc else '') + (f'\n{note}\n' if note else '')
    nbo = {'cells': [md_cell(head)] + out, 'nbformat': 4, 'nbformat_minor': 5,
           'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                        'language_info': {'name': 'python', 'pygments_lexer': 'ipython3'}}}
    return nbo, dict(page=page, title=title, module=module, api=labels, figures=figures, plot_cells=plots)

# ---------------------------------------------------------------- pages
def page_name(nb: Path) -> tuple[str, str | None]:
    "Page name (nbdev's output file: the module name for `#| default_exp core`) and the module it documents."
    src = nb.read_text(encoding='utf-8')
    m = re.search(r'#\|\s*default_exp\s+([\w.]+)', src)
    if m: return m.group(1), None
    return re.sub(r'^\d+[a-z]?_', '', nb.stem) if nb.stem != 'index' else 'index', None

def experiment_pages(run_dir: Path, exps: list[Path]) -> list[tuple[Path, str, str]]:
    "(notebook to render, page name, note) per experiment: the executed copy from `run_dir` when one exists."
    res = []
    for e in exps:
        stage = re.sub(r'^\d+_', '', e.stem)
        ran = run_dir/f'{stage}.ipynb'
        if ran.exists(): res.append((ran, f'experiments/{e.stem}', f'*Outputs from the run in `{run_dir.relative_to(ROOT)}/`. Source: `experiments/{e.name}`.*'))
        else: res.append((e, f'experiments/{e.stem}', f'*Not run yet, so no results here: `make demo` runs the chain into `runs/demo/`, and the next `make docs` shows its outputs. Source: `experiments/{e.name}`.*'))
    return res

def index_page(c, modules, others, exps) -> str:
    "The hidden toctrees (the sidebar): tutorial pages, one entry per module, the experiments."
    def toc(caption, names): return f'```{{toctree}}\n:hidden:\n:caption: {caption}\n\n' + '\n'.join(names) + '\n```\n' if names else ''
    return toc('Guides', others) + toc('Modules', modules) + toc('Experiments', exps)

def build_sources(args) -> list[dict]:
    "Write the Sphinx source tree under .cache/docs/src; returns the manifest (one dict per page)."
    c = cfg()
    nbs = sorted(p for p in c['nbs'].glob('*.ipynb') if not p.name.startswith(('_', '.')))
    if args.only: nbs = [p for p in nbs if p.stem == 'index' or any(fnmatch(p.name, g) for g in args.only.split(','))]
    executed = execute(nbs, c['flags'], c['lib'], args.timeout, args.workers, args.allow_errors)
    t = time.time()
    processed = process(executed)
    print(f"processed {len(processed)} notebook(s) with nbdev in {time.time()-t:.0f} s", flush=True)
    exps = experiment_pages(ROOT/'runs'/args.run, sorted((ROOT/'experiments').glob('[0-9][0-9]_*.ipynb')))
    names = {nb: page_name(nb)[0] for nb in nbs}
    mods = {nb: re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text(encoding='utf-8')) for nb in nbs}
    pages = set(names.values()) | {p for _, p, _ in exps} | {'index'}
    aliases = {nb.stem: names[nb] for nb in nbs}  # links as written in Jupyter: `01_data.ipynb`, `../experiments/00_data.ipynb`
    aliases.update({f'../{p}': p for _, p, _ in exps}); aliases.update({f'experiments/../nbs/{nb.stem}': names[nb] for nb in nbs})
    aliases.update({f'experiments/../../nbs/{nb.stem}': names[nb] for nb in nbs})
    linker = Linker(c['lib'], c['doc_url'], pages, aliases, c['git_url'], c['branch'])
    src_dir = CACHE/'src'
    written, manifest = set(), []
    for nb in nbs:  # modules first so their API entries exist before other pages link to them
        m = mods[nb]
        nbo, facts = convert(json.loads(processed[nb].read_text(encoding='utf-8')), names[nb], linker,
                             f"{c['lib']}.{m.group(1)}" if m else None)
        facts.update(kind='module' if m else ('index' if names[nb] == 'index' else 'guide'), source=str(nb.relative_to(ROOT)))
        manifest.append((nbo, facts))
    for path, page, note in exps:
        nbo, facts = convert(json.loads(path.read_text(encoding='utf-8')), page, linker, None, prefix='experiments/', note=note)
        facts.update(kind='experiment', source=str(path.relative_to(ROOT)))
        manifest.append((nbo, facts))
    for nbo, facts in manifest:  # links last, once every page's API entries are known
        for cell in nbo['cells']:
            if cell['cell_type'] == 'markdown': cell['source'] = linker.markdown(cell['source'], 'experiments/' if facts['kind'] == 'experiment' else '')
    if 'index' not in names.values():
        manifest.insert(0, ({'cells': [md_cell(f"# {c['title']}\n\n{c['description']}\n")], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},
                            dict(page='index', title=c['title'], module=None, api=[], figures=0, plot_cells=0, kind='index', source='settings.ini')))
    index = next(n for n, f in manifest if f['page'] == 'index')
    order = lambda kind: [f['page'] for _, f in manifest if f['kind'] == kind]
    index['cells'].append(md_cell(index_page(c, order('module'), order('guide'), order('experiment'))))
    for nbo, facts in manifest:
        for i, cell in enumerate(nbo['cells']): cell['id'] = f'c{i}'
        nbo['nbformat_minor'] = 5
        dst = src_dir/f"{facts['page']}.ipynb"; written.add(dst)
        write_if_changed(dst, json.dumps(nbo, indent=1, ensure_ascii=False))
    for extra in c['nbs'].rglob('*'):  # images and other files the notebooks link to
        if extra.is_file() and extra.suffix not in ('.ipynb', '.py', '.yml', '.ini') and not any(p.startswith(('.', '_')) for p in extra.relative_to(c['nbs']).parts):
            dst = src_dir/extra.relative_to(c['nbs']); written.add(dst)
            if not dst.exists() or dst.read_bytes() != extra.read_bytes(): dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(extra, dst)
    for dst, f in linker.assets.items():
        dst = src_dir/dst; written.add(dst)
        if not dst.exists() or dst.read_bytes() != f.read_bytes(): dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, dst)
    for old in src_dir.rglob('*'):
        if old.is_file() and old not in written: old.unlink()
    return [f for _, f in manifest]

# ---------------------------------------------------------------- 4. render and check
def mathjax_static() -> Path | None:
    "A local MathJax (from the jupyter-server-mathjax package) so pages with math need no CDN."
    try: import jupyter_server_mathjax
    except ImportError: return None
    src, dst = Path(jupyter_server_mathjax.__file__).parent/'static', CACHE/'static'/'mathjax'
    if not (dst/'MathJax.js').exists(): shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst.parent

def render(out: Path, manifest, strict=True):
    mathjax_static()
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html'] + (['-W', '--keep-going'] if strict else []) + ['-q', '-j', 'auto', '-c', str(ROOT/'docs'),
           '-d', str(CACHE/'doctrees'), str(CACHE/'src'), str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if not strict and r.stderr: print(r.stderr[-4000:])
    if r.returncode: raise DocsError(f"sphinx-build failed (warnings are errors: a broken cross-link, a missing image...):\n{r.stderr[-6000:]}")
    (out/'.nojekyll').touch()
    write_if_changed(out/'pages.json', json.dumps(manifest, indent=1))

class _Links(HTMLParser):
    def __init__(self): super().__init__(); self.ids, self.links = set(), []
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if tag == 'a' and a.get('href'): self.links.append(a['href'])
        if tag in ('img', 'script') and a.get('src'): self.links.append(a['src'])
        if tag == 'link' and a.get('href'): self.links.append(a['href'])

def broken_links(out: Path) -> list[str]:
    "Every internal href/src in `out` that names a missing file or a missing anchor, as 'page: link'."
    parsed = {}
    def get(p: Path):
        if p not in parsed:
            h = _Links(); h.feed(p.read_text(encoding='utf-8', errors='replace')); parsed[p] = h
        return parsed[p]
    bad = []
    for page in sorted(p for p in out.rglob('*.html') if not p.relative_to(out).parts[0].startswith('_')):
        for link in get(page).links:
            if urlparse(link).scheme or link.startswith(('//', 'mailto:', 'javascript:', 'data:')): continue
            path, frag = urldefrag(link)
            tgt = (page.parent/path.split('?')[0]).resolve() if path else page
            if tgt.is_dir(): tgt = tgt/'index.html'
            if not tgt.exists(): bad.append(f'{page.relative_to(out)}: {link} (no such file)')
            elif frag and tgt.suffix == '.html' and frag not in get(tgt).ids: bad.append(f'{page.relative_to(out)}: {link} (no such anchor)')
    return bad

def build(args) -> Path:
    t0 = time.time()
    c = cfg()
    out = Path(args.out) if args.out else c['doc_path']
    manifest = build_sources(args)
    t = time.time(); render(out, manifest, strict=not args.only)
    print(f"sphinx-build into {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} in {time.time()-t:.0f} s", flush=True)
    bad = broken_links(out)
    if bad and args.only: print('broken internal links (pages left out by --only?):\n  ' + '\n  '.join(bad[:20]))
    elif bad: raise DocsError('broken internal links in the built docs:\n  ' + '\n  '.join(bad[:50]))
    print(f"docs built in {time.time()-t0:.0f} s: {len(manifest)} pages; open {out/'index.html'}", flush=True)
    return out

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['_exec']:
        return _exec_one(argv[1], argv[2], argv[3], '--allow-errors' in argv)
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='output folder (default: settings.ini doc_path, _docs)')
    p.add_argument('--timeout', type=int, default=int(os.environ.get('DOCS_TIMEOUT', 300)), help='seconds per notebook execution')
    p.add_argument('--workers', type=int, default=int(os.environ.get('DOCS_WORKERS', 2)), help='notebooks executed at once')
    p.add_argument('--run', default='demo', help='run folder under runs/ whose executed experiments the Experiments pages show')
    p.add_argument('--only', help='comma-separated notebook globs to render (e.g. "02_*,tutorial*"): a quick preview, '
                   'with warnings and broken links reported but not fatal; default all of nbs/')
    p.add_argument('--allow-errors', action='store_true', help='render notebooks whose cells fail (with the error) instead of stopping')
    args = p.parse_args(argv)
    try: build(args)
    except DocsError as e: sys.exit(f"make docs: {e}")

if __name__ == '__main__': main()
