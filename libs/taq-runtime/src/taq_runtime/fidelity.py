"""Image fidelity against the FP model's images, for every preset: PSNR (mean and the
10th percentile over images, since a mean hides the few broken ones) and SSIM.

PSNR is per image with the peak of uint8 images (255); SSIM is Wang et al. (2004) with a
7x7 Gaussian window (sigma 1.5, small enough for 16-32 px images), averaged over channels and
pixels of each image. numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PEAK = 255.0
PSNR_CAP = 100.0  # dB for identical images, so means and percentiles stay finite
WORST_PERCENTILE = 10
_WINDOW = 7
_SIGMA = 1.5


@dataclass(frozen=True)
class Fidelity:
    psnr_mean: float  # dB, mean of per-image PSNR
    psnr_p10: float  # dB, 10th percentile of per-image PSNR (the worst images)
    ssim: float  # mean per-image SSIM

    def to_json(self) -> dict:
        return asdict(self)


def psnr_from_mse(mse: float | np.ndarray, peak: float = PEAK) -> float | np.ndarray:
    """10 log10(peak^2 / mse); infinite where the images are equal."""
    mse = np.asarray(mse, np.float64)
    with np.errstate(divide="ignore"):
        out = 10 * np.log10(peak**2 / mse)
    return float(out) if out.ndim == 0 else out


def per_image_mse(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Mean squared error of each image (N, H, W[, C]) against its reference, in float64."""
    diff = reference.astype(np.float64) - other.astype(np.float64)
    return (diff**2).reshape(len(diff), -1).mean(1)


def per_image_psnr(reference: np.ndarray, other: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """PSNR of each image (N, H, W[, C]) against its reference."""
    return psnr_from_mse(per_image_mse(reference, other), peak)


def _gaussian_filter(x: np.ndarray) -> np.ndarray:
    """Separable 'valid' Gaussian blur over axes 1 and 2 of (N, H, W, C)."""
    offsets = np.arange(_WINDOW) - _WINDOW // 2
    kernel = np.exp(-(offsets**2) / (2 * _SIGMA**2))
    kernel /= kernel.sum()
    n = x.shape[1] - _WINDOW + 1
    x = sum(kernel[i] * x[:, i : i + n] for i in range(_WINDOW))
    m = x.shape[2] - _WINDOW + 1
    return sum(kernel[i] * x[:, :, i : i + m] for i in range(_WINDOW))


def per_image_ssim(reference: np.ndarray, other: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """SSIM of each image (N, H, W[, C]) against its reference, in [-1, 1]."""
    x = reference.astype(np.float64)
    y = other.astype(np.float64)
    if x.ndim == 3:
        x, y = x[..., None], y[..., None]
    if min(x.shape[1:3]) < _WINDOW:
        raise ValueError(f"SSIM needs images of at least {_WINDOW}x{_WINDOW} pixels")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = _gaussian_filter(x), _gaussian_filter(y)
    var_x = _gaussian_filter(x * x) - mu_x**2
    var_y = _gaussian_filter(y * y) - mu_y**2
    cov = _gaussian_filter(x * y) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim.reshape(len(ssim), -1).mean(1)


def image_fidelity(reference: np.ndarray, other: np.ndarray, peak: float = PEAK) -> Fidelity:
    """Mean and worst-case (10th percentile) PSNR, and mean SSIM, of `other` vs `reference`."""
    if reference.shape != other.shape:
        raise ValueError(f"images of shape {reference.shape} and {other.shape} do not compare")
    psnr = np.minimum(per_image_psnr(reference, other, peak), PSNR_CAP)
    return Fidelity(
        psnr_mean=float(np.mean(psnr)),
        psnr_p10=float(np.percentile(psnr, WORST_PERCENTILE)),
        ssim=float(np.mean(per_image_ssim(reference, other, peak))),
    )
