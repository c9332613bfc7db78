"Synthesis: renderer, CVAE, masks, composites, distribution calibration, the paired verdict, and the stage on real photos."
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest
from smallwb.core import FeatureCache
from smallwb.data import digits, budget_split, from_folder, Split
from smallwb.transfer import Recipe, fit_probe, predict, save_model, load_model
from smallwb.synth import (digit_fonts, render_digits, fit_cvae, sample_cvae, grabcut_mask, object_masks, mask_stats,
                           mask_iou, paste, background, Composites, tukey, untukey, base_stats, calibrated_samples,
                           ProbeSpec, probe_spec, validation_folds, score_sources, compare_sources, verdict, hand_on,
                           fit_with, set_heads, make_sources, image_rows, rendered)

PHOTOS = Path(__file__).parents[2]/'shared'/'data'/'hymenoptera'
PIXELS = ProbeSpec(Recipe('pixels', members=[['pixels8']], C=1.0), 'lite0', 32)  # a probe that needs no backbone: fast


@pytest.fixture(scope='module')
def data():
    ds = digits()
    sp = budget_split(ds, 5, seed=0)
    sp.test = sp.test[:60]
    return ds, sp


def need_photos():
    if not PHOTOS.exists(): pytest.skip(f"{PHOTOS} not found: the real-photo tests need ../shared/data/hymenoptera beside the checkout")


def test_render_digits():
    assert len(digit_fonts()) >= 10
    x, y = render_digits(2, seed=0)
    assert x.shape == (20, 8, 8, 3) and x.dtype == np.uint8 and list(np.bincount(y)) == [2]*10
    lv = np.round(x[..., 0].astype(float) / 255 * 16)
    assert np.allclose(x[..., 0], np.round(lv / 16 * 255))  # on sklearn's 0..16 intensity grid
    assert (render_digits(2, seed=0)[0] == x).all() and not (render_digits(2, seed=1)[0] == x).all()


def test_cvae(data):
    ds, sp = data
    m = fit_cvae(ds, sp.labeled, steps=30, seed=0)
    x, y = sample_cvae(m, 3, seed=0)
    assert x.shape == (30, 8, 8, 3) and list(np.bincount(y)) == [3]*10 and (sample_cvae(m, 3, seed=0)[0] == x).all()
    with pytest.raises(ValueError, match='no labeled items'): fit_cvae(ds, [])


def disc_scene(seed=0, side=128):
    "A yellow disc on a noisy green field, its true mask, and a rough prior map (a broad Gaussian near it)."
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - 64)**2 + (xx - 60)**2 < 30**2
    rng = np.random.default_rng(seed)
    im = np.clip(np.where(disc[..., None], [220, 180, 40], [30, 90, 40]) + rng.normal(0, 12, (side, side, 3)), 0, 255)
    prior = np.exp(-((yy - 64)**2 + (xx - 64)**2) / (2 * 35.**2))[::14, ::14]
    return im.astype(np.uint8), disc, prior


def test_grabcut_mask_finds_the_object():
    im, disc, prior = disc_scene()
    m = grabcut_mask(im, prior)
    assert m.shape == (128, 128) and mask_iou(m, disc) > 0.9
    assert (grabcut_mask(im, prior) == m).all()  # deterministic
    assert mask_iou(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0 and mask_iou(np.eye(4), np.ones((4, 4))) == 0.25


def test_mask_stats():
    st = mask_stats(np.stack([np.zeros((10, 10)), np.ones((10, 10)), np.pad(np.ones((4, 4)), 3)]))
    assert st['unusable'] == 2 and list(st['usable']) == [False, False, True] and abs(st['mean_area'] - (0 + 1 + .16) / 3) < 1e-9


def test_paste_puts_the_object_on_the_background():
    im = np.zeros((96, 96, 3), np.uint8)
    im[30:66, 30:66] = [250, 200, 0]
    mask = np.zeros((96, 96), np.float32)
    mask[30:66, 30:66] = 1
    bg = background(np.random.default_rng(1), 96, np.zeros((0, 96, 96, 3), np.uint8))
    out, alpha = paste(im, mask, bg, np.random.default_rng(0), photometric=False, feather=0)
    assert (out[alpha == 0] == bg[alpha == 0]).all()
    assert np.abs(out[alpha > 0.99].astype(int) - [250, 200, 0]).mean() < 12
    assert 0.05 < alpha.mean() < 0.3
    a, b = paste(im, mask, bg, np.random.default_rng(0))[0], paste(im, mask, bg, np.random.default_rng(0))[0]
    assert (a == b).all() and not (a == paste(im, mask, bg, np.random.default_rng(1))[0]).all()


def test_composites_view_is_deterministic_per_content(data):
    ds, sp = data
    ims = ds.images(sp.labeled[:3], 32)
    masks = {int(i): np.pad(np.ones((16, 16)), 8) for i in sp.labeled[:3]}
    photos, ids = ims[:2], [ds.hashes[i] for i in sp.labeled[:2]]
    v0, v1 = Composites(ds, masks, photos, ids, copy=0), Composites(ds, masks, photos, ids, copy=1)
    i = int(sp.labeled[0])
    assert (v0(i, ims[0]) == Composites(ds, masks, photos, ids, copy=0)(i, ims[0])).all()
    assert not (v0(i, ims[0]) == v1(i, ims[0])).all() and v0.key != v1.key
    assert Composites(ds, masks, photos, ids[:1]).key != v0.key  # other background photos: another cache entry
    assert Composites(ds, masks, photos, ids, seed=1).key != v0.key


def test_tukey_and_calibration():
    v = np.array([-4., 0., 0.25, 9.])
    assert np.allclose(tukey(v), [-2, 0, .5, 3]) and np.allclose(untukey(tukey(v, .3), .3), v)
    rng = np.random.default_rng(0)
    centres = np.stack([np.r_[np.full(10, 3.), np.zeros(10)], np.r_[np.zeros(10), np.full(10, 3.)]])
    pool = np.abs(np.concatenate([c + rng.normal(0, .5, (60, 20)) for c in centres]))
    lab = np.abs(centres + rng.normal(0, .5, (2, 20)))
    S, y = calibrated_samples(lab, [0, 1], base_stats(pool, 4), n_per_item=40, seed=0)
    assert S.shape == (80, 20) and list(np.bincount(y)) == [40, 40]
    assert (((S[:, None] - centres[None])**2).sum(-1).argmin(1) == y).all()  # each sample near its own class
    assert S[y == 0].std(0).mean() > 0.2  # spread, not copies of the labeled item
    assert (calibrated_samples(lab, [0, 1], base_stats(pool, 4), 40, seed=0)[0] == S).all()
    with pytest.raises(ValueError, match='at least 6 unlabeled items'): base_stats(pool[:5])


def test_probe_spec_reads_checkpoints():
    sp = probe_spec({'arch': {'name': 'classifier', 'backbone': 'lite2', 'n_classes': 2}, 'size': 260, 'crop_pct': 0.89,
                     'recipe': {'name': 'probe', 'C': 0.25}})
    assert (sp.sources, sp.backbone, sp.size, sp.crop_pct, sp.recipe.C) == (['pool'], 'lite2', 260, 0.89, 0.25)
    sp = probe_spec({'arch': {'name': 'probe', 'backbone': 'lite0', 'n_classes': 10, 'members': [['tap4', 'tap5']],
                              'dims': None, 'hflip': True, 'hidden': 0}, 'size': 32})
    assert sp.sources == ['tap4', 'tap5'] and sp.recipe.hflip and sp.crop_pct is None
    with pytest.raises(ValueError, match="'cnn' model is not heads on a frozen backbone"): probe_spec({'arch': {'name': 'cnn'}, 'size': 16})


def test_validation_folds(data):
    ds, sp = data
    folds, on = validation_folds(ds, sp, 5, seed=0)
    assert on == '5-fold cross-validation on the 50 labeled items' and len(folds) == 5
    assert sorted(np.concatenate([v for _, v in folds])) == sorted(sp.labeled)
    withval = Split(sp.labeled, sp.pool[10:], sp.test, sp.pool[:10])
    folds, on = validation_folds(ds, withval, 5)
    assert on == 'the validation set (10 items)' and len(folds) == 1 and (folds[0][1] == sp.pool[:10]).all()
    with pytest.raises(ValueError, match='at least 2 labeled items per class'): validation_folds(ds, budget_split(ds, 1), 5)


def test_sources_never_see_validation_items(data):
    ds, sp = data
    seen = []
    def spy(train):
        seen.append(np.asarray(train).copy())
        return {'pixels8': np.zeros((0, 192), np.float32)}, np.zeros(0, np.int64)
    scores = score_sources(ds, sp, PIXELS, {'spy': spy}, k=5, seed=0)
    assert len(seen) == 5
    for f, tr in enumerate(seen): assert not np.isin(scores[scores.fold == f].item, tr).any()
    t = compare_sources(scores)
    assert list(t.recipe) == ['real only', 'spy'] and t.gain.iloc[1] == 0  # no rows: the same model


def test_wrong_labels_hurt_and_the_verdict_says_so(data):
    "A source of the training items' own pixels with shifted labels must lower validation accuracy, and be called so."
    ds, sp = data
    def liar(train):
        f = PIXELS.feats(ds, train)
        return {'pixels8': np.repeat(f['pixels8'], 3, 0)}, np.repeat((ds.labels[train] + 1) % 10, 3)
    t = compare_sources(score_sources(ds, sp, PIXELS, {'liar': liar}, k=5))
    assert t.cv_accuracy.iloc[0] > 0.6 and t.gain.iloc[1] < -0.3
    assert verdict(t)['liar'].startswith('liar hurt: validation accuracy')
    assert hand_on(t, None)[0] is None


def test_rendered_digits_source(data):
    ds, sp = data
    f, y = image_rows(PIXELS, ds, rendered(ds, 2))(sp.labeled[:10])
    assert f['pixels8'].shape == (20, 192) and list(np.bincount(y, minlength=10)) == [2] * 10


def test_make_sources_says_what_it_skips(data):
    ds, _ = data
    from smallwb.data import from_arrays
    odd = from_arrays(ds.arrays[:40], ds.labels[:40] % 2, ['a', 'b'], name='odd')
    sp = budget_split(odd, 3)
    src, notes, info = make_sources(odd, sp, PIXELS, ratios=(0, 1), generator='calibration')
    assert list(src) == ['generated ×1'] and notes == ['simulated: no simulator for odd (small images whose classes are not the digits)']
    tiny = Split(sp.labeled, sp.pool[:3], sp.test)
    src, notes, _ = make_sources(odd, tiny, PIXELS, kinds=('generated',), generator='calibration')
    assert src == {} and notes == ['generated: distribution calibration needs at least 6 unlabeled items, the pool has 3']


def test_hand_on_needs_both_real_only_and_the_model_taken():
    t = pd.DataFrame(dict(recipe=['real only', 'a'], cv_accuracy=[0.8, 0.9], cv_logloss=[0.5, 0.4], gain=[0, 0.1],
                          gain_se=[0, 0.02]))
    assert hand_on(t, None)[0] == 'a' and hand_on(t, 0.85)[0] == 'a'
    assert hand_on(t, 0.9)[0] is None and 'does not beat the model taken (0.900)' in hand_on(t, 0.9)[1]
    assert hand_on(t.assign(gain_se=0.06), None)[0] is None


@pytest.mark.parametrize('members', [[['pool']], [['tap3', 'tap4']]])
def test_set_heads_gives_the_model_the_refitted_heads(data, members):
    "The heads fitted with synthetic rows, put into the checkpoint's model, predict exactly what the heads predict."
    ds, sp = data
    spec = ProbeSpec(Recipe('r', members=members), 'lite0', 32, pretrained=False)
    model = fit_probe(ds, sp.labeled, members, 'lite0', 32, pretrained=False)
    heads = fit_with(ds, sp.labeled, spec, image_rows(spec, ds, rendered(ds, 1)))
    before = predict(model, ds, sp.test[:20], 32, (0.5,) * 3, (0.5,) * 3)
    set_heads(model, model.arch, heads)
    after = predict(model, ds, sp.test[:20], 32, (0.5,) * 3, (0.5,) * 3)
    assert np.allclose(after, spec.probs(heads, spec.feats(ds, sp.test[:20])), atol=1e-4)
    assert not np.allclose(before, after, atol=1e-3)  # the rendered rows changed the heads


@pytest.fixture(scope='module')
def photo_folder(tmp_path_factory):
    "A tiny real-photo folder: 8 ants and 8 bees of hymenoptera's train/, 3 of each of its val/ as the test set."
    need_photos()
    root = tmp_path_factory.mktemp('photos')
    for part, n in (('train', 8), ('val', 3)):
        for c in ('ants', 'bees'):
            (root/part/c).mkdir(parents=True)
            for p in sorted((PHOTOS/part/c).iterdir())[:n]: shutil.copy(p, root/part/c/p.name)
    return root


def test_object_masks_are_cached(photo_folder, tmp_path):
    ds = from_folder(photo_folder, verbose=False)
    cache = FeatureCache(tmp_path/'cache')
    m = object_masks(ds, [0, 1, 2], 'lite0', 224, 0.875, cache=cache)
    assert m.shape == (3, 128, 128) and cache.computed == 3 and 0.01 < m.mean() < 0.9
    assert (object_masks(ds, [2, 0], 'lite0', 224, 0.875, cache=cache) == m[[2, 0]]).all() and cache.computed == 3


def test_stage_on_real_photos(photo_folder, tmp_path):
    "04_synth on real photos after a transfer stage whose recorded validation accuracy is perfect: it hands that model on."
    ds = from_folder(photo_folder, verbose=False)
    sp = budget_split(ds, 3, seed=0)
    m = fit_probe(ds, sp.labeled, backbone='lite0', size=224, crop_pct=0.875)
    save_model(tmp_path/'transfer'/'model.pth', m, m.arch, ds.classes, 224, (0.5,) * 3, (0.5,) * 3, 0.875)
    (tmp_path/'transfer'/'metrics.json').write_text(json.dumps(dict(stage='transfer', model='model.pth', valid_accuracy=1.0,
                                                                     model_params=1, model_mb=2., latency_ms=3.)))
    nb = Path(__file__).parents[1]/'experiments'/'04_synth.ipynb'
    args = ['-p', 'data', str(photo_folder), '-p', 'labels_per_class', '3', '-p', 'out_dir', str(tmp_path), '-p', 'quick', 'True',
            '-y', '{ratios: [1], folds: 2, n_photos: 4}']
    r = subprocess.run([sys.executable, '-m', 'papermill', '-k', 'smallwb', str(nb), str(tmp_path/'synth.ipynb')] + args,
                       capture_output=True, text=True, cwd=nb.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    met = json.loads((tmp_path/'synth'/'metrics.json').read_text())
    assert met['model'] == '../transfer/model.pth' and met['took'] == 'transfer/model.pth'
    assert met['handed_on'] == 'the model taken' and (met['model_params'], met['latency_ms']) == (1, 3.)
    assert set(met['sources']) == {'real only', 'simulated ×1', 'generated ×1'} and met['masks']['n'] == 6
    assert 0 <= met['accuracy'] <= 1 and met['valid_accuracy'] == 1.0
    assert {'masks.png', 'samples_simulated.png', 'samples_generated.png', 'verdict.png'} <= {p.name for p in (tmp_path/'synth').iterdir()}
