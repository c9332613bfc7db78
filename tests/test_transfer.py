"Transfer learning: probes, checkpoints of every recipe, and the bad inputs the issue lists."
import numpy as np, pytest, torch
from smallwb.core import FeatureCache, set_seed
from smallwb.data import from_arrays
from smallwb.transfer import (Classifier, Probe, Recipe, auto, candidates, check_size, create_backbone, create_classifier,
                              cross_validate, features, fine_tune, fit_probe, load_model, predict, save_model,
                              source_features, predict_heads, fit_heads, tap_features, BACKBONES, create_probe)

NORM = dict(mean=(0.5,)*3, std=(0.5,)*3)

@pytest.fixture(scope='module')
def toy():
    "Two classes a linear model can tell apart: a bright left half or a bright right half (mirror images of each other)."
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, (40, 16, 16)).astype(np.uint8)
    y = np.arange(40) % 2
    x[y == 0, :, :8] += 150; x[y == 1, :, 8:] += 150
    return from_arrays(x, y, classes=['left', 'right'], name='toy')

@pytest.fixture
def cache(tmp_path): return FeatureCache(tmp_path/'cache')

def _acc(m, ds, idx, size=32): return (predict(m, ds, idx, size, **NORM).argmax(1) == ds.labels[idx]).mean()

def test_pixel_probe_learns_and_roundtrips(toy, cache, tmp_path):
    m = fit_probe(toy, np.arange(20), [['pixels4']], size=32, cache=cache)
    assert isinstance(m, Probe) and m.backbone is None  # a pixel model needs no backbone
    assert _acc(m, toy, np.arange(20, 40)) >= 0.9
    save_model(tmp_path/'p.pth', m, m.arch, toy.classes, 32, **NORM)
    m2, meta = load_model(tmp_path/'p.pth')
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m(x), m2(x))
    assert meta['arch']['name'] == 'probe' and meta['size'] == 32

def test_probe_forward_matches_cached_features(toy, cache):
    "The model computes, inside forward, exactly the features its heads were trained on."
    members = [['tap4'], ['pool', 'pixels4']]
    m = fit_probe(toy, np.arange(20), members, size=32, hflip=True, pretrained=False, cache=cache)
    idx = np.arange(20, 26)
    feats = source_features(toy, idx, ['tap4', 'pool', 'pixels4'], size=32, pretrained=False, hflip=True, cache=cache)
    heads = [h for h in m.heads]
    np.testing.assert_allclose(predict_heads(heads, feats, members), predict(m, toy, idx, 32, **NORM), atol=1e-4)

def test_classic_probe_is_a_classifier(toy, cache, tmp_path):
    m = fit_probe(toy, np.arange(20), [['pool']], size=32, pretrained=False, cache=cache)
    assert isinstance(m, Classifier) and m.arch['name'] == 'classifier'
    save_model(tmp_path/'c.pth', m, m.arch, toy.classes, 32, **NORM)
    m2, _ = load_model(tmp_path/'c.pth', n_classes=2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m.eval()(x), m2(x))

def test_tap_features_cached(toy, cache):
    f1 = tap_features(toy, range(10), [4, 5], size=32, pretrained=False, cache=cache)
    assert f1.shape == (10, 2*80 + 2*112) and cache.computed == 10
    c2 = FeatureCache(cache.root); f2 = tap_features(toy, range(10), [4], size=32, pretrained=False, cache=c2)
    assert c2.computed == 0  # every stage was cached by the first call
    np.testing.assert_allclose(f2, f1[:, :160])

def test_auto_chooses_by_cv_and_flip_is_a_choice(toy, cache):
    "Mirroring swaps the classes here: features averaged over flips cannot tell them apart, and CV must see it."
    recipes = [Recipe('pixels', members=[['pixels4']]), Recipe('pixels+flip', members=[['pixels4']], hflip=True)]
    cv = cross_validate(toy, np.arange(20), recipes, size=32, pretrained=False, k=3, cache=cache)
    assert cv.recipe[0] == 'pixels' and cv.cv_accuracy[0] >= 0.9 and cv.cv_accuracy[1] <= 0.7
    m, best, _ = auto(toy, np.arange(20), size=32, pretrained=False, recipes=recipes, k=3, cache=cache)
    assert best.name == 'pixels' and _acc(m, toy, np.arange(20, 40)) >= 0.9

def test_candidates_by_data_size():
    assert not any(r.kind == 'finetune' for r in candidates('lite0', 50))
    assert {r.strategy for r in candidates('lite0', 5000) if r.kind == 'finetune'} == {'head', 'gradual'}
    assert not any(r.hflip for r in candidates('lite0', 50, flips=(False,)))

def test_fine_tune_checkpoint(toy, cache, tmp_path):
    set_seed(0)
    learn = fine_tune(toy, np.arange(16), 'head', size=32, epochs=1, pretrained=False, bs=8, show_progress=False, cache=cache)
    m = learn.model.eval()
    save_model(tmp_path/'f.pth', m, m.arch, toy.classes, 32, **NORM)
    m2, _ = load_model(tmp_path/'f.pth')
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(): torch.testing.assert_close(m(x), m2(x))

# --- bad input -------------------------------------------------------------------------------------

@pytest.fixture
def ckpt(tmp_path):
    m = create_classifier('lite0', 3, pretrained=False)
    return save_model(tmp_path/'m.pth', m, dict(name='classifier', backbone='lite0', n_classes=3), ['a', 'b', 'c'], 32, **NORM)

def test_checkpoint_missing_keys(ckpt, tmp_path):
    ck = torch.load(ckpt, weights_only=True); del ck['state_dict']['head.1.weight']; torch.save(ck, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match=r'1 missing.*head\.1\.weight'): load_model(tmp_path/'bad.pth')

def test_checkpoint_extra_keys(ckpt, tmp_path):
    ck = torch.load(ckpt, weights_only=True); ck['state_dict']['head.2.weight'] = torch.zeros(1); torch.save(ck, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match=r'1 unexpected.*head\.2\.weight'): load_model(tmp_path/'bad.pth')

def test_checkpoint_wrong_shape(ckpt, tmp_path):
    ck = torch.load(ckpt, weights_only=True); ck['state_dict']['head.1.bias'] = torch.zeros(7); torch.save(ck, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match='wrong shape'): load_model(tmp_path/'bad.pth')

def test_checkpoint_wrong_classes(ckpt):
    with pytest.raises(ValueError, match=r'has 3 classes.*expected 10'): load_model(ckpt, n_classes=10)

def test_checkpoint_unknown_arch(ckpt, tmp_path):
    ck = torch.load(ckpt, weights_only=True); ck['meta']['arch']['name'] = 'mystery'; torch.save(ck, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match="unknown architecture 'mystery'"): load_model(tmp_path/'bad.pth')

def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found'): load_model(tmp_path/'nope.pth')

def test_unknown_backbone(toy):
    for f in (lambda: create_backbone('resnet9000'), lambda: features(toy, [0], backbone='resnet9000'),
              lambda: fine_tune(toy, [0, 1], 'head', backbone='resnet9000')):
        with pytest.raises(ValueError, match=r"unknown backbone 'resnet9000'; known: lite0"): f()

def test_hub_weights_offline_error(monkeypatch):
    "Hub weights cannot download here: a clear message naming the offline ways, never random weights."
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)  # fail at once instead of waiting for network timeouts
    with pytest.raises(RuntimeError) as e: create_backbone('resnet18', pretrained=True)
    assert 'lite0' in str(e.value) and 'pretrained=False' in str(e.value)

def test_image_size_too_small(toy):
    for f in (lambda: check_size('lite0', 16), lambda: features(toy, [0], size=16), lambda: tap_features(toy, [0], size=16),
              lambda: fine_tune(toy, [0, 1], 'head', size=16), lambda: fit_probe(toy, [0, 1], size=16)):
        with pytest.raises(ValueError, match=r'image size 16 is too small for lite0 \(at least 32'): f()

def test_bad_strategy_and_source(toy):
    with pytest.raises(ValueError, match="unknown fine-tuning strategy 'nope'"): fine_tune(toy, [0, 1], 'nope')
    with pytest.raises(ValueError, match="unknown feature source 'edges'"): Probe(None, [['edges']], 2)

def test_cv_needs_two_per_class(toy, cache):
    with pytest.raises(ValueError, match='at least 2 labeled items per class'):
        cross_validate(toy, [0, 1, 3], [Recipe('pixels', members=[['pixels4']])], size=32, cache=cache)

@pytest.mark.parametrize('name', list(BACKBONES))
def test_every_backbone_builds_and_forwards(name):
    "The head is sized by what the backbone really returns (mobilenetv3: `head_hidden_size`, not `num_features`)."
    m = create_classifier(name, 3, pretrained=False).eval()
    with torch.no_grad(): out = m(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 3)
    p = create_probe(name, 3, [['pool']]).eval()
    with torch.no_grad(): assert p(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# issue 13, kind 9: every checkpoint load names the file and what is wrong, and refuses pickles without torch's hint
class _Payload: pass

@pytest.mark.parametrize('write, says', [
    (lambda p: p.touch(), 'is an empty file (0 bytes)'),
    (lambda p: p.write_bytes(b'not a torch file at all'), 'is corrupt or truncated'),
    (lambda p: torch.save({'x': _Payload()}, p), 'refused: the weights file holds pickled Python objects')])
def test_bad_checkpoint_files_name_the_file(tmp_path, write, says):
    p = tmp_path/'w.pth'; write(p)
    with pytest.raises(ValueError) as e: create_backbone('lite0', pretrained=str(p))
    assert str(p) in str(e.value) and says in str(e.value) and 'weights_only=False' not in str(e.value)
    with pytest.raises(ValueError, match='w.pth'): load_model(p)


# issue 12: fine-tuning never ends worse than it starts (the validation items score the start as epoch 0)
def test_fine_tuning_that_only_gets_worse_returns_its_start(toy, cache):
    learn = fine_tune(toy, np.arange(30), 'head', size=32, epochs=2, lr=3.0, bs=8, show_progress=False, cache=cache)
    r = learn.report
    assert r['restored_start'] and r['valid_accuracy'] == r['start_valid_accuracy'] and r['valid_n'] == 6
    assert any(e[1] > r['start_valid_loss'] for e in learn.history.epochs)  # its epochs were worse


# issue 12: cross-validation overrules the prior only when it can tell
def test_auto_keeps_the_prior_on_a_tie(toy, cache):
    from smallwb.transfer import choose
    import pandas as pd
    cv = cross_validate(toy, np.arange(10), [Recipe('probe'), Recipe('pixels', members=[['pixels4']])], size=32, pretrained=False, cache=cache)
    assert list(cv.columns[:6]) == ['recipe', 'cv_accuracy', 'cv_se', 'cv_logloss', 'gain', 'gain_se']
    tie = pd.DataFrame(dict(recipe=['probe', 'x'], cv_accuracy=[0.5, 0.8], cv_logloss=[1, 1], gain=[0., 0.3], gain_se=[0., 0.2]))
    assert choose(tie) == 'probe' and choose(tie.assign(gain_se=[0., 0.1])) == 'x'


# issue 12: the probe is scikit-learn's logistic regression on the raw features
def test_probe_equals_scikit_learn(toy, cache):
    from sklearn.linear_model import LogisticRegression
    m = fit_probe(toy, np.arange(20), size=32, pretrained=False, cache=cache)
    F = features(toy, np.arange(40), size=32, pretrained=False, cache=cache)
    sk = LogisticRegression(C=0.5, max_iter=5000).fit(F[:20], toy.labels[:20])
    with torch.no_grad(): ours = m.head.eval()(torch.tensor(F[20:])).numpy()
    np.testing.assert_allclose(ours[:, 1] - ours[:, 0], sk.decision_function(F[20:]), atol=1e-3)


# issue 12: photos run at the backbone's native size with timm's crop; tiny images keep a small squashed input
HYM = __import__('pathlib').Path(__file__).resolve().parents[2]/'shared'/'data'/'hymenoptera'

def test_resolution_from_the_data(toy):
    from smallwb.transfer import choose_size
    assert choose_size(toy, 'lite2')[:2] == (32, None)
    if not HYM.is_dir(): pytest.skip(f'{HYM} is not here (CI has it beside the checkout): the photo half of this test is skipped')
    from smallwb.data import from_folder
    size, crop, why = choose_size(from_folder(HYM, verbose=False), 'lite2')
    assert (size, crop) == (260, 0.89) and 'photos' in why

def test_lite2_probe_on_a_few_real_photos(cache):
    if not HYM.is_dir(): pytest.skip(f'{HYM} is not here (CI has it beside the checkout)')
    from smallwb.data import from_folder, budget_split
    from smallwb.transfer import accuracy
    ds = from_folder(HYM, verbose=False); sp = budget_split(ds, 3, seed=0)
    test = np.concatenate([sp.test[ds.labels[sp.test] == c][:10] for c in range(2)])
    m = fit_probe(ds, sp.labeled, backbone='lite2', size=260, crop_pct=0.89, cache=cache)
    assert accuracy(m, ds, test, 260, **NORM, crop_pct=0.89) >= 0.8  # 3 photos a class; chance is 0.5
