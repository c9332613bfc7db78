"MixUp/CutMix and the loss-swapping base: odd batches, batch of one, soft targets, loss restored, handlers that compose."
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat
from fastai.callback.core import Callback, CancelFitException, CancelTrainException, CancelEpochException
from smallwb.core import set_seed
from smallwb.data import from_arrays
from smallwb.transfer import make_dls
from smallwb.mix import SoftMixup, MixUpCutMix, LossHandler, soft_cross_entropy, mix_targets, soft_targets

@pytest.fixture(scope='module')
def dls():
    rng = np.random.default_rng(0)
    ds = from_arrays(rng.integers(0, 255, (23, 8, 8, 3), dtype=np.uint8), np.arange(23) % 4, name='tiny')
    return make_dls(ds, np.arange(15), np.arange(15, 23), size=8, bs=5, device='cpu')  # 15 items, bs 5: odd batches

def tiny(): return nn.Sequential(nn.Flatten(), nn.Linear(3*8*8, 4))

class Spy(Callback):
    order, run_valid = 50, False
    def before_fit(self): self.seen = []
    def before_batch(self):
        lf = self.learn.loss_func
        self.seen.append((type(getattr(lf, '__self__', lf)).__name__, self.y.clone()))

def test_odd_batch_and_batch_of_one():
    set_seed(0)
    m = SoftMixup(mixup_alpha=1.0, cutmix_alpha=0., label_smoothing=0., num_classes=3)
    x = torch.arange(3.).view(3, 1, 1, 1).repeat(1, 1, 2, 2)
    y = torch.tensor([0, 1, 2])
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
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2, cbs=[MixUpCutMix(label_smoothing=0.1, off_epochs=1),
                                                                     spy])
    assert learn.loss_func is lf
    assert {n for n, _ in spy.seen} == {'MixUpCutMix'}
    assert all(y.shape == (5, 4) for _, y in spy.seen)  # soft (B, C) targets in learn.yb, odd batch size
    last = spy.seen[-1][1]
    assert torch.allclose(last.max(1).values, torch.full((5,), 0.9 + 0.1/4))  # mixing off at the end: smoothed one-hot

@pytest.mark.parametrize('exc', [CancelFitException, CancelTrainException, CancelEpochException])
def test_loss_restored_after_cancel(dls, exc):
    class Stop(Callback):
        order = 60
        def before_batch(self):
            if self.training and self.iter == 1: raise exc()
    learn = Learner(dls, tiny(), loss_func=CrossEntropyLossFlat())
    lf = learn.loss_func
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2, cbs=[MixUpCutMix(), Stop()])
    assert learn.loss_func is lf

class Low(LossHandler): order = 0
class High(LossHandler): order = 10

@pytest.mark.parametrize('exc', [None, CancelEpochException, CancelFitException])
def test_stacked_handlers_restore_the_original(dls, exc):
    "Two handlers swap in turn; the lower-order one restores first, yet the learner ends with its own loss."
    class Stop(Callback):
        order = 60
        def before_batch(self):
            if exc and self.training and self.iter == 1: raise exc()
    learn = Learner(dls, tiny(), loss_func=CrossEntropyLossFlat())
    lf, spy = learn.loss_func, Spy()
    with learn.no_bar(), learn.no_logging(): learn.fit(2, 1e-2, cbs=[Low(), High(), spy, Stop()])
    assert learn.loss_func is lf
    assert {n for n, _ in spy.seen} == {'High'}  # the loss of the handler that swapped last is the one in use

def test_leftover_swap_undone_at_next_fit(dls):
    "A fit that died with a plain exception skips fastai's events; the next fit puts the learner's loss back first."
    class Boom(Callback):
        order = 60
        def before_batch(self):
            if self.training: raise RuntimeError('boom')
    learn = Learner(dls, tiny(), loss_func=CrossEntropyLossFlat())
    lf = learn.loss_func
    h = High()
    with pytest.raises(RuntimeError), learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=[h, Boom()])
    assert learn.loss_func == h.lf  # left swapped
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=[h])
    assert learn.loss_func is lf

def test_soft_target_loss_left_in_place(dls):
    "A distillation-style loss that accepts (B, C) targets is not replaced and receives them."
    got = []
    def kd_like(pred, y):
        got.append(y.shape)
        return F.cross_entropy(pred, y)
    learn = Learner(dls, tiny(), loss_func=kd_like)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-2, cbs=MixUpCutMix())
    assert learn.loss_func is kd_like and got[0] == (5, 4) and len(got[-1]) == 1  # training soft, validation hard

def test_soft_cross_entropy():
    from timm.loss import SoftTargetCrossEntropy
    x = torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 1])
    p = torch.softmax(torch.randn(4, 3), 1)
    assert torch.allclose(soft_cross_entropy(x, y), soft_cross_entropy(x, F.one_hot(y, 3).float()))
    assert torch.allclose(soft_cross_entropy(x, y), F.cross_entropy(x, y))
    assert torch.allclose(soft_cross_entropy(x, p), SoftTargetCrossEntropy()(x, p))

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
            learn = fit_config(ds, np.arange(20), None, 'random', dict(mixup_alpha=0.4, cutmix_alpha=1.0), epochs=1,
                               bs=10, seed=seed, pretrained=False, domain='digits')
        return learn.model.head[1].weight.detach().clone()
    a, b, c = weights(0), weights(0), weights(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
