"""How far quantized final latents are from the FP model's: MSE, PSNR, max abs error."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


@dataclass(frozen=True)
class LatentDiff:
    mse: float
    psnr: float  # dB, peak = the FP latents' range (max - min)
    max_abs: float

    def __str__(self) -> str:
        return (
            f"final latents vs FP: MSE {self.mse:.3e}  PSNR {self.psnr:.2f} dB "
            f"(peak = FP latent range)  max abs error {self.max_abs:.3e}"
        )


def latent_diff(reference: mx.array, other: mx.array) -> LatentDiff:
    ref = np.asarray(reference, np.float64)
    out = np.asarray(other, np.float64)
    if ref.shape != out.shape:
        raise ValueError(f"latents of shape {ref.shape} and {out.shape} do not compare")
    mse = float(np.mean((ref - out) ** 2))
    peak = float(ref.max() - ref.min())
    psnr = math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
    return LatentDiff(mse, psnr, float(np.max(np.abs(ref - out))))
