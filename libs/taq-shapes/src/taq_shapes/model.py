"""The `tiny-shapes` model: a small DiffusionKit MMDiT on 32x32 RGB scenes, and its conditioner.

Latents are the image itself, scaled to [-1, 1] and folded 2x2 into channels (space to
depth): 16x16x12, so with DiffusionKit's patch size 2 the model sees 64 image tokens of
4x4 pixels each, as cheap as tiny-digits. The conditioner has one learned token per
attribute slot of the grammar (colour, shape, size, relation, colour, shape; a separate table
per slot, row 0 = absent), so a prompt's words reach attention one by one, and a pooled vector
that is a learned linear map of all of them (what adaLN modulation sees).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_model.compat import import_diffusionkit
from taq_model.presets import ModelError
from taq_model.toy import load_toy_weights, toy_mmdit_config
from taq_shapes.grammar import NUM_SLOTS, SLOTS

TOKEN_WIDTH = 64
POOLED_WIDTH = 64
LATENT_SHAPE = (16, 16, 12)
TINY_SHAPES_WEIGHTS = Path(__file__).parent / "weights" / "tiny_shapes.safetensors"


def tiny_shapes_config(hidden: int, depth: int, heads: int):
    """The MMDiT's config at the size a weights file's recipe (`train.TrainConfig`) names."""
    return toy_mmdit_config(LATENT_SHAPE, TOKEN_WIDTH, POOLED_WIDTH, hidden, depth, heads)


class ShapesConditioner(nn.Module):
    """Labels (N, 6) of vocabulary indices -> tokens (N, 6, 64) and pooled (N, 64)."""

    def __init__(self):
        super().__init__()
        self.tables = [mx.random.normal((len(vocab) + 1, TOKEN_WIDTH)) * 0.5 for _, vocab in SLOTS]
        self.pool = nn.Linear(NUM_SLOTS * TOKEN_WIDTH, POOLED_WIDTH)

    def __call__(self, labels: mx.array) -> tuple[mx.array, mx.array]:
        tokens = mx.stack([table[labels[:, i]] for i, table in enumerate(self.tables)], axis=1)
        pooled = self.pool(tokens.reshape(tokens.shape[0], -1))
        return tokens, pooled


def images_to_latents(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> float32 (N, 16, 16, 12) in [-1, 1] (2x2 space to depth)."""
    x = images.astype(np.float32) / 127.5 - 1.0
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // 2, w // 2, 4 * c)


def latents_to_images(latents: np.ndarray) -> np.ndarray:
    """(N, 16, 16, 12) latents -> uint8 (N, 32, 32, 3); values clipped to [-1, 1]."""
    x = np.clip(np.asarray(latents, np.float32), -1, 1)
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, 2, 2, c // 4).transpose(0, 1, 3, 2, 4, 5)
    return ((x.reshape(n, 2 * h, 2 * w, c // 4) + 1) * 127.5).round().astype(np.uint8)


def load_tiny_shapes(path: str | Path = TINY_SHAPES_WEIGHTS):
    """(MMDiT, ShapesConditioner) from one safetensors file (`mmdit.*`, `conditioner.*`);
    the MMDiT's size comes from the recipe in the file's metadata, which every file
    `train-tiny-shapes` writes carries (so the size has one default: `TrainConfig`'s)."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MMDiT

    weights, metadata = mx.load(str(path), return_metadata=True)
    recipe = json.loads(metadata.get("recipe", "{}"))
    dims = [recipe.get(k) for k in ("hidden", "depth", "heads")]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ModelError(
            f"{path} names no model size in its metadata (a `recipe` with hidden, depth and "
            "heads): use weights written by `train-tiny-shapes`"
        )
    return load_toy_weights(weights, MMDiT(tiny_shapes_config(*dims)), ShapesConditioner())
