"""Sphinx configuration for smallwb's docs; `tools/docs.py` (`make docs`) writes the pages and runs the build."""
import configparser
from pathlib import Path

_ini = configparser.ConfigParser()
_ini.read(Path(__file__).resolve().parent.parent/'settings.ini')
_s = _ini['DEFAULT']

project = _s['title']
author = _s['author']
copyright = _s['copyright']
release = version = _s['version']

extensions = ['myst_nb']
root_doc = 'index'
exclude_patterns = ['**.ipynb_checkpoints', 'jupyter_execute']
templates_path = []
html_static_path = [str(Path(__file__).parent/'_static')]
# MathJax 2 from the jupyter-server-mathjax package (tools/docs.py copies it here): no CDN, so it works offline.
_mathjax = Path(__file__).resolve().parent.parent/'.cache'/'docs'/'static'
if (_mathjax/'mathjax'/'MathJax.js').exists():
    html_static_path.append(str(_mathjax))
    mathjax_path = 'mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full'
    mathjax2_config = {'tex2jax': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']],
                                   'processRefs': False, 'processEnvironments': False},
                       # the package ships the STIX-Web fonts only (as Jupyter's classic notebook used them)
                       'HTML-CSS': {'availableFonts': ['STIX-Web'], 'preferredFont': 'STIX-Web', 'webFont': 'STIX-Web', 'imageFont': None}}
html_favicon = str(Path(__file__).parent/'_static'/'favicon.svg')
html_css_files = ['smallwb.css']

# Notebooks were executed by tools/docs.py (cached); Sphinx only renders their stored outputs.
import myst_nb.sphinx_ext
myst_nb.sphinx_ext.OUTPUT_FOLDER = str(Path(__file__).resolve().parent.parent/'.cache'/'docs'/'jupyter_execute')  # not beside _docs/
nb_execution_mode = 'off'
nb_merge_streams = True
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3
suppress_warnings = [
    'myst.header',                  # a notebook may go from ## to ####
    'misc.highlighting_failure',    # a signature or output that pygments cannot lex is still shown
]

html_theme = 'sphinx_book_theme'
html_title = project
html_baseurl = f"{_s['doc_host']}{_s['doc_baseurl']}/"
html_copy_source = False
html_show_sourcelink = False
html_context = {'default_mode': 'light'}  # the theme's mode switcher otherwise logs a console error
html_theme_options = {
    'repository_url': _s['git_url'],
    'use_repository_button': False,
    'use_download_button': False,
    'show_navbar_depth': 1,
    'show_toc_level': 2,
    'navigation_with_keys': False,
    'home_page_in_toc': True,
}
