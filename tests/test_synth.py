"Synthesis: the renderer, the conditional VAE, and evaluate_synthetic's bookkeeping and errors."
import numpy as np, pandas as pd, pytest
from smallwb.data import digits, budget_split
from smallwb.synth import digit_fonts, render_digits, fit_cvae, sample_cvae, evaluate_synthetic, verdict

@pytest.fixture(scope='module')
def data():
    ds = digits(); sp = budget_split(ds, 2, seed=0); sp.test = sp.test[:60]
    return ds, sp

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

def test_evaluate_synthetic(data):
    ds, sp = data
    x, y = render_digits(2, seed=0)
    df = evaluate_synthetic(ds, sp, x, y, ratios=(0, 1), steps=2)
    assert list(df.n_synth) == [0, 20] and df.gain_points.iloc[0] == 0 and df.accuracy.between(0, 1).all()
    with pytest.raises(ValueError, match='20 synthetic images but 19 labels'): evaluate_synthetic(ds, sp, x, y[:19])
    with pytest.raises(ValueError, match='needs 40 synthetic images'): evaluate_synthetic(ds, sp, x, y, ratios=(0, 2))

def test_verdict():
    assert verdict(pd.DataFrame(dict(ratio=[1, 1, 2], gain_points=[2., 4., -9.]))).startswith('synthetic data helped: +3.0 points')
    assert 'hurt' in verdict(pd.DataFrame(dict(ratio=[1, 1], gain_points=[-2., -4.])))
    assert 'no clear difference' in verdict(pd.DataFrame(dict(ratio=[1, 1], gain_points=[5., -1.])))
