"""The time-aware A4/A6/A8 tier rule: bits per layer and timestep.

Two rules, both picking the fewest bits a layer's input at a timestep may have:

- `sqnr` (default): the signed grid over the step's range must keep the estimated
  signal-to-quantization-noise ratio `10 log10(E[x^2] / (delta^2 / 12))` at or above
  `target_db`. It scales with the data, so it works for any model's activation magnitudes.
- `absolute`: TaQ-DiT's fixed thresholds (§3.3) on the (shifted) absmax: post-GELU `fc2`
  inputs < 5 -> A4, < 8 -> A6, else A8; other layers < 6 -> A4, < 10 -> A6, else A8. They
  were tuned on DiT-XL's activations, and on tiny-digits (inputs up to absmax 1-13) they lose
  to static A8 (README: earlier design measurements).

Under both, a high p99/p50 ratio (heavy tails) forces A8. The rule's settings (`TierRule`) live
with the `quant_config` group's config, in `taq_run.quant_config`.
"""

from __future__ import annotations

import numpy as np

from taq_run.quant_config import TierRule

TIERS = (4, 6, 8)


def sqnr_db(absmax: np.ndarray, power: np.ndarray, bits: np.ndarray | int) -> np.ndarray:
    """Estimated SQNR (dB) of inputs with mean square `power` on the `bits` grid over absmax.

    Rounding noise is uniform over one grid step (variance delta^2 / 12); clipping is not
    counted (the range covers the calibration maxima).
    """
    noise = grid_scale(absmax, np.asarray(bits)) ** 2 / 12
    return 10 * np.log10(np.maximum(power, 1e-30) / noise)


def assign_bits(
    absmax: np.ndarray,
    power: np.ndarray,
    post_gelu: np.ndarray,
    tail_ratio: np.ndarray,
    rule: TierRule,
) -> np.ndarray:
    """Bits (4/6/8) for `absmax (step, layer)`; `power` and `tail_ratio` like absmax.

    `power` is the inputs' mean square (the signal the rounding noise is compared with);
    `post_gelu (layer,)` marks `fc2` inputs (the absolute rule's own thresholds).
    """
    if rule.rule == "sqnr":
        bits = np.full(absmax.shape, TIERS[-1])
        for tier in reversed(TIERS[:-1]):
            bits = np.where(sqnr_db(absmax, power, tier) >= rule.target_db, tier, bits)
    else:
        a4 = np.where(post_gelu, rule.gelu_a4, rule.other_a4)
        a6 = np.where(post_gelu, rule.gelu_a6, rule.other_a6)
        bits = np.where(absmax < a4, 4, np.where(absmax < a6, 6, 8))
    return np.where(tail_ratio > rule.outlier_ratio, 8, bits).astype(np.int32)


def grid_scale(absmax: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Signed symmetric grid step covering [-absmax, absmax] with `bits`."""
    return np.maximum(absmax, 1e-8) / (2.0 ** (bits - 1) - 1)
