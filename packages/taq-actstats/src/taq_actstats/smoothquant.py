"""SmoothQuant (Xiao et al. 2023) for layers with a few outlier input channels.

Per input channel j: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha). The layer computes
(X / s) @ (s * W)^T = X @ W^T exactly, while X / s has a flatter range. The weights are
static, so s is one vector per layer (from the channel maxima over all timesteps).

It is not free with packed W4 weights: a per-column factor is not expressible on the
per-(row, group) grid, so taq-infer re-rounds `W * s` to nearest, losing the learned
rounding. `smoothed_noise` counts that cost, so a layer is smoothed only when the estimated
output noise (activation rounding + weight re-rounding) drops.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from taq_actstats.tiers import grid_scale


def smoothing_scales(
    activation_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """`s (in,)` from per-channel max |X| (in,) and per-input-column max |W| (in,)."""
    x = np.maximum(activation_absmax, 1e-5)
    w = np.maximum(weight_absmax, 1e-5)
    return (x**alpha / w ** (1 - alpha)).astype(np.float32)


def smoothed_absmax(channel_absmax: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """max_j |X_j| / s_j for channel maxima `(..., in)`."""
    return np.max(channel_absmax / scales, axis=-1)


def activation_noise(absmax: np.ndarray, bits: np.ndarray, column_power: np.ndarray) -> float:
    """Output noise power of rounding the input on per-step grids, summed over steps.

    Uniform noise `delta_t^2 / 12` on every input channel reaches the output through
    `sum_j |W_j|^2` (`column_power (in,)`: squared norm of each input column).
    """
    return float((grid_scale(absmax, bits) ** 2 / 12).sum() * column_power.sum())


def reround_error(weight: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """Squared error per input column `(in,)` of rounding `weight` to nearest on the W grid."""
    w = mx.array(weight.astype(np.float32))
    back = mx.dequantize(*mx.quantize(w, group_size, bits), group_size=group_size, bits=bits)
    return ((np.array(back, dtype=np.float64) - weight) ** 2).sum(axis=0)


def smoothed_noise(
    weight: np.ndarray,
    scales: np.ndarray,
    absmax: np.ndarray,
    bits: np.ndarray,
    channel_power: np.ndarray,
    grid: tuple[int, int],
) -> float:
    """Output noise of the smoothed layer, summed over steps: activation + weight re-rounding.

    `absmax`, `bits (step,)` are the smoothed grids; `channel_power (step, in)` estimates
    E[x_j^2] per step; `grid` is the weights' (bits, group size).
    """
    column_power = (weight**2).sum(axis=0) * scales**2
    weight_error = reround_error(weight * scales, *grid) / scales**2  # seen by x_j, not x_j/s_j
    return activation_noise(absmax, bits, column_power) + float(
        (channel_power * weight_error).sum()
    )
