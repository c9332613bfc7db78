"Shared fixtures: a per-session feature cache (tests never touch ~/.cache), image makers, the quick demo chain."
import os, shutil, tempfile
from pathlib import Path
import numpy as np
import pytest
from PIL import Image

_CACHE = Path(tempfile.mkdtemp(prefix='smallwb-test-cache-'))
os.environ['SMALLWB_CACHE'] = str(_CACHE)  # before any smallwb import; papermill kernels inherit it
os.environ.setdefault('MPLBACKEND', 'Agg')


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CACHE, ignore_errors=True)


def noise(path, size=(12, 10), seed=0, mode='RGB', **save):
    "Save a random image (distinct bytes per seed) at `path`, creating folders; return the path."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path, **save)
    return path


def class_folder(root, classes=('cat', 'dog'), n=6, start=0):
    "root/<class>/<i>.png with `n` distinct random images per class."
    for c, cls in enumerate(classes):
        for i in range(n): noise(Path(root)/cls/f'{i}.png', seed=start + 1000*c + i)
    return Path(root)


@pytest.fixture
def tmp(tmp_path): return tmp_path
