"""scikit-learn's 1,797 digits as tiny-digits latents: 16x16x1 (upsampled 2x) in [-1, 1]."""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 16, 16, 1) float32 in [-1, 1], and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = images.repeat(2, axis=1).repeat(2, axis=2) * 2.0 - 1.0
    return images[..., None], digits.target.astype(np.int64)
