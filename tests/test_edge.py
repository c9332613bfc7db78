"`smallwb.edge` on tiny models: export with metadata and parity, the shipped classifier, int8 with its budget loop, latency, and the bad inputs."
import numpy as np
import pytest
import torch, torch.nn as nn
from smallwb import transfer
from smallwb.data import digits, budget_split
from pathlib import Path
from smallwb.transfer import accuracy, model_input
from smallwb.edge import (ExportError, ParityError, Int8Error, export_onnx, export_checkpoint, onnx_metadata,
                          OnnxClassifier, OnnxModule,
                          check_parity, torch_fn, onnx_fn, preprocess, quantize, quantize_within_budget, sensitive_ends,
                          node_errors,
                          profile, cpu_info, model_inputs, required_agreement, choose_shipped)


SIZE, MEAN, STD = 8, (0.5,)*3, (0.5,)*3
META = dict(size=SIZE, mean=MEAN, std=STD, crop_pct=None)
PHOTOS = Path(__file__).parents[2]/'shared'/'data'/'hymenoptera'


class PixelLinear(nn.Module):
    "A non-CNN model: flattened pixels → linear."
    def __init__(self, size=SIZE, n_classes=10):
        super().__init__()
        self.fc = nn.Linear(3*size*size, n_classes)
    def forward(self, x): return self.fc(x.flatten(1))


class TinyCNN(nn.Module):
    def __init__(self, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2),
                                  nn.ReLU())
        self.fc = nn.Linear(32, n_classes)
    def forward(self, x): return self.fc(self.body(x).mean((2, 3)))


transfer.ARCHS.setdefault('test_pixel_linear', lambda size=SIZE, n_classes=10: PixelLinear(size, n_classes))


@pytest.fixture(scope='module')
def digits_data():
    ds = digits()
    sp = budget_split(ds, 20, seed=0)
    x = lambda idx: preprocess(ds.images(idx, SIZE), dict(size=SIZE, mean=MEAN, std=STD))
    return ds, sp, x


def fit(model, x, y, steps=150):
    "A few full-batch Adam steps: enough for digits at 8 px."
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope='module')
def pixel_model(digits_data, tmp_path_factory):
    ds, sp, x = digits_data
    m = fit(PixelLinear(), x(sp.labeled), ds.labels[sp.labeled])
    d = tmp_path_factory.mktemp('pix')
    ck = transfer.save_model(d/'pix.pth', m, dict(name='test_pixel_linear', size=SIZE, n_classes=10), ds.classes, SIZE,
                             MEAN, STD)
    return m, ck, export_checkpoint(ck, d/'pix.onnx')


def test_export_metadata_and_parity(pixel_model, digits_data):
    ds, sp, x = digits_data
    m, ck, path = pixel_model
    meta = onnx_metadata(path)
    assert meta['classes'] == ds.classes and meta['size'] == SIZE and meta['mean'] == list(MEAN)
    assert meta['arch']['name'] == 'test_pixel_linear'
    r = check_parity(m, OnnxModule(path), ds, sp.test[:200], META)
    assert r['top1_agreement'] == 1.0 and r['max_abs_diff'] < 1e-4 and r['n'] == 200 and r['agreement_ci'][0] > 0.98
    for b in (1, 7):  # dynamic batch
        assert onnx_fn(path)(x(sp.test[:b])).shape == (b, 10)


def test_parity_breaks_loudly(pixel_model, digits_data):
    ds, sp, x = digits_data
    _, _, path = pixel_model
    other = PixelLinear().eval()
    with pytest.raises(ParityError, match='parity broken'):
        check_parity(other, OnnxModule(path), ds, sp.test[:50], META, name='pix.onnx')


def test_shipped_classifier_matches_torch(pixel_model, digits_data, tmp_path):
    from PIL import Image
    ds, sp, x = digits_data
    m, _, path = pixel_model
    oc = OnnxClassifier(path, threads=1)
    ims = ds.images(sp.test[:40])  # original 8x8 size, uint8
    want = [ds.classes[i] for i in torch_fn(m)(x(sp.test[:40])).argmax(1)]
    assert list(oc(ims).label) == want
    for i in range(3): Image.fromarray(ims[i]).save(tmp_path/f'{i}.png')
    (tmp_path/'bad.png').write_bytes(b'')
    res = oc(tmp_path).set_index('item')
    assert [res.loc[str(tmp_path/f'{i}.png'), 'label'] for i in range(3)] == want[:3]
    assert 'empty' in res.loc[str(tmp_path/'bad.png'), 'error']
    assert oc(tmp_path/'0.png').label.iloc[0] == want[0]


def test_unsupported_op_is_named(tmp_path):
    @torch.library.custom_op('smallwb_test::mystery', mutates_args=())
    def mystery(x: torch.Tensor) -> torch.Tensor: return x * 2
    @mystery.register_fake
    def _(x): return torch.empty_like(x)
    class M(nn.Module):
        def forward(self, x): return mystery(x).mean((2, 3))
    with pytest.raises(ExportError, match='smallwb_test.mystery'):
        export_onnx(M(), tmp_path/'m.onnx', ['a', 'b', 'c'], 8, MEAN, STD)


def test_missing_and_corrupt_files(tmp_path, pixel_model):
    with pytest.raises(FileNotFoundError, match='not found'): OnnxClassifier(tmp_path/'nope.onnx')
    (tmp_path/'bad.onnx').write_bytes(b'\x12\x34 this is not protobuf' * 3)
    with pytest.raises(ValueError, match='not a valid ONNX model'): OnnxClassifier(tmp_path/'bad.onnx')
    cut = tmp_path/'cut.onnx'
    cut.write_bytes(pixel_model[2].read_bytes()[:5000])  # a truncated download
    with pytest.raises(ValueError, match='cut.onnx'): OnnxClassifier(cut)


def test_calibration_shape_is_checked(pixel_model, tmp_path):
    path = pixel_model[2]
    with pytest.raises(ValueError, match=r'has shape \(4, 3, 16, 16\).*float32 \(N, 3, 8, 8\)'):
        quantize(path, tmp_path/'q.onnx', np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match='is empty'):
        quantize(path, tmp_path/'q.onnx', np.zeros((0, 8, 8, 3), np.uint8))
    assert model_inputs(path, np.zeros((2, 20, 20, 3), np.uint8)).shape == (2, 3, 8, 8)  # any image size is resized
    assert not (tmp_path/'q.onnx').exists()


def test_int8_within_budget_pixel_linear(pixel_model, digits_data, tmp_path):
    ds, sp, x = digits_data
    _, _, path = pixel_model
    before = path.read_bytes()
    r = quantize_within_budget(path, tmp_path/'q.onnx', ds.images(sp.labeled), ds, sp.pool[:400], budget=1.0,
                               log=lambda m: None)
    assert r['within_budget'] and r['drop'] <= 1.0 and r['fp32_accuracy'] > 0.8
    assert r['n'] == 400 and r['required_agreement'] == 0.
    assert abs(accuracy(OnnxModule(tmp_path/'q.onnx'), ds, sp.pool[:400], **META) - r['accuracy']) < 1e-9
    assert onnx_metadata(tmp_path/'q.onnx')['classes'] == ds.classes and path.read_bytes() == before


def test_int8_budget_loop_and_strict_error(digits_data, tmp_path):
    ds, sp, x = digits_data
    m = fit(TinyCNN(), x(sp.labeled), ds.labels[sp.labeled], steps=60)
    path = export_onnx(m, tmp_path/'cnn.onnx', ds.classes, SIZE, MEAN, STD)
    ends = sensitive_ends(path)
    assert len(ends) == 2 and ends[0] != ends[1]
    q = quantize(path, tmp_path/'q.onnx', ds.images(sp.labeled))
    err = node_errors(path, q, x(sp.labeled[:16]))
    assert len(err) > 0 and err.sqnr.is_monotonic_increasing
    logs = []
    with pytest.raises(ParityError, match='could not be brought within') as e:
        quantize_within_budget(path, tmp_path/'s.onnx', ds.images(sp.labeled), ds, sp.pool[:100],
                               budget=-50, max_attempts=3, strict=True, log=logs.append)
    assert 'cnn.onnx is unchanged' in str(e.value) and path.exists() and (tmp_path/'s.onnx').exists()
    assert len([l for l in logs if l.startswith('int8 attempt')]) == 3
    assert '2 nodes kept in float' in logs[1]  # second attempt: the first conv and the last layer


def test_dynamic_quantization(pixel_model, digits_data, tmp_path):
    ds, sp, x = digits_data
    q = quantize(pixel_model[2], tmp_path/'d.onnx', mode='dynamic')
    assert check_parity(OnnxModule(pixel_model[2]), OnnxModule(q), ds, sp.test[:100], META, rtol=None,
                        min_agreement=0.9)['top1_agreement'] >= 0.9
    with pytest.raises(ValueError, match="mode 'fp16'"): quantize(pixel_model[2], tmp_path/'e.onnx', mode='fp16')


def test_profile_and_cpu(pixel_model):
    m, _, path = pixel_model
    df = profile({'torch': torch_fn(m), 'ort': onnx_fn(path, 1)}, SIZE, (1, 4), threads=1, runs=50, warmup=2)
    assert len(df) == 4 and dict(zip(df.batch, df.runs)) == {1: 50, 4: 12} and (df.p50_ms <= df.p99_ms).all() and (df.threads == 1).all()
    c = cpu_info()
    assert isinstance(c['vnni'], bool) and c['cores'] >= 1 and c['cpu']


def test_edge_stage_alone_trains_a_fallback(tmp_path):
    "`smallwb run --stages edge`: no earlier model, so the stage trains a quick default, says so, exports fp32 + int8."
    import nbformat
    from smallwb.pipeline import run_chain
    from smallwb.core import read_json
    run = run_chain(['edge'], {'quick': True}, 'alone', tmp_path, log=lambda s: None)
    m = read_json(run/'edge'/'metrics.json')
    assert all((run/'edge'/f).exists() for f in ('model.onnx', 'model.int8.onnx', 'latency.png'))
    assert m['took'] == 'edge/fallback.pth' and m['shipped'] == 'model' and m['accuracy'] > 0.3
    assert m['parity']['top1_agreement'] == 1.0 and m['int8_size_ratio'] < 0.35 and isinstance(m['cpu']['vnni'], bool)
    assert m['int8']['n'] > 0 and 0 <= m['int8']['agreement'] <= 1 and m['test_agreement_ci'][0] <= m['test_agreement']
    assert set(m['latency']['b1_ms']) == {'torch fp32', 'ORT fp32', 'ORT int8'} and m['latency_ms'] > 0
    log = ''.join(str(o.get('text', '')) for c in nbformat.read(run/'edge.ipynb',
                                                                as_version=4).cells for o in c.get('outputs', []))
    assert 'no earlier stage saved a model' in log


def test_small_sets_need_99_percent_agreement():
    assert required_agreement(199, 0.5, True) == 0.99 and required_agreement(200, 0.5, True) == 0.
    assert required_agreement(1000, 1.0, False) == 0.99 and required_agreement(1000, 0.5, False) == 0.995


def test_a_perfect_small_sample_is_not_enough_when_int8_moves_margins_past_others():
    "22 of 22 images agree, but int8 shifts a margin by more than other images' margins: expected agreement says no."
    from smallwb.edge import _passes, expected_agreement
    margins = np.linspace(0.5, 6, 22)
    a = np.stack([margins, np.zeros(22)], 1)
    b = a - np.stack([np.r_[np.full(21, 0.2), 2.0], np.zeros(22)], 1)  # the widest margin (6) loses 2: still agrees
    assert (a.argmax(1) == b.argmax(1)).all()
    e = expected_agreement(a, b)
    assert abs(e - (1 - 6 / 22**2)) < 1e-9  # that change of -2 would flip the 6 images whose margin is under 2
    assert not _passes(dict(agreement=1.0, expected_agreement=e), budget=100, need=0.99)
    assert _passes(dict(agreement=1.0, expected_agreement=1.0), budget=100, need=0.99)


def test_agreement_rule_refuses_a_drop_within_budget(pixel_model, digits_data, tmp_path):
    "On fewer than 200 images a drop within budget is not enough: the agreement must reach 99% (or what is asked)."
    ds, sp, x = digits_data
    r = quantize_within_budget(pixel_model[2], tmp_path/'q.onnx', ds.images(sp.labeled), ds, sp.pool[:150], budget=100,
                               min_agreement=1.01, max_attempts=1, log=lambda m: None)
    assert r['drop'] <= 100 and not r['within_budget'] and r['required_agreement'] == 1.01


def test_int8_for_every_shippable_architecture(digits_data, tmp_path):
    """Every architecture a run can hand on exports at its own size and quantizes: a linear probe (as head students are),
    a probe on stage taps (its Concat needs the pre-processing fallback), the compact CNN and a timm student."""
    from smallwb.transfer import fit_probe, save_model
    from smallwb.distill import create_student
    ds, sp, _ = digits_data
    cnn, r = create_student('cnn', 10)
    mnv3, rm = create_student('mnv3s050', 10)
    linear = fit_probe(ds, sp.labeled, backbone='lite0', size=32)
    taps = fit_probe(ds, sp.labeled, members=[['tap4', 'tap5']], backbone='lite0', size=32)
    models = {'linear': (linear, linear.arch, 32), 'taps': (taps, taps.arch, 32), 'cnn': (cnn, r['arch'], 16),
              'mnv3': (mnv3, rm['arch'], 32)}
    for name, (m, arch, size) in models.items():
        ck = save_model(tmp_path/f'{name}.pth', m, arch, ds.classes, size, MEAN, STD)
        f32 = export_checkpoint(ck, tmp_path/f'{name}.onnx')
        q = quantize(f32, tmp_path/f'{name}.int8.onnx', ds.images(sp.labeled[:32], size))
        meta = onnx_metadata(q)
        assert meta['size'] == size and meta['arch']['name'] == arch['name'], name
        assert OnnxModule(q)(torch.zeros(2, 3, size, size)).shape == (2, 10), name
        assert q.stat().st_size < 0.6 * f32.stat().st_size, name
        agree = check_parity(OnnxModule(f32), OnnxModule(q), ds, sp.test[:60], meta, rtol=None, min_agreement=0.)
        assert agree['top1_agreement'] > 0.5, name
    fallback = onnx_metadata(tmp_path/'taps.int8.onnx')['int8_preprocess']
    assert fallback.startswith('ONNX shape inference only') and 'TypeError' in fallback  # the Concat crash, caught


def test_int8_failure_names_the_model_and_op(pixel_model):
    "An error ONNX Runtime's quantizer raises about a node becomes an `Int8Error` naming the file, architecture and op."
    import onnx
    from smallwb.edge import _int8_error
    path = pixel_model[2]
    node = onnx.load(str(path)).graph.node[-1]
    e = _int8_error(ValueError(f"no quantization rule for node {node.name}"), path)
    assert isinstance(e, Int8Error) and 'pix.onnx' in str(e) and 'test_pixel_linear' in str(e)
    assert f'{node.op_type} ({node.name})' in str(e)
    assert 'no operator named' in str(_int8_error(RuntimeError('calibration failed'), path))


def test_choose_shipped(tmp_path):
    from smallwb.core import write_json
    (tmp_path/'distill').mkdir()
    (tmp_path/'transfer').mkdir()
    write_json(tmp_path/'distill'/'metrics.json', dict(model='s.pth', took='transfer/t.pth', shortfall_points=2.0,
                                                       shortfall_on='valid'))
    assert choose_shipped(tmp_path/'distill'/'s.pth', tmp_path)[1] == 'student'
    ck, who, why = choose_shipped(tmp_path/'distill'/'s.pth', tmp_path, budget=1.0)
    assert who == 'teacher' and ck == tmp_path/'transfer'/'t.pth' and '2.0 points short' in why


def test_photo_model_keeps_its_crop(tmp_path):
    "A photo model exports at its own size and centre crop, and the shipped classifier applies it as the library does."
    if not PHOTOS.exists(): pytest.skip(f"{PHOTOS} not found: real-photo tests need ../shared/data/hymenoptera")
    from smallwb.data import from_folder, Dataset
    from smallwb.transfer import predict_logits, save_model, fit_probe
    full = from_folder(PHOTOS/'val', verbose=False)
    keep = np.concatenate([np.flatnonzero(full.labels == c)[:6] for c in range(2)])
    ds = Dataset([full.items[i] for i in keep], full.labels[keep], full.classes, name='hym12', root=full.root)
    m = fit_probe(ds, np.arange(len(ds)), backbone='lite0', size=64, crop_pct=0.875)
    ck = save_model(tmp_path/'p.pth', m, m.arch, ds.classes, 64, MEAN, STD, 0.875)
    path = export_checkpoint(ck, tmp_path/'p.onnx')
    meta = onnx_metadata(path)
    assert meta['size'] == 64 and meta['crop_pct'] == 0.875
    want = predict_logits(m, ds, np.arange(len(ds)), **model_input(meta)).argmax(1)
    inbox = tmp_path/'inbox'
    inbox.mkdir()
    for i, f in enumerate(ds.items): (inbox/f'{i:02d}{Path(f).suffix}').symlink_to(f)
    got = OnnxClassifier(path)(inbox).sort_values('item')
    assert list(got.label) == [ds.classes[j] for j in want]
