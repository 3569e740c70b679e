"""The time-aware A4/A6/A8 tier rule (TaQ-DiT §3.3): bits per layer and timestep.

A layer's input at a timestep gets the fewest bits whose range rule it meets: post-GELU
(`fc2`, after the momentum shift) absmax < 5 -> A4, < 8 -> A6, else A8; other layers
absmax < 6 -> A4, < 10 -> A6, else A8. A high p99/p50 ratio (heavy tails) forces A8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class TierRule:
    gelu_a4: float = 5.0
    gelu_a6: float = 8.0
    other_a4: float = 6.0
    other_a6: float = 10.0
    outlier_ratio: float = 50.0  # p99 / p50 above this forces A8

    def to_json(self) -> dict:
        return asdict(self)


def assign_bits(
    absmax: np.ndarray, post_gelu: np.ndarray, tail_ratio: np.ndarray, rule: TierRule
) -> np.ndarray:
    """Bits (4/6/8) for `absmax (step, layer)`; `post_gelu (layer,)`; `tail_ratio` like absmax."""
    a4 = np.where(post_gelu, rule.gelu_a4, rule.other_a4)
    a6 = np.where(post_gelu, rule.gelu_a6, rule.other_a6)
    bits = np.where(absmax < a4, 4, np.where(absmax < a6, 6, 8))
    return np.where(tail_ratio > rule.outlier_ratio, 8, bits).astype(np.int32)


def grid_scale(absmax: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Signed symmetric grid step covering [-absmax, absmax] with `bits`."""
    return np.maximum(absmax, 1e-8) / (2.0 ** (bits - 1) - 1)
