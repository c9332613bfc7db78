"The data layer on bad input: every case gives a clear error naming the file, or a reported skip naming it."
import os
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from conftest import noise, class_folder
from smallwb.data import (BadImage, load_image, open_image, from_folder, from_arrays, digits, budget_split, Split,
                          get_dataset, stage_data, MAX_PIXELS)
from smallwb.core import Stage, read_json, file_hash


def reasons(ds) -> dict:
    "Skip reason by file name."
    return {Path(s.path).name: s.reason for s in ds.report}


def png_header(w, h) -> bytes:
    "A PNG that declares `w`x`h` pixels but holds almost nothing: a decompression bomb's header."
    import struct, zlib
    ihdr = struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')


# ---- one bad file: load_image raises BadImage naming it; from_folder skips it and reports it -------------------

def bad_files(d: Path) -> dict:
    "name → the words its error must contain."
    ok = noise(d/'ok.jpg', (64, 64)).read_bytes()
    (d/'truncated.jpg').write_bytes(ok[:len(ok)//2])
    png = noise(d/'full.png', (64, 64)).read_bytes(); (d/'full.png').unlink()
    (d/'truncated.png').write_bytes(png[:len(png)//2])
    (d/'corrupt.png').write_bytes(png[:60] + bytes(255 - b for b in png[60:]))  # a valid header, scrambled data
    (d/'junk.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    (d/'text.png').write_text('this is not a picture')
    (d/'empty.png').write_bytes(b'')
    noise(d/'dot.png', (1, 1))
    (d/'bomb.png').write_bytes(png_header(20_000, 20_000))
    (d/'ok.jpg').unlink()
    return {'truncated.jpg': 'corrupt or truncated', 'truncated.png': 'corrupt or truncated', 'corrupt.png': 'corrupt or truncated',
            'text.png': 'not an image file', 'junk.png': 'not an image file', 'empty.png': 'empty file (0 bytes)', 'dot.png': '1x1 is too small',
            'bomb.png': 'decompression bomb'}


def test_load_image_bad_files_name_the_file(tmp):
    for name, words in bad_files(tmp).items():
        with pytest.raises(BadImage) as e: load_image(tmp/name)
        assert str(tmp/name) in str(e.value) and words in str(e.value), (name, str(e.value))


def test_missing_file(tmp):
    with pytest.raises(FileNotFoundError, match='nope.png: no such file'): load_image(tmp/'nope.png')


def test_bomb_limit_is_a_parameter(tmp):
    pil_limit = Image.MAX_IMAGE_PIXELS
    noise(tmp/'big.png', (200, 100))
    with pytest.raises(BadImage, match=r'big.png: 200x100 = 20,000 pixels is over the limit of 10,000'): load_image(tmp/'big.png', max_pixels=10_000)
    assert load_image(tmp/'big.png', max_pixels=20_000).shape == (100, 200, 3)
    # PIL's own limit (twice MAX_PIXELS raises inside PIL) is reported the same way
    (tmp/'huge.png').write_bytes(png_header(30_000, 30_000))
    with pytest.raises(BadImage, match='huge.png.*decompression bomb'): open_image(tmp/'huge.png')
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global setting is restored
    assert load_image(tmp/'big.png', max_pixels=10 * MAX_PIXELS).shape == (100, 200, 3)


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads any file')
def test_unreadable_file(tmp):
    p = noise(tmp/'locked.png'); p.chmod(0)
    with pytest.raises(BadImage, match='locked.png: cannot read'): load_image(p)


def test_folder_reports_every_bad_file(tmp, capsys):
    class_folder(tmp, n=3)
    expect = bad_files(tmp/'dog')
    (tmp/'cat'/'notes.txt').write_text('a note')
    (tmp/'cat'/'gone.png').symlink_to(tmp/'nowhere.png')
    ds = from_folder(tmp)
    r = reasons(ds)
    for name, words in expect.items(): assert words in r[name], (name, r[name])
    assert 'not an image file' in r['notes.txt'] and 'broken link' in r['gone.png']
    assert len(ds) == 6 and len(ds.report) == len(expect) + 2
    out = capsys.readouterr().out
    assert f'{len(ds.report)} skipped' in out and 'truncated.jpg' in out  # the caller sees the report
    assert set(ds.report.frame()['path']) == {s.path for s in ds.report}
    with pytest.raises(BadImage, match=r'cat/notes.txt: not an image file'): from_folder(tmp, strict=True)


def test_loose_files_and_stray_folders_are_reported(tmp):
    class_folder(tmp/'train'); class_folder(tmp/'test', start=50)
    noise(tmp/'train'/'loose.png', seed=99); noise(tmp/'extra'/'x.png', seed=98)
    r = reasons(from_folder(tmp, verbose=False))
    assert r['loose.png'] == 'file outside any class folder' and 'outside train/' in r['extra']


# ---- layouts that cannot make a classifier ----------------------------------------------------------------------

def test_empty_class_folder(tmp):
    class_folder(tmp); (tmp/'bird').mkdir()
    with pytest.raises(ValueError, match=r"bird: class folder 'bird' has no usable images"): from_folder(tmp)


def test_class_folder_with_only_bad_files_lists_them(tmp):
    class_folder(tmp); (tmp/'bird').mkdir(); (tmp/'bird'/'a.png').write_bytes(b'')
    with pytest.raises(ValueError, match=r"'bird' has no usable images \(1 files skipped: a.png: empty file"): from_folder(tmp)


def test_single_class(tmp):
    class_folder(tmp, classes=['cat'])
    with pytest.raises(ValueError, match=r'needs at least two class folders; found 1 \(cat\)'): from_folder(tmp)
    with pytest.raises(ValueError, match=r'found 0 \(none\)'): from_folder(tmp/'cat')


def test_not_a_folder(tmp):
    with pytest.raises(FileNotFoundError, match='nothing_here: no such folder'): from_folder(tmp/'nothing_here')
    with pytest.raises(FileNotFoundError, match="neither a built-in dataset"): get_dataset(str(tmp/'nothing_here'))


def test_class_with_fewer_items_than_the_budget(tmp):
    class_folder(tmp, n=6); class_folder(tmp, classes=['bird'], n=2, start=500)
    ds = from_folder(tmp)
    with pytest.raises(ValueError, match=r"class 'bird' has 1 outside the test set, needs 3; lower labels_per_class"):
        budget_split(ds, labels_per_class=3)
    assert np.bincount(ds.labels[budget_split(ds, labels_per_class=1).labeled]).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match='budget of 99 labels is more than'): budget_split(ds, budget=99)


# ---- duplicates ----------------------------------------------------------------------------------------------

def test_duplicates(tmp):
    class_folder(tmp/'train', n=4); class_folder(tmp/'test', n=2, start=100)
    t = tmp/'train'
    (t/'cat'/'copy of 0.png').write_bytes((t/'cat'/'0.png').read_bytes())   # same class: keep one
    (t/'dog'/'odd.png').write_bytes((t/'cat'/'1.png').read_bytes())         # other class: contradictory
    (tmp/'test'/'dog'/'leak.png').write_bytes((t/'dog'/'2.png').read_bytes())  # test repeats train
    ds = from_folder(tmp, verbose=False)
    r = reasons(ds)
    assert r['copy of 0.png'] == f"duplicate: same bytes as {t/'cat'/'0.png'}"
    assert 'contradictory labels' in r['odd.png'] and 'contradictory labels' in r['1.png'] and 'cat, dog' in r['odd.png']
    assert r['leak.png'].startswith('a test image that repeats a training image') and str(t/'dog'/'2.png') in r['leak.png']
    assert str(t/'dog'/'2.png') in ds.items and str(t/'cat'/'0.png') in ds.items
    assert len(set(ds.hashes)) == len(ds)  # what is left is unique
    assert (ds.splits == 'test').sum() == 4 and (ds.splits == 'train').sum() == 8 - 1


# ---- names and modes -----------------------------------------------------------------------------------------

def test_unicode_and_spaces_in_paths(tmp):
    root = tmp/'données d’été'/'my photos'
    class_folder(root, classes=['chat noir', 'čaj ☕'], n=4)
    noise(root/'pool'/'ünlabeled 1.png', seed=77)
    ds = from_folder(root)
    assert ds.classes == ['chat noir', 'čaj ☕'] and len(ds) == 9 and not ds.report
    assert ds.images(size=8).shape == (9, 8, 8, 3)
    sp = budget_split(ds, 2, test_size=0.25)
    p = sp.save(ds, tmp/'manifest.csv')
    assert 'čaj ☕/0.png' in p.read_text(encoding='utf-8') and 'pool/ünlabeled 1.png' in p.read_text(encoding='utf-8')
    assert Split.load(from_folder(root), p).labeled.tolist() == sp.labeled.tolist()


def _marked(mode):
    "A 6x4 image of `mode`, black with one bright pixel at the top left (to see a rotation)."
    a = np.zeros((4, 6), np.uint8); a[0, 0] = 200
    if mode == 'I;16': return Image.fromarray(a.astype(np.uint16) * 257)
    if mode in ('I', 'F'): return Image.fromarray(a.astype(np.int32) * 257).convert(mode) if mode == 'I' else Image.fromarray(a.astype(np.float32) / 255)
    return Image.fromarray(a, 'L').convert(mode)


@pytest.mark.parametrize('mode,ext', [('L', 'png'), ('LA', 'png'), ('P', 'png'), ('RGB', 'png'), ('RGBA', 'png'), ('I;16', 'png'),
                                      ('1', 'png'), ('CMYK', 'tif'), ('I;16', 'tif'), ('L', 'tif'), ('I', 'tif'), ('F', 'tif'),
                                      ('CMYK', 'jpg'), ('L', 'jpg'), ('RGB', 'webp')])
def test_every_mode_with_exif_orientation(tmp, mode, ext):
    im = _marked(mode)
    im.save(tmp/f'plain.{ext}')
    ex = im.getexif(); ex[0x0112] = 6  # EXIF orientation 6: the camera was turned 90°; show it rotated clockwise
    im.save(tmp/f'rotated.{ext}', exif=ex)
    plain, rot = load_image(tmp/f'plain.{ext}'), load_image(tmp/f'rotated.{ext}')
    assert plain.dtype == np.uint8 and plain.shape == (4, 6, 3) and rot.shape == (6, 4, 3)
    lossy = ext in ('jpg', 'webp')
    bright = 255 if mode == '1' else 200
    assert abs(int(plain[0, 0, 0]) - bright) <= (10 if lossy else 0) and plain[3, 5].max() <= (10 if lossy else 0)
    assert np.abs(rot.astype(int) - np.rot90(plain, -1).astype(int)).max() <= (12 if lossy else 0)
    assert load_image(tmp/f'rotated.{ext}', size=16).shape == (16, 16, 3)


def test_mode_colours(tmp):
    Image.new('CMYK', (4, 4), (0, 255, 255, 0)).save(tmp/'red.tif')
    Image.new('LA', (4, 4), (0, 0)).save(tmp/'clear.png')
    p = Image.new('P', (4, 4)); p.putpalette([0, 0, 255] + [0] * 765); p.save(tmp/'blue.png')
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp/'white16.png')
    Image.fromarray(np.full((4, 4), 32896, np.uint16)).save(tmp/'grey16.png')
    assert load_image(tmp/'red.tif')[0, 0].tolist() == [255, 0, 0]
    assert load_image(tmp/'clear.png')[0, 0].tolist() == [255, 255, 255]  # transparent → white
    assert load_image(tmp/'blue.png')[0, 0].tolist() == [0, 0, 255]
    assert load_image(tmp/'white16.png')[0, 0].tolist() == [255] * 3 and load_image(tmp/'grey16.png')[0, 0].tolist() == [128] * 3


def test_from_arrays_checks_shapes_and_labels():
    with pytest.raises(ValueError, match='images must be'): from_arrays(np.zeros((2, 4)), [0, 1])
    with pytest.raises(ValueError, match='3 images but 2 labels'): from_arrays(np.zeros((3, 4, 4)), [0, 1])
    with pytest.raises(ValueError, match="'cow' is not one of"): from_arrays(np.zeros((2, 4, 4)), ['cat', 'cow'], classes=['cat', 'dog'])
    ds = from_arrays(np.linspace(0, 1, 32).reshape(2, 4, 4), [1, None])
    assert ds.labels.tolist() == [1, -1] and ds.image(1)[3, 3].tolist() == [255] * 3


# ---- the label budget ----------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dig(): return digits()


def test_budget_split_is_stratified_disjoint_and_complete(dig):
    sp = budget_split(dig, labels_per_class=7, seed=3)
    assert np.bincount(dig.labels[sp.labeled], minlength=10).tolist() == [7] * 10
    parts = [set(sp.labeled), set(sp.pool), set(sp.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(len(dig)))
    test_counts = np.bincount(dig.labels[sp.test], minlength=10)
    assert (np.abs(test_counts - np.bincount(dig.labels) // 2) <= 1).all()  # test is stratified too


def test_budget_split_deterministic_per_seed_and_test_fixed(dig):
    a, b, c = budget_split(dig, 5, seed=1), budget_split(dig, 5, seed=1), budget_split(dig, 5, seed=2)
    assert a.labeled.tolist() == b.labeled.tolist() and a.pool.tolist() == b.pool.tolist()
    assert a.labeled.tolist() != c.labeled.tolist()
    for other in (c, budget_split(dig, 20, seed=9), budget_split(dig, budget=37, seed=4)):
        assert other.test.tolist() == a.test.tolist()
    assert budget_split(dig, 5, test_seed=1).test.tolist() != a.test.tolist()


def test_total_budget_spreads_evenly(dig):
    sp = budget_split(dig, budget=23, seed=0)
    counts = np.bincount(dig.labels[sp.labeled], minlength=10)
    assert counts.sum() == 23 and counts.max() - counts.min() <= 1
    assert len(budget_split(dig, labels_per_class=None).labeled) == len(dig) - len(sp.test)


def test_fixed_test_folder_and_pool(tmp):
    class_folder(tmp/'train', n=5); class_folder(tmp/'test', n=3, start=100)
    for i in range(4): noise(tmp/'pool'/('cat' if i < 2 else 'dog')/f'u{i}.png', seed=200 + i)
    noise(tmp/'pool'/'flat.png', seed=300)
    ds = from_folder(tmp)
    sp = budget_split(ds, 2, seed=0)
    assert sorted(sp.test.tolist()) == np.flatnonzero(ds.splits == 'test').tolist()
    pool_items = set(np.flatnonzero(ds.splits == 'pool'))
    assert pool_items <= set(sp.pool) and not pool_items & set(sp.labeled)
    assert (ds.labels[list(pool_items)] == -1).all()
    assert sorted(ds.hidden_labels[list(pool_items)].tolist()) == [-1, 0, 0, 1, 1]


def test_manifest_round_trip_and_mismatch(tmp, dig):
    sp = budget_split(dig, 4, seed=5)
    p = sp.save(dig, tmp/'run'/'manifest.csv')
    m = pd.read_csv(p, dtype=str, keep_default_na=False)
    assert list(m.columns) == ['item', 'hash', 'label', 'role'] and (m['role'] == 'labeled').sum() == 40
    back = Split.load(dig, p)
    for r in ('labeled', 'pool', 'test'): assert getattr(back, r).tolist() == getattr(sp, r).tolist()
    with pytest.raises(ValueError, match='manifest.csv: manifest lists other items'):
        Split.load(from_arrays(np.zeros((3, 4, 4)), [0, 1, 0]), p)


def test_manifest_notices_changed_files(tmp):
    root = class_folder(tmp/'d', n=4)
    ds = from_folder(root)
    p = budget_split(ds, 1).save(ds, tmp/'m.csv')
    noise(root/'cat'/'0.png', seed=4242)  # same name, other content
    with pytest.raises(ValueError, match='other file contents'): Split.load(from_folder(root), p)


def test_stage_data_writes_manifest_and_skips(tmp):
    class_folder(tmp/'d', n=4); (tmp/'d'/'cat'/'bad.png').write_bytes(b'')
    st = Stage('s', {'seed': 0}, tmp/'run')
    ds, sp = stage_data(st, str(tmp/'d'), 1, seed=0)
    cfg = read_json(st.path('config.json'))
    assert cfg['manifest']['sha1'] == file_hash(st.path('manifest.csv'))
    skipped = pd.read_csv(st.path('skipped.csv'))
    assert skipped['path'].tolist() == [str(tmp/'d'/'cat'/'bad.png')] and 'empty file' in skipped['reason'][0]


# issue 13, kind 6: a test set that silently lacks a class
def test_class_with_one_image_gets_no_test_image_and_warns(tmp):
    class_folder(tmp, ('a', 'b'), n=6); noise(tmp/'c'/'0.png', seed=99)
    ds = from_folder(tmp, verbose=False)
    with pytest.warns(UserWarning, match="no images of class 'c'"): sp = budget_split(ds, 1)
    from smallwb.data import per_class_accuracy, check_test
    with pytest.warns(UserWarning): counts = check_test(ds, sp.test)
    assert counts == {'a': 3, 'b': 3, 'c': 0}
    assert per_class_accuracy(ds, sp.test, ds.labels[sp.test])['c'] == {'n': 0, 'accuracy': None}


def test_empty_test_class_folder_is_reported(tmp):
    class_folder(tmp/'train', ('cat', 'dog'), n=3); class_folder(tmp/'test', ('cat',), n=2, start=50)
    (tmp/'test'/'dog').mkdir()
    with pytest.warns(UserWarning, match="no images of class 'dog'"): budget_split(ds := from_folder(tmp, verbose=False), 2)
    assert any(s.path == str(tmp/'test'/'dog') and 'no test images' in s.reason for s in ds.report)


# issue 13, kind 10: 12-bit data in a 16-bit PNG is scaled by the range it uses, not by 65535
def test_twelve_bit_png_is_not_near_black(tmp):
    Image.fromarray(np.linspace(0, 4095, 100).astype(np.uint16).reshape(10, 10)).save(tmp/'12.png')
    a = load_image(tmp/'12.png')
    assert a.max() == 255 and a.min() == 0


# issue 12: the layouts people have, each folder described in one line
@pytest.mark.parametrize('val', ['val', 'valid', 'validation'])
def test_train_val_layout_reports_on_val(tmp, val, capsys):
    class_folder(tmp/'train', n=4); class_folder(tmp/val, n=2, start=100)
    ds = from_folder(tmp)
    out = capsys.readouterr().out
    assert f'{val}/: 4 images (cat 2, dog 2): the test set' in out and 'train/: 8 images' in out
    sp = budget_split(ds, 2)
    assert len(sp.test) == 4 and len(sp.valid) == 0 and set(ds.splits[sp.test]) == {'test'}


def test_train_val_test_layout_validates_on_val(tmp):
    class_folder(tmp/'train', n=4); class_folder(tmp/'val', n=2, start=100); class_folder(tmp/'test', n=3, start=200)
    class_folder(tmp/'unlabeled', ('x',), n=3, start=300)  # a class folder in the pool is not a class of the data
    with pytest.raises(ValueError, match="pool class folder 'x'"): from_folder(tmp, verbose=False)
    import shutil; shutil.rmtree(tmp/'unlabeled'); [noise(tmp/'unlabeled'/f'{i}.png', seed=400 + i) for i in range(3)]
    sp = budget_split(ds := from_folder(tmp, verbose=False), 2)
    assert (len(sp.labeled), len(sp.valid), len(sp.test), len(sp.pool)) == (4, 4, 6, 3 + 4)


def test_directory_links_followed_and_loops_reported(tmp):
    class_folder(tmp/'train', n=2); class_folder(tmp/'elsewhere', ('cat',), n=3, start=500)
    os.symlink(tmp/'elsewhere'/'cat', tmp/'train'/'cat'/'linked')
    os.symlink(tmp/'train', tmp/'train'/'dog'/'up')
    ds = from_folder(tmp/'train', verbose=False)
    assert ds.counts().to_dict() == {'cat': 5, 'dog': 2}
    assert any(Path(s.path).name == 'up' and 'loop' in s.reason for s in ds.report)


def test_a_file_beside_train_and_val_is_reported(tmp):
    "A new user's find: an image right beside train/ and val/ was dropped without a word; it is a reported skip now."
    class_folder(tmp/'train', n=3)
    class_folder(tmp/'val', n=2, start=50)
    noise(tmp/'top.png', seed=99)
    noise(tmp/'train'/'loose.png', seed=98)
    ds = from_folder(tmp, verbose=False)
    why = {Path(s.path).name: s.reason for s in ds.report}
    assert why == {'top.png': 'file outside any class folder', 'loose.png': 'file outside any class folder'}
    assert len(ds) == 10
