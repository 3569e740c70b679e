"""Ranges by the least quantization error (`--range-method mse`): the estimate matches the
error of really rounding the values, the clip it picks beats a grid over the maximum, and the
budget allocation takes such per-tier errors."""

import numpy as np
import pytest

from taq_actstats.budget import allocate_tiers, static_budget_tiers
from taq_actstats.collect import BINS, histogram
from taq_actstats.ranges import max_ranges, mse_ranges
from taq_actstats.tiers import TIERS
from taq_io import Store


def laplace_steps(steps=3, n=200_000, seed=0):
    """Heavy-tailed inputs per step (a Laplace, wider each step), their histograms binned on
    the first quarter of the values (as `collect` bins every image on image 0's range)."""
    rng = np.random.default_rng(seed)
    values = [rng.laplace(0.0, 1.0 + s, n) for s in range(steps)]
    edges = np.stack([np.linspace(v[: n // 4].min(), v[: n // 4].max(), BINS + 1) for v in values])
    counts = np.stack([histogram(v, e) for v, e in zip(values, edges, strict=True)])
    absmax = np.array([[np.abs(v).max()] for v in values])  # (step, layer)
    power = np.array([[np.mean(v**2)] for v in values])
    return values, absmax, power, edges[None], counts[None]


def rounding_mse(values, clip, bits):
    """The real error of the signed grid over `clip` (what taq-infer's fake-quant does)."""
    scale = clip / (2 ** (bits - 1) - 1)
    codes = np.clip(np.round(values / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return np.mean((codes * scale - values) ** 2)


def test_mse_clip_beats_the_maximum_and_its_estimate_is_the_real_error():
    values, absmax, power, edges, counts = laplace_steps()
    table = mse_ranges(absmax, power, edges, counts, np.zeros((1, 3)))
    for s, v in enumerate(values):
        for t, bits in enumerate(TIERS):
            clip = table.clip[s, 0, t]
            real = rounding_mse(v, clip, bits)
            assert real < rounding_mse(v, absmax[s, 0], bits)  # clipping the rare extremes pays
            estimate = table.noise[s, 0, t] * power[s, 0]
            assert estimate == pytest.approx(real, rel=0.25)
        assert table.clip[s, 0, 0] < table.clip[s, 0, 1] < table.clip[s, 0, 2] <= absmax[s, 0]
    # fewer bits, more error; the least error is below the maximum's rounding noise
    assert (np.diff(table.noise, axis=-1) < 0).all()
    assert (table.noise <= max_ranges(absmax, power).noise * 1.01).all()


def test_static_ranges_share_one_clip_over_the_steps():
    _, absmax, power, edges, counts = laplace_steps()
    timed = mse_ranges(absmax, power, edges, counts, np.zeros((1, 3)))
    static = mse_ranges(
        np.broadcast_to(absmax.max(axis=0), absmax.shape), power, edges, counts,
        np.zeros((1, 3)), static=True,
    )  # fmt: skip
    assert (static.clip == static.clip[:1]).all()
    assert static.noise.sum() > timed.noise.sum()  # one clip for all steps costs error


@pytest.mark.parametrize("avg_bits", [4.0, 5.0, 6.0, 7.0, 8.0])
def test_allocation_of_per_tier_costs_meets_the_budget(avg_bits):
    rng = np.random.default_rng(1)
    cost = np.sort(rng.uniform(0.0, 1.0, (7, 5, 3)), axis=-1)[..., ::-1]
    cost[0, 0] = [1.0, 0.9, 0.0]  # the second upgrade pays more than the first
    bits = allocate_tiers(cost, avg_bits)
    assert bits.shape == (7, 5) and set(np.unique(bits)) <= set(TIERS)
    assert bits.mean() <= avg_bits and avg_bits - bits.mean() < 2 / bits.size
    static = static_budget_tiers(cost, avg_bits)
    assert (static == static[0]).all() and static.mean() <= avg_bits


def test_analyze_with_mse_ranges(collected_copy, cli):
    out = cli("analyze", "--store", collected_copy, "--avg-bits", "5", "--range-method", "mse")
    assert out.returncode == 0, out.stderr
    config = Store.open(collected_copy).require_group("quant_config")
    assert config.meta.config["range_method"] == "mse"
    bits, grid = config.read("bits"), config.read("quant_absmax")
    assert bits.mean() == pytest.approx(5.0, abs=2 / bits.size)
    shifted_max = config.read("absmax")  # unshifted maximum: no grid exceeds it off fc2
    post_gelu = config.read("post_gelu")
    assert (grid[:, ~post_gelu] <= shifted_max[:, ~post_gelu] * (1 + 1e-6)).all()
    assert (grid[bits == 4] < 0.9 * shifted_max[bits == 4]).mean() > 0.5  # A4 clips


def test_mse_ranges_are_refused_for_the_papers_recipe(store_copy, cli):
    out = cli("analyze", "--store", store_copy, "--recipe", "taq-dit", "--range-method", "mse")
    assert out.returncode == 2 and "taq-dit uses AvgMinMax" in out.stderr, out.stderr
