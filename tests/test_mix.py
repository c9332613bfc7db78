"MixUp/CutMix callback: odd batches, batch of one, soft targets, loss restored, composition with a soft-target loss."
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from smallwb.core import set_seed
from smallwb.data import from_arrays
from smallwb.transfer import make_dls
from smallwb.mix import SoftMixup, MixUpCutMix, SoftTargetCE, mix_targets, soft_targets

@pytest.fixture(scope='module')
def dls():
    rng = np.random.default_rng(0)
    ds = from_arrays(rng.integers(0, 255, (23, 8, 8, 3), dtype=np.uint8), np.arange(23) % 4, name='tiny')
    return make_dls(ds, np.arange(15), np.arange(15, 23), size=8, bs=5, device='cpu')  # 15 items, bs 5: odd batches

def tiny(): return nn.Sequential(nn.Flatten(), nn.Linear(3*8*8, 4))

class Spy(Callback):
    order = 5
    def before_fit(self): self.seen = []
    def before_batch(self):
        if self.training: self.seen.append((type(self.learn.loss_func).__name__, self.y.clone()))

def test_odd_batch_and_batch_of_one():
    set_seed(0)
    m = SoftMixup(mixup_alpha=1.0, cutmix_alpha=0., label_smoothing=0., num_classes=3)
    x = torch.arange(3.).view(3, 1, 1, 1).repeat(1, 1, 2, 2); y = torch.tensor([0, 1, 2])
    xm, ym = m(x.clone(), y)
    assert ym.shape == (3, 3) and torch.allclose(ym.sum(1), torch.ones(3))
    assert torch.equal(xm[2], x[2]) and torch.equal(ym[2], torch.tensor([0., 0., 1.]))  # the odd one out is left alone
    assert not torch.equal(xm[0], x[0])
    x1, y1 = m(x[:1].clone(), y[:1])  # a batch of one: documented no-op
    assert torch.equal(x1, x[:1]) and torch.equal(y1, torch.tensor([[1., 0., 0.]]))

def test_soft_input_targets_and_smoothing():
    y = torch.tensor([[0.5, 0.5, 0.], [0., 0., 1.]])
    assert torch.allclose(mix_targets(y, 3, 0.5), torch.tensor([[0.25, 0.25, 0.5]] * 2))
    assert torch.allclose(soft_targets(torch.tensor([1]), 4, 0.4), torch.tensor([[0.1, 0.7, 0.1, 0.1]]))
    with pytest.raises(ValueError, match='have 2 classes, expected 3'): soft_targets(torch.ones(1, 2), 3)

def test_callback_swaps_and_restores_loss(dls):
    learn = Learner(dls, tiny(), loss_func=CrossEntropyLossFlat())
    lf, spy = learn.loss_func, Spy()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2, cbs=[MixUpCutMix(label_smoothing=0.1, off_epochs=1), spy])
    assert learn.loss_func is lf
    assert {n for n, _ in spy.seen} == {'SoftTargetCE'}
    assert all(y.shape == (5, 4) for _, y in spy.seen)  # soft (B, C) targets in learn.yb, odd batch size
    last = spy.seen[-1][1]; assert torch.allclose(last.max(1).values, torch.full((5,), 0.9 + 0.1/4))  # mixing off at the end: smoothed one-hot

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_loss_restored_after_cancel(dls, exc):
    class Stop(Callback):
        order = 6
        def before_batch(self):
            if self.training and self.iter == 1: raise exc()
    learn = Learner(dls, tiny(), loss_func=CrossEntropyLossFlat()); lf = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=[MixUpCutMix(), Stop()])
    assert learn.loss_func is lf

def test_soft_target_loss_left_in_place(dls):
    "A distillation-style loss that accepts (B, C) targets is not replaced and receives them."
    got = []
    def kd_like(pred, y): got.append(y.shape); return F.cross_entropy(pred, y)
    learn = Learner(dls, tiny(), loss_func=kd_like)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=MixUpCutMix())
    assert learn.loss_func is kd_like and got[0] == (5, 4) and len(got[-1]) == 1  # training soft, validation hard

def test_soft_target_ce():
    x = torch.randn(4, 3); y = torch.tensor([0, 2, 1, 1])
    assert torch.allclose(SoftTargetCE()(x, y), SoftTargetCE()(x, F.one_hot(y, 3).float()))

def test_bad_settings():
    with pytest.raises(ValueError, match='nothing to mix'): MixUpCutMix(mixup_alpha=0, cutmix_alpha=0)
    with pytest.raises(ValueError, match="use 'batch', 'pair' or 'elem'"): MixUpCutMix(mode='row')

def test_fit_config_repeats_for_the_same_seed():
    "An augmented, mixed run is reproducible on the CPU (the experiment contract: metrics repeat for a seed)."
    from smallwb.data import digits
    from smallwb.mix import fit_config, torch_threads
    ds = digits()
    def weights(seed):
        with torch_threads(1):
            learn = fit_config(ds, np.arange(20), None, 'random', dict(mixup_alpha=0.4, cutmix_alpha=1.0), epochs=1, bs=10, seed=seed, pretrained=False, domain='digits')
        return learn.model.head[1].weight.detach().clone()
    a, b, c = weights(0), weights(0), weights(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
