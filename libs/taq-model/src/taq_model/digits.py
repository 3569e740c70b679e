"""The `tiny-digits` preset: a small DiffusionKit MMDiT for scikit-learn's digits.

16x16x1 latents are the 8x8 digits upsampled 2x (nearest) and scaled to [-1, 1]; the
prompt `digit N` selects a learned table of 4 context tokens (width 64) and a learned
pooled vector; class 10 is the null condition used for the negative (CFG) prompt and for
10 % label dropout during training. The data and the trainer live in taq-tiny
(`taq-tiny train-tiny-digits`); this module is what sampling needs.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from taq_model.compat import import_diffusionkit
from taq_model.toy import load_toy_weights, toy_mmdit_config

DIGIT_PROMPTS = tuple(f"digit {i}" for i in range(10))
NULL_CLASS = 10
NUM_TOKENS = 4
TOKEN_WIDTH = 64
POOLED_WIDTH = 64
LATENT_SHAPE = (16, 16, 1)
TINY_DIGITS_WEIGHTS = Path(__file__).parent / "weights" / "tiny_digits.safetensors"


def shorten(text: str, limit: int = 60) -> str:
    """`text` quoted for an error message, cut to `limit` characters (with its length)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def parse_digit_prompt(prompt: str) -> int:
    """`digit N` -> N; the empty prompt -> the null class; anything else is refused."""
    text = prompt.strip()
    if text == "":
        return NULL_CLASS
    if text in DIGIT_PROMPTS:
        return int(text[-1])
    raise ValueError(
        f"bad prompt {shorten(prompt)} for tiny-digits: accepted prompts are "
        f"'digit 0', 'digit 1', ..., 'digit 9'"
    )


def tiny_digits_config():
    return toy_mmdit_config(LATENT_SHAPE, TOKEN_WIDTH, POOLED_WIDTH)


class DigitConditioner(nn.Module):
    """Learned per-class context tokens and pooled vectors (class 10: null)."""

    def __init__(self):
        super().__init__()
        self.tokens = mx.random.normal((NULL_CLASS + 1, NUM_TOKENS, TOKEN_WIDTH)) * 0.5
        self.pooled = mx.random.normal((NULL_CLASS + 1, POOLED_WIDTH)) * 0.5

    def __call__(self, labels: mx.array) -> tuple[mx.array, mx.array]:
        return self.tokens[labels], self.pooled[labels]


def load_tiny_digits(path: str | Path = TINY_DIGITS_WEIGHTS):
    """(MMDiT, DigitConditioner) from one safetensors file (`mmdit.*`, `conditioner.*`)."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MMDiT

    return load_toy_weights(mx.load(str(path)), MMDiT(tiny_digits_config()), DigitConditioner())
