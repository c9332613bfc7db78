"House rules that a reader sees (issue 14): docments on public parameters, short lines, one statement per line."
import ast, importlib, inspect, io, pkgutil, tokenize
from pathlib import Path
import pytest
from fastcore.docments import docments
import smallwb

LIB = Path(smallwb.__file__).parent
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(LIB)]) if not m.name.startswith('_'))

def public_callables():
    "Every function, class and public method a module exports in __all__: (qualified name, callable)."
    for name in MODULES:
        mod = importlib.import_module(f'smallwb.{name}')
        for n in getattr(mod, '__all__', []):
            o = getattr(mod, n)
            if inspect.isfunction(o): yield f'{name}.{n}', o
            elif inspect.isclass(o) and o.__module__ == mod.__name__:
                yield f'{name}.{n}', o
                for k, v in vars(o).items():
                    if inspect.isfunction(v) and not k.startswith('_') and v.__module__ == mod.__name__: yield f'{name}.{n}.{k}', v

from fastai.callback.core import _events as FASTAI_EVENTS  # a Callback's signature lists fastai's event hooks

def params(f):
    "The parameters a caller passes (no self/cls, no *args/**kwargs, not the event hooks fastai adds to every Callback)."
    try: sig = inspect.signature(f)
    except (TypeError, ValueError): return []
    return [p for p in sig.parameters.values() if p.name not in ('self', 'cls') and p.name not in FASTAI_EVENTS
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

def test_docments_cover_public_parameters():
    total, missing = 0, []
    for q, f in public_callables():
        ps = params(f)
        if not ps: continue
        try: docs = docments(f, full=False)
        except Exception: docs = {}
        for p in ps:
            total += 1
            if not docs.get(p.name): missing.append(f'{q}({p.name})')
    cover = 1 - len(missing) / max(total, 1)
    print(f'{total - len(missing)} of {total} public parameters documented ({cover:.0%})')
    assert cover >= 0.95, f'{len(missing)} of {total} public parameters have no docments comment, e.g. {missing[:20]}'

def code_lines(path):
    "(line number, text) of every line of code; docstrings and nbdev's generated `__all__` are prose and generated text, not code."
    src = path.read_text(encoding='utf-8')
    skip = set()
    for node in ast.walk(ast.parse(src)):
        doc = isinstance(node, ast.Expr) and isinstance(getattr(node, 'value', None), ast.Constant) and isinstance(node.value.value, str)
        gen = isinstance(node, ast.Assign) and any(getattr(t, 'id', '') == '__all__' for t in node.targets)
        if doc or gen: skip.update(range(node.lineno, node.end_lineno + 1))
    return [(i, l) for i, l in enumerate(src.splitlines(), 1) if i not in skip]

@pytest.mark.parametrize('name', MODULES)
def test_lines_at_most_120_characters(name):
    long = [f'{name}.py:{i} ({len(l)})' for i, l in code_lines(LIB/f'{name}.py') if len(l) > 120]
    assert not long, f'{len(long)} lines over 120 characters: {long[:10]}'

def joined_lines(src:str) -> list:
    "Line numbers where two sibling statements start: statements joined with `;`."
    out = []
    for node in ast.walk(ast.parse(src)):
        for field in ('body', 'orelse', 'finalbody', 'handlers'):
            v = getattr(node, field, None)
            kids = [k for k in v if isinstance(k, ast.stmt)] if isinstance(v, list) else []
            out += [b.lineno for a, b in zip(kids, kids[1:]) if a.end_lineno == b.lineno]
    return sorted(set(out))

def test_joined_lines_are_found():
    assert joined_lines("a = 1; b = 2\nif a: c = 3; d = 4\nif b: e = 5\n") == [1, 2]

@pytest.mark.parametrize('name', MODULES)
def test_one_statement_per_line(name):
    joined = [f'{name}.py:{ln}' for ln in joined_lines((LIB/f'{name}.py').read_text(encoding='utf-8'))]
    assert not joined, f'{len(joined)} lines join statements with ";": {joined[:10]}'
