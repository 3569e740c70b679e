"""Tiers at an average-bit budget: the budget holds, the allocation is optimal under the
noise model, and time-aware beats static at the same average."""

import itertools

import numpy as np
import pytest

from taq_actstats.budget import (
    allocate_bits,
    budget_bits,
    plan_sqnr_db,
    relative_noise,
    static_budget_bits,
)
from taq_io import Store


def trace(steps=6, layers=9, seed=0):
    rng = np.random.default_rng(seed)
    absmax = rng.uniform(0.5, 12.0, (steps, layers)) * rng.uniform(0.2, 1.0, (steps, 1))
    power = (absmax / rng.uniform(3.0, 40.0, (steps, layers))) ** 2
    return absmax, power


@pytest.mark.parametrize("avg_bits", [4.0, 5.0, 6.0, 7.0, 8.0, 5.3, 6.71])
def test_budget_is_met(avg_bits):
    absmax, power = trace()
    bits = budget_bits(absmax, power, avg_bits)
    assert set(np.unique(bits)) <= {4, 6, 8}
    assert bits.mean() <= avg_bits + 1e-12
    assert avg_bits - bits.mean() < 2 / bits.size  # the largest 2-bit step below the budget
    if (avg_bits - 4) * bits.size / 2 == int((avg_bits - 4) * bits.size / 2):
        assert bits.mean() == avg_bits


def test_allocation_is_optimal_by_brute_force():
    rng = np.random.default_rng(3)
    weight = rng.uniform(0.1, 10.0, 5)
    for avg_bits in (4.4, 5.2, 6.0, 6.8):
        best = min(
            (relative_noise(np.sqrt(weight), np.ones(5), np.array(c)).sum(), c)
            for c in itertools.product((4, 6, 8), repeat=5)
            if np.mean(c) <= avg_bits + 1e-12
        )
        got = allocate_bits(weight, avg_bits)
        assert relative_noise(np.sqrt(weight), np.ones(5), got).sum() == pytest.approx(best[0])


@pytest.mark.parametrize("avg_bits", [5.0, 6.0, 7.0])
def test_time_aware_beats_static_at_equal_bits(avg_bits):
    absmax, power = trace(layers=10)
    widest = np.broadcast_to(absmax.max(axis=0), absmax.shape)
    timed = budget_bits(absmax, power, avg_bits)
    static = static_budget_bits(widest, power, avg_bits)
    assert timed.mean() == static.mean() == avg_bits
    assert (static == static[0]).all()  # one tier per layer for all steps
    gain = plan_sqnr_db(absmax, power, timed) - plan_sqnr_db(widest, power, static)
    assert gain > 0.5


def test_below_a4_is_refused():
    with pytest.raises(ValueError, match="below A4"):
        budget_bits(*trace(), 3.5)


def test_analyze_at_a_budget(collected_copy, cli):
    out = cli("analyze", "--store", collected_copy, "--avg-bits", "6")
    assert out.returncode == 0, out.stderr
    config = Store.open(collected_copy).require_group("quant_config")
    timed, power = config.read("bits"), config.read("mean_square")
    timed_range = config.read("quant_absmax")
    assert timed.mean() == 6.0 and config.meta.config["avg_bits"] == 6.0
    assert "budget 6 bits, time-aware: average 6.000 bits" in out.stdout
    out = cli("analyze", "--store", collected_copy, "--avg-bits", "6", "--plan", "static",
              "--overwrite")  # fmt: skip
    assert out.returncode == 0, out.stderr
    config = Store.open(collected_copy).require_group("quant_config")
    static, static_range = config.read("bits"), config.read("quant_absmax")
    assert static.mean() == 6.0 and (static == static[0]).all()
    assert (config.read("scale") == config.read("scale")[0]).all()
    shift = config.read("shift")
    np.testing.assert_array_equal(shift, np.broadcast_to(shift[:1], shift.shape))  # NaN pads
    gain = plan_sqnr_db(timed_range, power, timed) - plan_sqnr_db(static_range, power, static)
    assert gain > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("--avg-bits", "3"), "--avg-bits must be in 4..8, got 3"),
        (("--plan", "static"), "--plan static needs a budget: pass --avg-bits B"),
    ],
    ids=["below-a4", "static-without-budget"],
)
def test_bad_budget_flags(store_copy, cli, args, message):
    out = cli("analyze", "--store", store_copy, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
