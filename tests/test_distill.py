"Distillation: the KD loss, teacher checks, the callback's cache/live paths, pseudo-labels, students that reload."
import numpy as np, pytest, torch, torch.nn.functional as F
from smallwb.core import FeatureCache
from smallwb.data import digits, budget_split
from smallwb.transfer import save_model, load_model
from pathlib import Path
from smallwb.distill import (kd_loss, soft_cross_entropy, load_teacher, teacher_logits, create_student, fit_student,
                             pseudo_labels,
                             pick_threshold, KDCallback, to_teacher_input, predict_logits, n_params, flops,
                             student_size,
                             choose_student, fit_head_student, head_agreement, distill, frozen_backbone, wilson,
                             quick_teacher)

PHOTOS = Path(__file__).parents[2]/'shared'/'data'/'hymenoptera'

@pytest.fixture(scope='module')
def photos():
    "A tiny real-photo folder: 8 ants and 8 bees from hymenoptera's train/ (skipped when the data set is absent)."
    if not PHOTOS.exists(): pytest.skip(f"{PHOTOS} not found: real-photo tests need ../shared/data/hymenoptera")
    from smallwb.data import from_folder, Dataset
    ds = from_folder(PHOTOS/'train', verbose=False)
    keep = np.concatenate([np.flatnonzero(ds.labels == c)[:12] for c in range(2)])
    sub = Dataset([ds.items[i] for i in keep], ds.labels[keep], ds.classes, name='hym24', root=ds.root)
    return sub, budget_split(sub, 4, test_size=0.25, seed=0)

@pytest.fixture(scope='module')
def data():
    ds = digits()
    sp = budget_split(ds, 4, seed=0)
    return ds, sp

@pytest.fixture(scope='module')
def teacher(data, tmp_path_factory):
    "A tiny CNN teacher at 32px (any load_model-able model can teach), a few steps on the labeled items."
    ds, sp = data
    learn, info = fit_student(ds, sp.labeled, 'cnn_small', size=32, epochs=3, seed=0)
    r = info['recipe']
    return save_model(tmp_path_factory.mktemp('t')/'teacher.pth', learn.model, r['arch'], ds.classes, r['size'],
                      r['mean'], r['std'])

def test_kd_loss():
    s, t, y = torch.randn(6, 5), torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(kd_loss(s, t, y, alpha=0), F.cross_entropy(s, y))
    assert torch.allclose(kd_loss(s, t, F.one_hot(y, 5).float(), 0.3, 3.), kd_loss(s, t, y, 0.3, 3.))
    assert kd_loss(t, t, y, alpha=1).abs() < 1e-6 and kd_loss(s, t, y, alpha=1) > 0
    for T in (0, -2.):
        with pytest.raises(ValueError, match='temperature must be > 0'): kd_loss(s, t, y, T=T)

def test_teacher_bad_input(data, teacher, tmp_path):
    ds, _ = data
    with pytest.raises(ValueError, match="the student's data has"): load_teacher(teacher, ds.classes[:9])
    bad = tmp_path/'bad.pth'
    bad.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='does not load'): load_teacher(bad, ds.classes)
    with pytest.raises(FileNotFoundError, match='not found'): load_teacher(tmp_path/'none.pth')

def test_teacher_logits_cached(data, teacher, tmp_path):
    ds, sp = data
    cache = FeatureCache(tmp_path)
    a = teacher_logits(teacher, ds, sp.test[:20], cache)
    n = cache.computed
    b = teacher_logits(teacher, ds, sp.test[:20], cache)
    assert n == 20 and cache.computed == 20 and np.allclose(a, b)
    m, meta = load_model(teacher)
    assert np.allclose(a, predict_logits(m, ds, sp.test[:20], meta['size'], meta['mean'], meta['std']), atol=1e-5)

def test_teacher_input_resizes():
    x = torch.zeros(2, 3, 16, 16)  # mid-grey at mean 0.5, std 0.5
    y = to_teacher_input(x, dict(mean=(0.5,)*3, std=(0.5,)*3), dict(size=32, mean=(0.25,)*3, std=(0.25,)*3))
    assert y.shape == (2, 3, 32, 32) and torch.allclose(y, torch.ones_like(y))

def test_pseudo_labels():
    lg = np.log(np.array([[.8, .2], [.55, .45], [.1, .9]]))
    k, y = pseudo_labels(lg, 'hard', 0.7)
    assert list(k) == [0, 2] and list(y) == [0, 1]
    k, y = pseudo_labels(lg, 'soft')
    assert len(k) == 3 and y.shape == (3, 2)
    with pytest.raises(ValueError, match='pool is empty'): pseudo_labels(np.zeros((0, 2)))
    assert pick_threshold(np.exp(lg), [0, 1, 1], 1.0) == pytest.approx(0.8)

def test_fit_student_kd_pool(data, teacher, tmp_path):
    ds, sp = data
    cache = FeatureCache(tmp_path)
    learn, info = fit_student(ds, sp.labeled, 'cnn', teacher=teacher, pool_idx=sp.pool[:50], pseudo='hard',
                              threshold=0., epochs=2, cache=cache)
    kd = [c for c in learn.cbs if isinstance(c, KDCallback)][0]
    assert kd.n_cached > 0 and kd.n_live == 0  # un-augmented batches came from the cache
    assert learn.loss_func is soft_cross_entropy  # restored after the fit
    assert info['n_pseudo'] == 50 and 0 <= info['pseudo_accuracy'] <= 1
    r = info['recipe']
    p = save_model(tmp_path/'s.pth', learn.model, r['arch'], ds.classes, r['size'], r['mean'], r['std'])
    m, _ = load_model(p)
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(m(x), learn.model.cpu().eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match='pool is empty'):
        fit_student(ds, sp.labeled, teacher=teacher, pool_idx=[], pseudo='soft', epochs=1, cache=cache)

def test_kd_composes_with_mixup(data, teacher, tmp_path):
    from smallwb.mix import MixUpCutMix
    ds, sp = data
    learn, _ = fit_student(ds, sp.labeled, 'cnn', teacher=teacher, cbs=[MixUpCutMix()], epochs=1,
                           cache=FeatureCache(tmp_path))
    kd = [c for c in learn.cbs if isinstance(c, KDCallback)][0]
    assert kd.n_live > 0 and kd.n_cached == 0  # the teacher saw the mixed batches

def test_students_are_small():
    big, _ = create_student('mnv3s050', 10)
    small, r = create_student('cnn', 10)
    assert r['size'] == 16 and n_params(small) * 5 < n_params(big)
    with pytest.raises(ValueError, match="unknown student"): create_student('nope')


def test_teacher_outputs_from_cached_features(data, tmp_path):
    "A probe on the unchanged pretrained backbone answers from the feature cache; a changed backbone runs as a model."
    from smallwb.transfer import fit_probe, save_model, create_classifier
    ds, sp = data
    cache = FeatureCache(tmp_path/'c')
    for members in ([['pool']], [['tap4', 'tap5']]):
        m = fit_probe(ds, sp.labeled, members=members, backbone='lite0', size=32, cache=cache)
        p = save_model(tmp_path/'p.pth', m, m.arch, ds.classes, 32, (0.5,)*3, (0.5,)*3)
        assert frozen_backbone(*load_teacher(p)) == 'lite0'
        got = torch.tensor(teacher_logits(p, ds, sp.test[:30], cache)).softmax(1)
        want = torch.tensor(predict_logits(m, ds, sp.test[:30], 32, (0.5,)*3, (0.5,)*3)).softmax(1)
        assert torch.allclose(got, want, atol=1e-4)
    with torch.no_grad():
        m = create_classifier('lite0', 10)
        m.backbone.bn1.bias.add_(0.1)
    p = save_model(tmp_path/'t.pth', m, dict(name='classifier', backbone='lite0', n_classes=10), ds.classes, 32, (0.5,
                                                                                                                  )*3,
                   (0.5,)*3)
    assert frozen_backbone(*load_teacher(p)) is None
    n = cache.computed
    teacher_logits(p, ds, sp.test[:30], cache)
    assert cache.computed == n + 30  # its logits cached by checkpoint

def test_student_size_against_the_teacher():
    from smallwb.transfer import create_classifier
    assert student_size(flops(create_classifier('lite2', 2, pretrained=False), 260))[0] == 192
    assert student_size(flops(create_classifier('lite0', 2, pretrained=False), 224), speedup=1.0)[0] == 224
    s, why = student_size(1e6)
    assert s == 32 and 'may not be faster' in why

def test_wilson():
    lo, hi = wilson(81, 263)
    assert abs(lo - 0.2553) < 1e-3 and abs(hi - 0.3662) < 1e-3
    assert wilson(0, 0) == (0., 1.) and wilson(5, 5)[1] == 1. and wilson(0, 5)[0] == 0.

def test_distill_on_digits_picks_the_cnn_and_holds_out_pool(data, teacher, tmp_path):
    ds, sp = data
    model, rep = distill(ds, sp.labeled, teacher, sp.pool[:50], epochs=1, cache=FeatureCache(tmp_path))
    assert (rep['student'], rep['fit'], rep['pseudo_mode'], rep['n_pseudo'], rep['agreement_n']) == ('cnn', 'fastai',
                                                                                                     'soft', 45, 5)
    assert len(rep['held_out']) == 5 and set(rep['held_out']) <= set(sp.pool[:50].tolist())
    assert rep['agreement_ci'][0] <= rep['agreement'] <= rep['agreement_ci'][1] and rep['flops_ratio'] > 1
    with pytest.raises(ValueError, match="unknown student 'vgg'"): distill(ds, sp.labeled, teacher, sp.pool[:10],
                                                                           student='vgg')

def test_photo_student_is_a_pretrained_head(photos, tmp_path):
    "On real photos `auto` gives Lite0 with a head on frozen features; cross-fitted agreement covers every pool item."
    ds, sp = photos
    cache = FeatureCache(tmp_path)
    t = quick_teacher(ds, sp.labeled, tmp_path/'t.pth',
                      size=64)  # a small input keeps the test fast; the stage runs at native size
    name, size, why = choose_student(ds, flops(load_teacher(t)[0], 64) * 50)
    assert name == 'lite0' and size % 16 == 0 and 'photos' in why
    model, rep = distill(ds, sp.labeled, t, sp.pool, size=48, cache=cache, speedup=1.0)
    held = rep['held_out']  # 10% of the pool, kept out of the head's fit (the edge stage judges int8 on them)
    assert len(held) == round(0.1 * len(sp.pool)) and set(held) <= set(sp.pool.tolist())
    assert rep['fit'] == 'head' and rep['pseudo_mode'] == 'hard' and rep['n_pseudo'] == len(sp.pool) - len(held)
    assert rep['agreement_n'] == len(sp.pool) and 0 <= rep['agreement'] <= 1  # every pool item, each out of its fit
    assert 'cross-fitting' in rep['agreement_on'] and "held out of the student's training" in rep['agreement_on']
    assert rep['recipe']['size'] == 48 and model(torch.zeros(1, 3, 48, 48)).shape == (1, 2)
    with pytest.raises(ValueError, match='hard pseudo-labels'): fit_head_student(ds, sp.labeled, teacher=t,
                                                                                 pool_idx=sp.pool, pseudo='soft')

def test_kd_and_mixup_restore_an_integer_loss(data, teacher):
    "Both handlers swap (the mixer only for a y_int loss), the lower order restores first; the learner's loss is back."
    from fastai.losses import CrossEntropyLossFlat
    from smallwb.mix import MixUpCutMix
    from smallwb.transfer import make_dls, make_learner
    ds, sp = data
    model, r = create_student('cnn', 10)
    tm, tmeta = load_teacher(teacher, ds.classes)
    dls = make_dls(ds, sp.labeled, sp.labeled[:8], r['size'], r['mean'], r['std'], seed=0, device='cpu')
    lf = CrossEntropyLossFlat()
    kd = KDCallback(tm, tmeta, r)
    learn = make_learner(model, dls, loss_func=lf, cbs=[MixUpCutMix(), kd])
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    assert learn.loss_func is lf and kd.n_live > 0


def test_experiment_markers_follow_the_library():
    "The distill experiment's student choices are the library's students; calibration_size refuses 0 before any kernel."
    from smallwb.distill import STUDENTS
    from smallwb.pipeline import notebook_params
    exp = Path(__file__).parents[1]/'experiments'
    d = notebook_params(exp/'03_distill.ipynb')
    assert list(d['student'].rule.values) == ['auto', *STUDENTS]
    assert d['temperature'].rule.lo > 0 and d['epochs'].quick == 3
    e = notebook_params(exp/'99_edge.ipynb')
    with pytest.raises(ValueError): e['calibration_size'].check(0)
    assert e['calibration_size'].check(3.0) == 3
