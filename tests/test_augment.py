"Augmentation presets, random policy, bad input, the previewer widget and augmented feature views."
import numpy as np, pytest, torch
import ipywidgets as W
from smallwb.augment import (policy, random_policy, PRESETS, POLICIES, OPS, DOMAINS, Augment, preview_widget,
                             show_augmentations, augmentation_grid)
from smallwb.data import from_arrays
from smallwb.transfer import make_dls

@pytest.fixture(scope='module')
def ds():
    rng = np.random.default_rng(0)
    return from_arrays(rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8), np.arange(12) % 3, name='tiny')

IM = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)

def test_presets_respect_domain_switches():
    assert 'hflip' not in policy('aggressive', domain='digits', size=32).ops
    assert {'hflip', 'vflip'} <= set(policy('aggressive', domain='overhead', size=32).ops)
    assert 'rotate' not in policy('moderate', rotate=0).ops
    assert policy('conservative', hflip=False).ops == ['rotate', 'shift', 'brightness']
    assert policy('none').ops == [] and (policy('none')(IM) == IM).all()
    # stronger presets contain the weaker ones' ops
    ops = {p: set(policy(p, size=32).ops) for p in ('conservative', 'moderate', 'aggressive')}
    assert ops['conservative'] <= ops['moderate'] <= ops['aggressive']

def test_pipelines_are_inspectable_and_reproducible():
    a = policy('moderate', size=32, seed=3)
    assert isinstance(a, Augment) and 'moderate' in repr(a)
    names = [t['__class_fullname__'] for t in a.to_dict()['transform']['transforms']]
    assert 'RandomResizedCrop' in names and 'HorizontalFlip' in names
    out = a(IM)
    assert out.shape == IM.shape and out.dtype == np.uint8 and not (out == IM).all()
    assert (policy('moderate', size=32, seed=3)(IM) == out).all()

def test_magnitude_changes_strength():
    diff = lambda m: np.abs(policy('moderate', magnitude=m, seed=0, hflip=False)(IM).astype(int) - IM).mean()
    assert diff(0.0) == 0 and diff(1.0) > diff(0.1)

def test_policy_names_are_the_presets_and_random():
    assert POLICIES == (*PRESETS, 'random') and len(POLICIES) == len(set(POLICIES)) >= 3
    for name in POLICIES: assert isinstance(policy(name, size=32, seed=0), Augment)


def test_bad_input_errors():
    with pytest.raises(ValueError, match=f"unknown preset 'heavy'; valid: {', '.join(POLICIES)}$"): policy('heavy')
    with pytest.raises(ValueError, match=r"unknown op 'twist'.*valid ops: hflip"): random_policy(ops=['twist'])
    with pytest.raises(ValueError, match='magnitude 2 is out of range'): policy('moderate', magnitude=2)
    with pytest.raises(ValueError, match='magnitude -1 is out of range'): random_policy(magnitude=-1)
    with pytest.raises(ValueError, match='smaller than the crop size 32'): policy('aggressive', size=32)(IM[:20, :20])
    with pytest.raises(ValueError, match='unknown domain'): policy('moderate', domain='x-ray')

def test_random_policy_draws_n_ops():
    a = random_policy(n=1, magnitude=1.0, ops=['vflip', 'brightness'], domain='overhead', seed=0)
    outs = [a(IM) for _ in range(20)]
    flipped = [(o == IM[::-1]).all() for o in outs]
    assert any(flipped) and not all(flipped)  # sometimes the flip, sometimes the other op
    with pytest.raises(ValueError, match='only 1 ops'): random_policy(n=2, ops=['hflip', 'shift'], domain='digits')

def test_augmentation_only_on_training_items(ds):
    aug = policy('aggressive', size=16, seed=0)
    dls = make_dls(ds, np.arange(8), np.arange(8, 12), size=16, tfm=aug, bs=4)
    assert dls.train.dataset.tfm is aug and dls.valid.dataset.tfm is None

def test_grid_and_figure(ds):
    ims, titles = augmentation_grid(ds, policy('moderate', size=16, seed=0), n=2, copies=3, size=16)
    assert ims.shape == (8, 16, 16, 3) and titles[0].endswith('(original)') and titles[1] == ''
    fig = show_augmentations(ds, 'conservative', n=2, copies=2, size=16)
    assert len(fig.axes) == 6

def _all(box):
    for c in box.children:
        yield c
        if isinstance(c, W.Box): yield from _all(c)

def test_preview_widget_controls_rerender(ds):
    w = preview_widget(ds, n=2, preset='moderate', seed=0, size=16)
    assert isinstance(w, W.VBox) and 'smallwb-preview' in w._dom_classes
    kids = list(_all(w))
    get = lambda cls, d: [k for k in kids if isinstance(k, cls) and getattr(k, 'description', None) == d][0]
    img = [k for k in kids if isinstance(k, W.Image)][0]
    assert img.format == 'png' and bytes(img.value).startswith(b'\x89PNG')
    assert get(W.Dropdown, 'preset').value == 'moderate'
    assert get(W.FloatSlider, 'magnitude').value == PRESETS['moderate'].magnitude
    assert get(W.Dropdown, 'preset').options == POLICIES
    changes = [(W.FloatSlider, 'magnitude', 1.0), (W.Checkbox, 'vflip', True), (W.Checkbox, 'hflip', False),
               (W.IntSlider, 'rotate', 90), (W.Dropdown, 'preset', 'aggressive')]
    for cls, d, v in changes:
        before = bytes(img.value)
        get(cls, d).value = v
        assert bytes(img.value) != before, f'{d} did not re-render the grid'
