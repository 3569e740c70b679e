"""Tiers under an average-bit budget, time-aware or static, by the SQNR rule's noise model.

`--avg-bits B` replaces the tier rule's per layer-step threshold with a budget: the mean bits
over all layer-steps is at most `B`, and within that the plan maximises the estimated SQNR of
the whole plan, `-10 log10(mean over layer-steps of noise / E[x^2])`, the rounding noise
being the SQNR rule's `delta^2 / 12` of the grid over the (uncapped) range (`tiers.sqnr_db`).

Every upgrade (A4 -> A6, A6 -> A8) costs the same 2 bits and each layer-step's noise falls
by less at its second upgrade than at its first (1/7^2 -> 1/31^2 -> 1/127^2 of absmax^2), so
taking the upgrades by largest noise drop first is optimal (a separable concave knapsack with
equal costs). The budget buys `floor((B - 4) N / 2)` upgrades over `N` layer-steps: the
average is `B` exactly when `(B - 4) N / 2` is whole, else the largest step of `2 / N` below.

Static at `B` is the same allocation over layers instead of layer-steps: one grid per layer
covering its largest step, one bit width for all steps (a layer's steps share its tier, so
the average over layer-steps is the mean over layers, in steps of `2 / layers`).
"""

from __future__ import annotations

import numpy as np

from taq_actstats.ranges import max_ranges
from taq_actstats.tiers import TIERS, grid_scale


def relative_noise(absmax: np.ndarray, power: np.ndarray, bits: np.ndarray | int) -> np.ndarray:
    """Rounding noise over the signal power (1 / linear SQNR) of each entry."""
    noise = grid_scale(absmax, np.asarray(bits)) ** 2 / 12
    return noise / np.maximum(power, 1e-30)


def plan_sqnr_db(absmax: np.ndarray, power: np.ndarray, bits: np.ndarray) -> float:
    """The plan's estimated SQNR: mean relative noise over all layer-steps, in dB."""
    return float(-10 * np.log10(relative_noise(absmax, power, bits).mean()))


def upgrades_within(avg_bits: float, entries: int) -> int:
    """How many 2-bit upgrades from all-A4 keep the mean at or below `avg_bits`."""
    if avg_bits < TIERS[0]:
        raise ValueError(f"--avg-bits {avg_bits:g} is below A4: use {TIERS[0]}..{TIERS[-1]}")
    top = (len(TIERS) - 1) * entries
    return min(top, int(np.floor((avg_bits - TIERS[0]) * entries / 2 + 1e-9)))


def allocate_bits(weight: np.ndarray, avg_bits: float) -> np.ndarray:
    """Bits per entry (any shape) minimising sum(weight / levels^2) at mean bits <= avg_bits.

    `weight` is each entry's noise scale (its relative noise is `weight / (2^(b-1) - 1)^2`).
    """
    levels = np.array([2.0 ** (b - 1) - 1 for b in TIERS])
    return allocate_tiers(np.asarray(weight, np.float64)[..., None] / levels**2, avg_bits)


def allocate_tiers(cost: np.ndarray, avg_bits: float) -> np.ndarray:
    """Bits per entry minimising the summed `cost (..., tier)` at mean bits <= avg_bits.

    Upgrades are taken by largest cost drop first; an entry's second upgrade is taken only
    with its first (where it would drop the cost more, the two count as one at their mean).
    """
    flat = np.asarray(cost, np.float64).reshape(-1, len(TIERS))
    gains = flat[:, :-1] - flat[:, 1:]  # (entry, upgrade)
    convex = gains[:, 1] > gains[:, 0]
    gains[convex] = gains[convex].mean(axis=1, keepdims=True)
    order = np.argsort(-gains.reshape(-1), kind="stable")
    chosen = order[: upgrades_within(avg_bits, flat.shape[0])]
    upgrades = np.bincount(chosen // gains.shape[1], minlength=flat.shape[0])
    return np.array(TIERS)[upgrades].reshape(np.shape(cost)[:-1]).astype(np.int32)


def budget_tiers(noise: np.ndarray, avg_bits: float) -> np.ndarray:
    """Time-aware tiers `(step, layer)` at an average of at most `avg_bits`, from each entry's
    relative noise per tier `noise (step, layer, tier)` (`ranges.TierRanges`)."""
    return allocate_tiers(noise, avg_bits)


def static_budget_tiers(noise: np.ndarray, avg_bits: float) -> np.ndarray:
    """Static tiers from `noise (step, layer, tier)` of one grid per layer: one tier per
    layer, its cost the noise summed over steps, broadcast to `(step, layer)`."""
    per_layer = allocate_tiers(noise.sum(axis=0), avg_bits)
    return np.broadcast_to(per_layer, noise.shape[:2]).copy()


def tiers_sqnr_db(noise: np.ndarray, bits: np.ndarray) -> float:
    """The plan's estimated SQNR from `noise (step, layer, tier)` at `bits (step, layer)`."""
    index = np.searchsorted(np.array(TIERS), bits)[..., None]
    return float(-10 * np.log10(np.take_along_axis(noise, index, axis=-1).mean()))


def budget_bits(absmax: np.ndarray, power: np.ndarray, avg_bits: float) -> np.ndarray:
    """Time-aware tiers `(step, layer)` at an average of at most `avg_bits`, grids over
    `absmax`."""
    return budget_tiers(max_ranges(absmax, power).noise, avg_bits)


def static_budget_bits(absmax: np.ndarray, power: np.ndarray, avg_bits: float) -> np.ndarray:
    """Static tiers: one per layer over its widest step, broadcast to `(step, layer)`."""
    widest = np.broadcast_to(absmax.max(axis=0), absmax.shape)
    return static_budget_tiers(max_ranges(widest, power).noise, avg_bits)
