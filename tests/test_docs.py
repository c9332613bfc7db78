"""The rendered docs (`make docs`), checked in a real browser.

Builds `_docs/` with `tools/docs.py` (cached: only changed notebooks execute again), serves it on localhost and opens
every page in headless Chromium. A page fails on an HTTP 404 (its own or a resource's), a console error, a broken
internal link or anchor, an image that does not load, a module page without an entry (signature, and a parameter
table where the code has docments) for each exported name, or a module page that should show a figure and doesn't.
Screenshots go to test-output/docs/. Skipped, saying why, only when chromium or chromedriver is not installed
(`apt-get install chromium chromium-driver`; `.ci/run` installs them). `SMALLWB_DOCS_BUILT=1` checks the `_docs/` that is
already there instead of building it.
"""
import importlib, json, os, shutil, subprocess, sys, tempfile, threading, time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse
from urllib.request import urlopen
from urllib.error import HTTPError

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT/'_docs'
SHOTS = ROOT/'test-output'/'docs'
CHROMIUM = next((p for p in map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome')) if p), None)
DRIVER = shutil.which('chromedriver')
LIB = 'smallwb'


@pytest.fixture(scope='module')
def manifest():
    "Build the docs the way `make docs` does (SMALLWB_DOCS_BUILT=1: check the _docs/ already there); the page list."
    if os.environ.get('SMALLWB_DOCS_BUILT') == '1': return json.loads((DOCS/'pages.json').read_text())
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py')], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, f"make docs failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return json.loads((DOCS/'pages.json').read_text())


def test_build(manifest):
    "The build has a front page, a page per module notebook, and its sidebar lists every module."
    pages = {p['page']: p for p in manifest}
    assert 'index' in pages and (DOCS/'index.html').exists()
    nbs = [p for p in (ROOT/'nbs').glob('*.ipynb') if '#| default_exp' in p.read_text(encoding='utf-8')]
    mods = [p['module'] for p in manifest if p['kind'] == 'module']
    assert len(mods) == len(nbs), f"{len(nbs)} module notebooks but {len(mods)} module pages: {mods}"
    html = (DOCS/'index.html').read_text(encoding='utf-8')
    for p in manifest:
        if p['kind'] == 'module': assert f'href="{p["page"]}.html"' in html, f"sidebar of index.html has no link to {p['page']}.html"
    assert (DOCS/'searchindex.js').exists(), "no search index"


class _Handler(SimpleHTTPRequestHandler):
    "Serves _docs/ and remembers every request that was not found."
    missing: list = []
    def log_message(self, *a): pass
    def send_error(self, code, *a, **k):
        if code == 404: self.missing.append(self.path)
        super().send_error(code, *a, **k)


@pytest.fixture(scope='module')
def server(manifest):
    _Handler.missing = []
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(_Handler, directory=str(DOCS)))
    httpd.handle_error = lambda *a: None  # the browser closing a connection early is not a failure
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}/'
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope='module')
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(f"browser checks of the docs skipped: no {'chromium' if not CHROMIUM else 'chromedriver'} installed "
                    "(apt-get install -y chromium chromium-driver)")
    os.environ['SE_OFFLINE'] = 'true'  # selenium-manager must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix='smallwb-chromium-')
    o = webdriver.ChromeOptions()
    o.binary_location = CHROMIUM
    for a in ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
              '--disable-background-networking', '--disable-component-update', '--disable-sync',
              f'--user-data-dir={profile}', '--window-size=1280,1400']: o.add_argument(a)
    o.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    d = webdriver.Chrome(service=Service(DRIVER), options=o)
    d.set_page_load_timeout(30)
    yield d
    d.quit(); shutil.rmtree(profile, ignore_errors=True)


def _open(browser, url):
    "Load `url`, wait for it to settle; the console errors it logged."
    browser.get_log('browser')  # drop earlier entries
    browser.get(url)
    for _ in range(50):
        if browser.execute_script('return document.readyState') == 'complete': break
        time.sleep(0.1)
    time.sleep(0.3)
    return [e['message'] for e in browser.get_log('browser') if e['level'] == 'SEVERE']


def _shot(browser, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    h = browser.execute_script('return Math.min(document.body.scrollHeight, 6000)')
    browser.set_window_size(1280, max(800, h))
    browser.save_screenshot(str(SHOTS/f"{page.replace('/', '__')}.png"))
    browser.set_window_size(1280, 1400)


_ids_cache = {}
def _ids(url):
    "The element ids of the page at `url` (fetched over HTTP)."
    if url not in _ids_cache:
        import re
        with urlopen(url) as r: _ids_cache[url] = set(re.findall(r'\bid="([^"]+)"', r.read().decode('utf-8', 'replace')))
    return _ids_cache[url]


def _broken_links(browser, base):
    "Internal links on the open page whose file is missing (HTTP 404) or whose #anchor is not on the target page."
    bad = []
    for href in set(browser.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)")):
        if not href.startswith(base): continue
        path, frag = urldefrag(href)
        try:
            if not frag: urlopen(path).close()
            elif frag not in _ids(path): bad.append(f'{href} (no element with id "{frag}")')
        except HTTPError as e: bad.append(f'{href} (HTTP {e.code})')
    return bad


def _expected_api(module):
    "Exported names nbdev gives an entry (`show_doc`) to, each with whether it has docments (so a parameter table)."
    from docutils.nodes import make_id
    from fastcore.docments import DocmentTbl
    mod = importlib.import_module(module)
    syms = importlib.import_module(f'{LIB}._modidx').d['syms'].get(module, {})
    res = {}
    for name in getattr(mod, '__all__', []):
        if f'{module}.{name}' not in syms or name.startswith('_'): continue
        try: tbl = bool(DocmentTbl(getattr(mod, name)).has_docment)
        except Exception: tbl = False
        res[name] = (make_id(f'{module}.{name}'), tbl)
    return res


def _check_page(browser, server, p):
    url = urljoin(server, p['page'] + '.html')
    n404 = len(_Handler.missing)
    errors = _open(browser, url)
    _shot(browser, p['page'])
    problems = [f'console error: {e}' for e in errors]
    problems += [f'HTTP 404: {m}' for m in _Handler.missing[n404:]]
    if browser.find_elements('css selector', 'h1') == []: problems.append('no title (h1)')
    imgs = browser.execute_script("return [...document.querySelectorAll('article img')].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    problems += [f'image does not load: {src}' for src, ok in imgs if not ok]
    figs = browser.execute_script("return document.querySelectorAll('.cell_output img').length")
    if figs < p['figures']: problems.append(f"{figs} figure(s) shown, {p['figures']} in the executed notebook")
    if p['kind'] == 'module':
        if p['plot_cells'] and not figs: problems.append(f"no figure, though {p['plot_cells']} shown cell(s) plot (check the cell runs when the docs execute it, not only in a `#| slow` or `#| hide` cell)")
        for name, (anchor, has_tbl) in _expected_api(p['module']).items():
            ok = browser.execute_script("""
                const s = document.getElementById(arguments[0]); if (!s) return 'missing';
                const sec = s.closest('section') || s;
                if (!sec.querySelector('div.highlight')) return 'no signature';
                if (arguments[1] && !sec.querySelector('table')) return 'no parameter table';
                return 'ok';""", anchor, has_tbl)
            if ok != 'ok': problems.append(f'API entry for {name} (#{anchor}): {ok}')
    problems += [f'broken link: {b}' for b in _broken_links(browser, server)]
    return problems


def test_pages_in_browser(manifest, server, browser):
    "Front page, tutorial, every module and experiment page: loads clean, links resolve, API tables and figures present."
    failures = {}
    for p in manifest:
        problems = _check_page(browser, server, p)
        if problems: failures[p['page']] = problems
    report = '\n'.join(f"{pg}.html:\n  " + '\n  '.join(ps) for pg, ps in failures.items())
    assert not failures, f"docs pages with problems (screenshots in {SHOTS.relative_to(ROOT)}):\n{report}"


def test_search_box(manifest, server, browser):
    "The search box finds an API entry by name and links to its module page."
    mod = next(p for p in manifest if p['kind'] == 'module' and p['api'])
    name = mod['api'][0].rsplit('.', 1)[1]
    _open(browser, server)
    assert browser.find_elements('css selector', 'form.bd-search input[name="q"], button.search-button'), "no search box on the front page"
    errors = _open(browser, urljoin(server, f'search.html?q={name}'))
    assert not errors, f"console errors on the search page: {errors}"
    links = []
    for _ in range(100):
        links = browser.execute_script("return [...document.querySelectorAll('#search-results a')].map(a => a.getAttribute('href'))")
        if links: break
        time.sleep(0.1)
    _shot(browser, 'search')
    assert any(l.startswith(mod['page'] + '.html') for l in links), f"searching {name!r} found {links}, not {mod['page']}.html"
