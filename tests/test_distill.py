"Distillation: the KD loss, teacher checks, the callback's cache/live paths, pseudo-labels, students that reload."
import numpy as np, pytest, torch, torch.nn.functional as F
from smallwb.core import FeatureCache
from smallwb.data import digits, budget_split
from smallwb.transfer import save_model, load_model
from smallwb.distill import (kd_loss, soft_cross_entropy, load_teacher, teacher_logits, create_student, fit_student, pseudo_labels,
                             pick_threshold, KDCallback, to_teacher_input, predict_logits, n_params)

@pytest.fixture(scope='module')
def data():
    ds = digits(); sp = budget_split(ds, 4, seed=0)
    return ds, sp

@pytest.fixture(scope='module')
def teacher(data, tmp_path_factory):
    "A tiny CNN teacher at 32px (any load_model-able model can teach), a few steps on the labeled items."
    ds, sp = data
    learn, info = fit_student(ds, sp.labeled, 'cnn_small', size=32, epochs=3, seed=0)
    r = info['recipe']
    return save_model(tmp_path_factory.mktemp('t')/'teacher.pth', learn.model, r['arch'], ds.classes, r['size'], r['mean'], r['std'])

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
    bad = tmp_path/'bad.pth'; bad.write_bytes(b'garbage')
    with pytest.raises(ValueError, match='does not load'): load_teacher(bad, ds.classes)
    with pytest.raises(FileNotFoundError, match='not found'): load_teacher(tmp_path/'none.pth')

def test_teacher_logits_cached(data, teacher, tmp_path):
    ds, sp = data; cache = FeatureCache(tmp_path)
    a = teacher_logits(teacher, ds, sp.test[:20], cache); n = cache.computed
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
    k, y = pseudo_labels(lg, 'hard', 0.7); assert list(k) == [0, 2] and list(y) == [0, 1]
    k, y = pseudo_labels(lg, 'soft'); assert len(k) == 3 and y.shape == (3, 2)
    with pytest.raises(ValueError, match='pool is empty'): pseudo_labels(np.zeros((0, 2)))
    assert pick_threshold(np.exp(lg), [0, 1, 1], 1.0) == pytest.approx(0.8)

def test_fit_student_kd_pool(data, teacher, tmp_path):
    ds, sp = data; cache = FeatureCache(tmp_path)
    learn, info = fit_student(ds, sp.labeled, 'cnn', teacher=teacher, pool_idx=sp.pool[:50], pseudo='hard', threshold=0., epochs=2, cache=cache)
    kd = [c for c in learn.cbs if isinstance(c, KDCallback)][0]
    assert kd.n_cached > 0 and kd.n_live == 0  # un-augmented batches came from the cache
    assert learn.loss_func is soft_cross_entropy  # restored after the fit
    assert info['n_pseudo'] == 50 and 0 <= info['pseudo_accuracy'] <= 1
    r = info['recipe']; p = save_model(tmp_path/'s.pth', learn.model, r['arch'], ds.classes, r['size'], r['mean'], r['std'])
    m, _ = load_model(p); x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(m(x), learn.model.cpu().eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match='pool is empty'):
        fit_student(ds, sp.labeled, teacher=teacher, pool_idx=[], pseudo='soft', epochs=1, cache=cache)

def test_kd_composes_with_mixup(data, teacher, tmp_path):
    from smallwb.mix import MixUpCutMix
    ds, sp = data
    learn, _ = fit_student(ds, sp.labeled, 'cnn', teacher=teacher, cbs=[MixUpCutMix()], epochs=1, cache=FeatureCache(tmp_path))
    kd = [c for c in learn.cbs if isinstance(c, KDCallback)][0]
    assert kd.n_live > 0 and kd.n_cached == 0  # the teacher saw the mixed batches

def test_students_are_small():
    big, _ = create_student('mobilenetv3_small_050', 10)
    small, r = create_student('cnn', 10)
    assert r['size'] == 16 and n_params(small) * 5 < n_params(big)
    with pytest.raises(ValueError, match="unknown student"): create_student('nope')
