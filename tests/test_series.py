"Sensor-trace augmentations (smallwb.series)."
import numpy as np, pytest
from smallwb.series import SeriesAugment, SERIES_OPS, jitter, scaling, time_warp, window_slice


def test_series_ops():
    rng = np.random.default_rng(0)
    x = np.sin(np.linspace(0, 6, 50)).astype(np.float32)
    for f in (jitter, scaling, time_warp, window_slice): assert f(x, rng).shape == x.shape
    assert np.allclose(window_slice(x, rng, ratio=1.0), x)
    w = time_warp(x, rng, sigma=0.5)
    assert np.allclose(w[[0, -1]], x[[0, -1]]) and not np.allclose(w, x)
    assert SeriesAugment(p=1.0, seed=0)(np.stack([x, x])).shape == (2, 50)
    assert SeriesAugment().ops == list(SERIES_OPS)  # every op by default
    with pytest.raises(ValueError, match='valid: jitter, scaling, time_warp, window_slice'): SeriesAugment(['flip'])
    with pytest.raises(ValueError, match='at least 4 time steps'): SeriesAugment()(np.ones(2))
