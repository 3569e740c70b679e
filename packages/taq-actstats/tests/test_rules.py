"""The tier rule at and around every threshold; SmoothQuant keeps the layer's function."""

import numpy as np
import pytest

from taq_actstats.smoothquant import smoothing_scales
from taq_actstats.tiers import TierRule, assign_bits, grid_scale

RULE = TierRule()


@pytest.mark.parametrize(
    "absmax, post_gelu, bits",
    [
        (4.999, True, 4),
        (5.0, True, 6),
        (7.999, True, 6),
        (8.0, True, 8),
        (5.999, False, 4),
        (6.0, False, 6),
        (9.999, False, 6),
        (10.0, False, 8),
        (0.1, False, 4),
    ],
)
def test_tier_thresholds(absmax, post_gelu, bits):
    got = assign_bits(np.array([[absmax]]), np.array([post_gelu]), np.array([[2.0]]), RULE)
    assert got[0, 0] == bits


def test_heavy_tails_force_a8():
    tails = np.array([[RULE.outlier_ratio + 1, RULE.outlier_ratio]])
    got = assign_bits(np.array([[1.0, 1.0]]), np.array([False, False]), tails, RULE)
    assert got.tolist() == [[8, 4]]


def test_grid_covers_the_range():
    assert grid_scale(np.array(7.0), np.array(4)) == pytest.approx(1.0)
    assert grid_scale(np.array(127.0), np.array(8)) == pytest.approx(1.0)


def test_smoothquant_preserves_the_layer_output():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16)) * np.r_[np.ones(15), 40.0]  # one outlier channel
    w = rng.normal(size=(8, 16))
    s = smoothing_scales(np.abs(x).max(0), np.abs(w).max(0))
    np.testing.assert_allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-10, atol=1e-10)
    assert np.abs(x / s).max() < np.abs(x).max() / 4
