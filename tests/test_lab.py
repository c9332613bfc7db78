"""The workbench in a real JupyterLab (issue 9): the notebooks open, the widgets render and work in headless Chromium.

One JupyterLab server (free local port, random token, temporary Jupyter/IPython/settings/workspace folders, a copy
of `tests/lab/` as its root, the `smallwb` kernel) and one headless Chromium driven by Selenium serve the module.
Each test opens its notebook, runs all cells from the Run menu, fails on a kernel error, a widget that shows
"Error displaying widget" or raw text, or a console error from the widget code, then works the widget like a
person would and saves screenshots under `test-output/lab/`. Everything started here is stopped at the end, even
on failure, and the teardown checks that no process is left. Skips only when chromium or chromedriver is missing
(`.ci/run` installs Debian's)."""
import base64, hashlib, json, os, re, secrets, shutil, socket, sqlite3, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import psutil, pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = Path(__file__).parent/'lab'  # the notebooks the browser opens
OUT = ROOT/'test-output'/'lab'  # screenshots, the server's and the browser's logs
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
_missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
pytestmark = pytest.mark.skipif(bool(_missing), reason=f"browser test skipped: {', '.join(_missing)} not found; "
                                "install Debian's browser with `apt-get install -y chromium chromium-driver` (.ci/run does)")

CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
               '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=1400,1300']
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
WIDGET_CODE = re.compile(r'jupyter-widgets|ipywidgets|widget|smallwb', re.I)  # console messages from the widget code

# ---------------------------------------------------------------- processes

def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _tree(pid) -> list:
    "The process `pid` and all its descendants (kernels run in sessions of their own, so a process group is not enough)."
    try: p = psutil.Process(pid); return [p] + p.children(recursive=True)
    except psutil.NoSuchProcess: return []

def _stop(procs, grace=10) -> list:
    "Terminate `procs`, kill what outlives `grace` seconds; return those still alive."
    for p in procs:
        try: p.terminate()
        except psutil.NoSuchProcess: pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try: p.kill()
        except psutil.NoSuchProcess: pass
    _, alive = psutil.wait_procs(alive, timeout=5)
    return alive

@contextmanager
def _reaped(name, pid):
    "On exit stop the process `pid` and everything it started by then; raise if anything survives."
    seen = {}
    try: yield seen
    finally:
        for p in _tree(pid): seen[p.pid] = p
        alive = _stop(list(seen.values()))
        assert not alive, f'{name}: processes left behind: {[(p.pid, p.name()) for p in alive]}'

def _wait_http(url, proc, log, timeout=90):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f'JupyterLab exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}')
        try: urllib.request.urlopen(url, timeout=5); return
        except OSError: time.sleep(0.3)
    pytest.fail(f'JupyterLab did not answer {url} within {timeout} s:\n{Path(log).read_text()[-3000:]}')

# ---------------------------------------------------------------- fixtures

def _quiet_settings(d:Path):
    "User settings that keep the news/update toast off the screenshots (offline, it could only fail)."
    f = d/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
    f.parent.mkdir(parents=True); f.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on a free localhost port serving a copy of `tests/lab/`; yields (base url, token, root)."
    tmp = tmp_path_factory.mktemp('lab')
    root = shutil.copytree(NBS, tmp/'root')
    _quiet_settings(tmp/'settings')
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, **{k: str(tmp/d) for k, d in [('JUPYTER_CONFIG_DIR', 'config'), ('JUPYTER_DATA_DIR', 'data'),
                                                      ('JUPYTER_RUNTIME_DIR', 'runtime'), ('IPYTHONDIR', 'ipython')]})  # nothing from or to ~
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={root}',
           f'--LabApp.user_settings_dir={tmp/"settings"}', f'--LabApp.workspaces_dir={tmp/"workspaces"}',
           '--MultiKernelManager.default_kernel_name=smallwb', '--LabApp.expose_app_in_browser=True']
    if os.geteuid() == 0: cmd.append('--allow-root')
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT/'jupyterlab.log'
    with open(log, 'w') as f: proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    with _reaped('JupyterLab', proc.pid) as seen:
        url = f'http://127.0.0.1:{port}'
        _wait_http(f'{url}/api/status?token={token}', proc, log)
        yield SimpleNamespace(url=url, token=token, root=root, track=lambda: seen.update({p.pid: p for p in _tree(proc.pid)}))

@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    "Headless Chromium driven by Selenium offline, with the console log captured."
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in CHROME_ARGS + [f'--user-data-dir={tmp_path_factory.mktemp("chromium")}']: opts.add_argument(a)
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    opts.unhandled_prompt_behavior = 'accept'  # leaving a notebook with unsaved outputs
    OUT.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('SE_OFFLINE', 'true')  # selenium-manager must not try to download a browser or driver
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(OUT/'chromedriver.log')), options=opts)
    with _reaped('Chromium', driver.service.process.pid):
        try: yield driver
        finally:
            try: driver.quit()
            except Exception: pass  # _reaped stops what is left

@pytest.fixture(autouse=True)
def last_screen(request, browser):
    "After each test, pass or fail, the page as it was left: test-output/lab/<test>-end.png."
    yield
    browser.save_screenshot(str(OUT/f'{request.node.name}-end.png'))

# ---------------------------------------------------------------- driving JupyterLab

def wait_for(fn, timeout, what):
    "Poll `fn` until it returns something truthy; fail naming `what` after `timeout` seconds."
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        try:
            r = fn()
            if r: return r
        except Exception as e: last = e
        time.sleep(0.25)
    pytest.fail(f'timed out after {timeout} s waiting for {what}' + (f' (last error: {last!r})' if last else ''))

NB_STATE = """
const w = window.jupyterapp.shell.currentWidget;
if (!w || !w.content || !w.content.model) return null;
const cells = w.content.model.cells, out = {status: w.sessionContext.kernelDisplayStatus, pending: 0, errors: [], texts: []};
for (let i = 0; i < cells.length; i++) {
  const c = cells.get(i);
  if (c.type !== 'code') continue;
  if (c.executionCount === null) out.pending++;
  for (let j = 0; j < c.outputs.length; j++) {
    const o = c.outputs.get(j).toJSON();
    if (o.output_type === 'error') out.errors.push(o.ename + ': ' + o.evalue);
    else if (o.data && !o.data['""" + WIDGET_MIME + """'] && /^\\w+\\(/.test(o.data['text/plain'] || '')) out.texts.push(o.data['text/plain'].slice(0, 200));
  }
}
return out;"""

def console_errors(driver) -> list:
    "Console errors logged by the widget code since the last call (the whole console goes to test-output/lab/console.log)."
    log = driver.get_log('browser')
    with open(OUT/'console.log', 'a') as f: f.writelines(f"{e['level']} {e['message']}\n" for e in log)
    return [e['message'] for e in log if e['level'] == 'SEVERE' and WIDGET_CODE.search(e['message'])]

def problems(driver) -> list:
    "What is wrong on the page: kernel errors, widgets shown as raw text or as an error, widget console errors."
    s, outs = driver.execute_script(NB_STATE), driver.find_elements('css selector', '.jp-OutputArea-output')
    driver.widget_console_errors += console_errors(driver)
    return ([f'kernel error in the notebook: {e}' for e in s['errors']] +
            [f'a widget was shown as text instead of controls: {t}' for t in s['texts']] +
            [f'a widget was shown as text instead of controls (is the widget manager missing?): {e.text[:200]}'
             for e in outs if e.get_attribute('data-mime-type') == 'text/plain' and re.match(r'\w+\(', e.text)] +
            [f'widget failed to display: {e.text[:200]}' for e in outs if 'Error displaying widget' in e.text] +
            ['widget failed to display: the output shows ipywidgets\' error widget ("Click to show javascript error")'
             for _ in driver.find_elements('css selector', '.jupyter-widgets-error-widget')] +
            [f'console error from the widget code: {m[:500]}' for m in driver.widget_console_errors])

def check_page(driver):
    p = problems(driver)
    assert not p, '\n'.join(p)

def open_and_run(driver, lab, name, timeout=120):
    "Open `name` in JupyterLab (a fresh workspace) and run all cells from the Run menu; return when done or on an error."
    driver.get(f'{lab.url}/lab/workspaces/{Path(name).stem}/tree/{name}?reset&token={lab.token}')
    panel = wait_for(lambda: driver.find_element('css selector', '.jp-NotebookPanel'), 60, f'{name} to open')
    panel.click()  # a headless window has no focus: JupyterLab's current widget is the one a person clicks into
    wait_for(lambda: driver.execute_script(NB_STATE), 30, f'{name} to become the current notebook')
    console_errors(driver); driver.widget_console_errors = []  # this page's errors only
    wait_for(lambda: driver.execute_script(NB_STATE)['status'] == 'idle', timeout, f'the smallwb kernel of {name} to start')
    lab.track()  # remember the kernel, should the server die before it
    next(m for m in driver.find_elements('css selector', '.lm-MenuBar-item') if m.text == 'Run').click()
    wait_for(lambda: driver.find_element('css selector', '.lm-Menu-item[data-command="runmenu:run-all"]'), 10, 'the Run menu').click()
    def done():
        s = driver.execute_script(NB_STATE)
        return s['errors'] or s['texts'] or (s['pending'] == 0 and s['status'] == 'idle')
    wait_for(done, timeout, f'all cells of {name} to run')

def run_notebook(driver, lab, name, widget_css):
    "Open and run `name`, check the page, wait for the widget with CSS class `widget_css` to render; return it."
    open_and_run(driver, lab, name)
    check_page(driver)
    widget = wait_for(lambda: driver.find_element('css selector', f'.jp-OutputArea-output .{widget_css}'),
                      30, f'the .{widget_css} widget to render')
    check_page(driver)
    return widget

def image_bytes(driver, img) -> bytes:
    "The bytes behind an <img> (ipywidgets.Image shows a blob: URL)."
    b64 = driver.execute_async_script("""const done = arguments[arguments.length - 1];
      fetch(arguments[0].src).then(r => r.blob()).then(b => { const f = new FileReader();
        f.onload = () => done(f.result.split(',')[1]); f.readAsDataURL(b); }).catch(e => done('ERR ' + e));""", img)
    assert not b64.startswith('ERR'), b64
    return base64.b64decode(b64)

def digest(driver, img) -> str: return hashlib.sha1(image_bytes(driver, img)).hexdigest()

def trim(png:Path, pad=8):
    "Crop the white margin around a screenshot (widgets leave the right of the output area empty)."
    from PIL import Image, ImageChops, ImageOps
    im = Image.open(png).convert('RGB')
    box = ImageChops.difference(im, Image.new('RGB', im.size, 'white')).getbbox() or (0, 0, *im.size)
    ImageOps.expand(im.crop(box), border=pad, fill='white').save(png)

def screenshot(driver, el, name):
    "Save the output cell holding `el` (trimmed) and the whole page under test-output/lab/."
    out = el.find_element('xpath', './ancestor::div[contains(@class, "jp-OutputArea-output")]')
    driver.execute_script('arguments[0].scrollIntoView({block: "center"})', out)
    out.screenshot(str(OUT/f'{name}.png'))
    trim(OUT/f'{name}.png')
    driver.save_screenshot(str(OUT/f'{name}-page.png'))

def button(widget, text):
    return next(b for b in widget.find_elements('css selector', 'button') if b.text.strip() == text)

# ---------------------------------------------------------------- tests

def test_previewer(lab, browser):
    "The augmentation previewer renders its controls, and moving `magnitude` re-renders the grid."
    from selenium.webdriver.common.keys import Keys
    w = run_notebook(browser, lab, 'preview.ipynb', 'smallwb-preview')
    labels = [e.text for e in w.find_elements('css selector', '.widget-label')]
    for d in ['preset', 'magnitude', 'rotate']: assert d in labels, f'{d!r} control missing; labels: {labels}'
    for d in ['hflip', 'vflip']: assert w.find_elements('xpath', f'.//label[contains(., "{d}")]//input[@type="checkbox"]'), f'{d} checkbox missing'
    assert w.find_elements('css selector', '.widget-dropdown select'), 'preset dropdown missing'
    slider = w.find_element('xpath', './/div[contains(@class, "widget-hslider")][.//*[contains(@class, "widget-label") and text()="magnitude"]]')
    readout, img = slider.find_element('css selector', '.widget-readout'), w.find_element('css selector', 'img')
    before, value, src = digest(browser, img), readout.text, img.get_attribute('src')
    screenshot(browser, w, 'previewer')
    handle = slider.find_element('css selector', '.noUi-handle')
    handle.click()
    for _ in range(3): handle.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: readout.text != value, 10, f'the magnitude readout to move from {value}')
    wait_for(lambda: img.get_attribute('src') != src and digest(browser, img) != before, 30,
             f'the preview image to change after magnitude {value} -> {readout.text}')
    check_page(browser)
    screenshot(browser, w, 'previewer-after')

CLASSES = [str(i) for i in range(10)]  # digits

def stored_labels(db) -> dict:
    "The labels in the store on disk, read by this process (not the kernel, not the browser)."
    from smallwb.labels import LabelStore
    return LabelStore(db, classes=CLASSES, dataset='digits').labels()

def label_rows(db) -> list:
    "The live label events in the SQLite file, read with plain sqlite3, read-only."
    with sqlite3.connect(f'file:{db}?mode=ro', uri=True) as con:
        return con.execute("SELECT item, label FROM events WHERE kind = 'label' AND undone = 0").fetchall()

def test_labeler(lab, browser):
    "Clicking a class commits the label to the SQLite store at once; 'undo' takes it back."
    w = run_notebook(browser, lab, 'labeling.ipynb', 'smallwb-labeler')
    db = lab.root/'labels.sqlite'
    for c in CLASSES + ['skip', 'undo']: button(w, c)
    img, progress = w.find_element('css selector', 'img'), w.find_element('xpath', './/*[contains(text(), " labeled")]')
    first = digest(browser, img)
    assert stored_labels(db) == {} and progress.text == '0 / 5 labeled', (stored_labels(db), progress.text)
    screenshot(browser, w, 'labeler')
    button(w, '0').click()  # the first item, digits/00000, is a zero
    wait_for(lambda: stored_labels(db), 20, f'the label to reach {db}')
    assert stored_labels(db) == {'digits/00000': '0'}
    assert label_rows(db) == [('digits/00000', '0')]
    wait_for(lambda: progress.text == '1 / 5 labeled' and digest(browser, img) != first, 20, 'the next image and the progress')
    check_page(browser)
    button(w, 'undo').click()
    wait_for(lambda: stored_labels(db) == {}, 20, f"'undo' to take the label out of {db}")
    assert label_rows(db) == []
    wait_for(lambda: progress.text == '0 / 5 labeled' and digest(browser, img) == first, 20, "'undo' to show the first image again")
    check_page(browser)

def test_checks_catch_broken_widgets(lab, browser):
    "The checks can fail: a widget shown as raw text, one whose view does not exist, and a kernel error are all caught."
    open_and_run(browser, lab, 'broken.ipynb')
    want = ['shown as text instead of controls', 'widget failed to display', 'console error from the widget code', 'kernel error']
    found = lambda: (lambda p: p if all(any(w in x for x in p) for w in want) else None)(problems(browser))
    p = wait_for(found, 30, f'the checks to report all of {want}')
    assert 'ZeroDivisionError' in '\n'.join(p) and 'NoSuchView' in '\n'.join(p), p
