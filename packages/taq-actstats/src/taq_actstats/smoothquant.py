"""SmoothQuant (Xiao et al. 2023) for layers whose few outlier channels cost a tier.

Per input channel j: s_j = max|X_j|^alpha / max|W_j|^(1 - alpha). The layer computes
(X / s) @ (s * W)^T = X @ W^T exactly, while X / s has a flatter range. The weights are
static, so s is one vector per layer (from the channel maxima over all timesteps).
"""

from __future__ import annotations

import numpy as np


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
