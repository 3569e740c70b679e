"""Write uint8 images as PNG files (single images and grids) with the standard library.

taq's images are tiny (16 px digits) or plain RGB decodes, so an 8-bit grayscale/RGB PNG
writer (zlib + CRC chunks, filter 0) is all that is needed; no imaging library is pulled
into the inference install for it.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_COLOR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type (grayscale, RGB)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (h, w, 1|3) -> PNG bytes."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in _COLOR_TYPE:
        raise ValueError(f"expected uint8 (h, w, 1|3), got {image.dtype} {image.shape}")
    height, width, channels = image.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPE[channels], 0, 0, 0)
    rows = np.ascontiguousarray(image).reshape(height, width * channels)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def upscaled(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor (tiny digits are 16 px)."""
    return image.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else image


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
    """Write uint8 (h, w, 1|3) `image` to `path`, nearest-neighbour upscaled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_png(upscaled(image, upscale)))
    return path


def upscale_for(image: np.ndarray, target: int = 256) -> int:
    """An integer factor that makes small images readable."""
    return max(1, target // max(image.shape[0], image.shape[1]))
