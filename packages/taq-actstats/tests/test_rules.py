"""The tier rules at and around every threshold; SmoothQuant keeps the layer's function."""

import numpy as np
import pytest

from taq_actstats.smoothquant import (
    activation_noise,
    reround_error,
    smoothed_noise,
    smoothing_scales,
)
from taq_actstats.tiers import TierRule, assign_bits, grid_scale, sqnr_db

RULE = TierRule(rule="absolute")
SQNR = TierRule(rule="sqnr", target_db=23.0)
ONE = np.array([[1.0]])


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
    got = assign_bits(np.array([[absmax]]), ONE, np.array([post_gelu]), np.array([[2.0]]), RULE)
    assert got[0, 0] == bits


def test_sqnr_of_a_grid():
    # absmax 127 on 8 bits: step 1, noise 1/12; power 1/12 -> 0 dB, each bit pair +12.04 dB
    assert sqnr_db(np.array(127.0), np.array(1 / 12), 8) == pytest.approx(0.0, abs=1e-9)
    gain = sqnr_db(np.array(1.0), np.array(1.0), 8) - sqnr_db(np.array(1.0), np.array(1.0), 6)
    assert gain == pytest.approx(20 * np.log10(127 / 31))


@pytest.mark.parametrize("delta_db, bits", [(-0.01, 8), (0.0, 6), (12.9, 6), (13.0, 4)])
def test_sqnr_rule_picks_the_fewest_bits_meeting_the_target(delta_db, bits):
    absmax = np.array([[3.0]])
    step = grid_scale(absmax, np.array(6))  # power putting A6 exactly at the target + delta
    power = step**2 / 12 * 10 ** ((SQNR.target_db + delta_db) / 10)
    got = assign_bits(absmax, power, np.array([False]), np.array([[2.0]]), SQNR)
    assert got[0, 0] == bits  # A4's grid is 20 log10(31 / 7) = 12.9 dB noisier than A6's


def test_sqnr_rule_is_scale_free():
    rng = np.random.default_rng(1)
    absmax, power = rng.uniform(0.1, 20, (5, 7)), rng.uniform(1e-3, 1.0, (5, 7))
    gelu, tails = np.zeros(7, bool), np.ones((5, 7))
    base = assign_bits(absmax, power, gelu, tails, SQNR)
    scaled = assign_bits(absmax * 37.0, power * 37.0**2, gelu, tails, SQNR)
    np.testing.assert_array_equal(base, scaled)
    assert len(np.unique(base)) > 1


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="--rule 'paper' is unknown"):
        TierRule(rule="paper")


def test_heavy_tails_force_a8():
    tails = np.array([[RULE.outlier_ratio + 1, RULE.outlier_ratio]])
    for rule in (RULE, SQNR):
        power = np.array([[1.0, 1.0]])  # SQNR 48 dB at A4: A4 unless the tails force A8
        got = assign_bits(np.array([[1.0, 1.0]]), power, np.array([False, False]), tails, rule)
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


def test_activation_noise_is_the_rounding_noise_at_the_output():
    column_power = np.array([2.0, 3.0])
    got = activation_noise(np.array([127.0, 254.0]), np.array([8, 8]), column_power)
    assert got == pytest.approx((1 / 12 + 4 / 12) * 5.0)


def test_weights_on_the_grid_reround_exactly():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(4, 64)).astype(np.float64)
    codes[:, 0], codes[:, 1] = 0, 15  # every group spans the full grid
    weight = codes * 0.125 - 1.0
    np.testing.assert_allclose(reround_error(weight, 4, 64), 0.0, atol=1e-10)
    assert reround_error(weight + rng.normal(0, 0.03, weight.shape), 4, 64).sum() > 1e-3


def _layer(outlier: float):
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(64, 128))
    peak = np.r_[np.full(127, 1.0), outlier]  # per input channel max |x|
    channel_abs = np.tile(peak, (5, 1))  # (step, in)
    power = np.full((5, 1), 0.1) * channel_abs**2 / (channel_abs**2).mean(-1, keepdims=True)
    scales = smoothing_scales(peak, np.abs(weight).max(0))
    plain = activation_noise(np.full(5, peak.max()), np.full(5, 8), (weight**2).sum(0))
    smoothed = smoothed_noise(
        weight, scales, np.max(channel_abs / scales, -1), np.full(5, 8), power, (4, 64)
    )
    return plain, smoothed


def test_smoothing_pays_only_against_a_large_outlier():
    plain, smoothed = _layer(outlier=400.0)  # A8 step set by one channel: smoothing wins
    assert smoothed < plain
    plain, smoothed = _layer(outlier=1.0)  # flat input: re-rounding W4 costs more
    assert smoothed > plain
