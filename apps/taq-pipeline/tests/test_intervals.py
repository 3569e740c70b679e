"""Interval and paired-comparison code against hand-computed cases; seed splits never overlap."""

import math

import numpy as np
import pytest

from taq_pipeline.intervals import (
    Claim,
    compare,
    mean_interval,
    paired_difference,
    psnr_db,
    psnr_interval,
)
from taq_pipeline.seeds import HELDOUT_START, TUNING_START, seed_split, split_seeds


def test_two_values_give_their_own_range():
    # Resampling {1, 3} twice: means 1 (p 1/4), 2 (p 1/2), 3 (p 1/4); the 2.5 and 97.5
    # percentiles of that distribution are 1 and 3.
    interval = mean_interval([1.0, 3.0])
    assert (interval.value, interval.low, interval.high) == (2.0, 1.0, 3.0)


def test_constant_values_give_a_zero_width_interval():
    interval = mean_interval([0.25] * 7)
    assert interval.value == interval.low == interval.high == 0.25


def test_mean_interval_matches_the_normal_approximation_on_many_samples():
    values = np.random.default_rng(1).normal(10.0, 2.0, 400)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # = 0.196 for sd 2
    interval = mean_interval(values)
    assert interval.low == pytest.approx(values.mean() - half, abs=0.03)
    assert interval.high == pytest.approx(values.mean() + half, abs=0.03)


def test_psnr_comes_from_the_mean_mse():
    # per-sample MSEs 1 and 3: PSNR of the mean MSE 2 = 10 log10(255^2 / 2) = 45.12 dB,
    # not the mean of the per-sample PSNRs (46.20 dB)
    interval = psnr_interval([1.0, 3.0])
    assert interval.value == pytest.approx(10 * math.log10(255**2 / 2))
    assert interval.low == pytest.approx(10 * math.log10(255**2 / 3))
    assert interval.high == pytest.approx(10 * math.log10(255**2 / 1))
    assert math.isinf(psnr_db(0.0))


def test_paired_difference_of_a_constant_ratio_is_exact():
    # A's error is half of B's on every sample: A beats B by 10 log10(2) = 3.01 dB on
    # every resample, so the interval has zero width
    b = np.array([2.0, 8.0, 5.0, 11.0])
    diff = paired_difference(b / 2, b)
    for end in (diff.value, diff.low, diff.high):
        assert end == pytest.approx(10 * math.log10(2), abs=1e-12)


def test_samples_equal_to_fp_give_infinite_bounds_not_nan():
    # {0, 0, 4}: a resample of only zero MSEs has an infinite PSNR (p 8/27); the upper bound
    # is infinite and the lower that of all-4 resamples (p 1/27 > 2.5 %), never nan
    interval = psnr_interval([0.0, 0.0, 4.0])
    assert math.isinf(interval.high)
    assert interval.low == pytest.approx(10 * math.log10(255**2 / 4))
    # two variants both exact on a resample agree there (0 dB), not nan
    same = paired_difference([0.0, 0.0, 4.0], [0.0, 0.0, 4.0])
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    better = paired_difference([0.0, 0.0, 1.0], [0.0, 0.0, 4.0])
    assert better.low == 0.0 and not math.isnan(better.high)


def test_a_claim_is_met_only_when_the_interval_excludes_the_margin():
    per_sample = {
        "A": {"mse": [1.0, 1.0], "correct": [1, 1]},
        "B": {"mse": [2.0, 2.0], "correct": [1, 0]},
        "C": {"mse": [0.5, 4.0], "correct": [1, 1]},  # better on one sample, worse on the other
    }
    assert compare(Claim("A", "B"), per_sample).met
    assert not compare(Claim("A", "B", margin=3.02), per_sample).met  # 3.01 dB < target
    mixed = compare(Claim("C", "B"), per_sample)
    assert mixed.difference.low < 0 < mixed.difference.high and not mixed.met
    assert "NOT met" in mixed.describe()
    accuracy = compare(Claim("A", "B", "accuracy"), per_sample)  # correct diffs 0 and 1
    assert (accuracy.difference.low, accuracy.difference.high) == (0.0, 1.0)
    assert not accuracy.met


@pytest.mark.parametrize("split", ["heldout", "tuning"])
def test_heldout_seeds_never_overlap_calibration_or_tuning(split):
    for seed in (0, 7, 123456):
        split_ = seed_split(seed, num_images=1000, split=split, samples=100)
        calibration = set(split_.calibration)
        tuning = set(split_seeds(seed, "tuning", HELDOUT_START - TUNING_START))
        heldout = set(split_seeds(seed, "heldout", 10000))
        assert not calibration & tuning and not calibration & heldout and not tuning & heldout
        assert set(split_.evaluation) <= (heldout if split == "heldout" else tuning)


def test_a_split_too_large_for_its_range_is_refused():
    with pytest.raises(ValueError, match="at most 1000"):
        seed_split(0, num_images=1001, split="heldout", samples=10)
    with pytest.raises(ValueError, match="unknown"):
        seed_split(0, num_images=10, split="test", samples=10)
