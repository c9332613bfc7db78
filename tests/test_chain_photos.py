"""The default chain on a tiny real-photo folder (issue 16 item 7), in a file of its own so that it runs beside
test_pipeline's digits chain under pytest-xdist."""
import os
from pathlib import Path
import pandas as pd, pytest, shutil
from smallwb.core import read_json
from smallwb.pipeline import run_chain, RunFailed, default_chain

PHOTOS = Path(__file__).resolve().parents[2]/'shared'/'data'/'hymenoptera'


def tiny_photos(root, n_train=6, n_val=4):
    "A tiny real-photo folder in hymenoptera's own layout: train/<class>/ and val/<class>/, a few photos of each (copied)."
    for part, n in (('train', n_train), ('val', n_val)):
        for cls in ('ants', 'bees'):
            (root/part/cls).mkdir(parents=True)
            for f in sorted((PHOTOS/part/cls).glob('*.jpg'))[:n]: shutil.copy(f, root/part/cls/f.name)
    return root


@pytest.mark.skipif(not PHOTOS.is_dir(), reason=f'real photos not found at {PHOTOS} (CI has ../shared beside the checkout)')
def test_the_chain_on_a_tiny_real_photo_folder(tmp_path):
    """Issue 16 item 7: the default chain (quick) on a few hymenoptera photos in their train/ + val/ layout: every stage
    finishes, val/ is read as the test set, each stage starts from the model the one before it handed on (one lineage),
    and edge ships an int8 ONNX model of the model the lineage ends in."""
    folder = tiny_photos(tmp_path/'hym')
    chain = default_chain()
    try: run = run_chain(chain, {'quick': True, 'data': str(folder), 'labels_per_class': 3}, 'photos', tmp_path/'runs',
                         log=lambda s: None)
    except RunFailed as e: pytest.fail(str(e))
    assert read_json(run/'run.json')['status'] == 'done'
    m = {s: read_json(run/s/'metrics.json') for s in chain}
    man = pd.read_csv(run/'transfer'/'manifest.csv')
    assert sorted(man[man.role == 'test'].item.str.split('/').str[0].unique()) == ['val']  # val/ is the held-out set
    assert len(man[man.role == 'test']) == 8 and len(man[man.role == 'labeled']) == 6
    handed = None  # the model file the lineage has reached, relative to the run folder
    for s in chain:
        if 'took' in m[s] and handed is not None and s != 'edge':
            assert os.path.normpath(m[s]['took']) == handed, (s, m[s]['took'], handed)
        if m[s].get('model'):
            f = os.path.normpath(Path(s)/m[s]['model'])
            assert (run/f).exists(), f'{s} hands on {f}, which does not exist'
            if s != 'edge': handed = f
    assert m['transfer']['model'] == 'model.pth' and m['transfer']['accuracy'] is not None
    assert (run/'edge'/'model.int8.onnx').exists() and m['edge']['took'] in (handed, 'transfer/model.pth')
    assert '| stage | took | gave |' in (run/'summary.md').read_text()
    # int8 is judged on images the shipped model did not learn from: the student's held-out pool items, else the pool
    q = m['edge']['int8']
    assert 'did not learn from' in q['chosen_on'], q['chosen_on']
    if m['edge']['shipped'] == 'student': assert q['n'] == len(m['distill']['held_out']) >= 1
    else: assert q['n'] == 3  # half of the 6 pool photos: the other half tops up the calibration set
