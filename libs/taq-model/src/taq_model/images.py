"""Write generated images as PNG files (single images and labelled grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_pil(image: np.ndarray, upscale: int = 1) -> Image.Image:
    """uint8 (h, w, 1|3) -> PIL image, nearest-neighbour upscaled (tiny digits are 16 px)."""
    array = image[..., 0] if image.shape[-1] == 1 else image
    pil = Image.fromarray(np.ascontiguousarray(array))
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    return pil


def image_grid(images: np.ndarray, columns: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, h, w, c) into one (rows*h, columns*w, c) image."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, c), 255, np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * (h + pad) : r * (h + pad) + h, col * (w + pad) : col * (w + pad) + w] = image
    return grid


def save_png(image: np.ndarray, path: str | Path, upscale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image, upscale).save(path)
    return path


def upscale_for(image: np.ndarray, target: int = 256) -> int:
    """An integer factor that makes small images readable."""
    return max(1, target // max(image.shape[0], image.shape[1]))
