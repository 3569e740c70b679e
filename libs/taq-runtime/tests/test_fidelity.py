import numpy as np
import pytest

from taq_runtime.fidelity import PSNR_CAP, image_fidelity, per_image_psnr, per_image_ssim


@pytest.fixture(scope="module")
def images():
    """40 32x32 RGB scenes: a flat-colour rectangle on a flat background."""
    rng = np.random.default_rng(9)
    out = np.empty((40, 32, 32, 3), np.uint8)
    for image in out:
        image[:] = rng.integers(0, 256, 3)
        (y, x), (h, w) = rng.integers(2, 16, 2), rng.integers(6, 14, 2)
        image[y : y + h, x : x + w] = rng.integers(0, 256, 3)
    return out


def test_identical_images_are_perfect(images):
    result = image_fidelity(images, images)
    assert result.psnr_mean == result.psnr_p10 == PSNR_CAP
    assert result.ssim == pytest.approx(1.0)


def test_psnr_matches_its_definition():
    a = np.zeros((1, 8, 8, 3), np.uint8)
    b = np.full_like(a, 16)
    assert per_image_psnr(a, b)[0] == pytest.approx(10 * np.log10(255**2 / 16**2))


def test_worst_case_psnr_sees_the_few_broken_images(images):
    noisy = images.copy()
    rng = np.random.default_rng(0)
    broken = rng.integers(0, 256, noisy[:5].shape, dtype=np.uint8)  # 5 of 40 destroyed
    noisy[:5] = broken
    small = np.clip(images.astype(int) + rng.integers(-2, 3, images.shape), 0, 255).astype(np.uint8)
    noisy[5:] = small[5:]
    result = image_fidelity(images, noisy)
    assert result.psnr_p10 < result.psnr_mean - 10
    assert result.ssim < image_fidelity(images, small).ssim


def test_ssim_orders_degradations(images):
    rng = np.random.default_rng(1)
    light = np.clip(images + rng.normal(0, 5, images.shape), 0, 255)
    heavy = np.clip(images + rng.normal(0, 40, images.shape), 0, 255)
    assert per_image_ssim(images, light).mean() > per_image_ssim(images, heavy).mean() > 0
    with pytest.raises(ValueError, match="do not compare"):
        image_fidelity(images, images[:3])
