"""Exact GELU that `mx.compile` fuses, for the block under reconstruction.

DiffusionKit's MLP uses `nn.GELU()` (exact: `x * (1 + erf(x / sqrt 2)) / 2`). On x86 CPU,
MLX evaluates `erf` and its gradient one element at a time, and that GELU was a quarter of an
AdaRound step. Here `erf` is the same polynomial MLX's CPU kernel uses (Abramowitz-Stegun
7.1.26), written in MLX operations so that the compiled step fuses it with its neighbours,
and the gradient is GELU's own, `Phi(x) + x phi(x)`, not the derivative of the polynomial.
Over [-10, 10] it is within 5e-7 of `nn.gelu` and its gradient within 3e-7.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import mlx.core as mx
import mlx.nn as nn

from taq_model.taxonomy import get_module

SQRT_2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _erf(v: mx.array) -> mx.array:
    t = 1.0 / (0.3275911 * mx.abs(v) + 1.0)
    r = (((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t
    r = (r + 0.254829592) * t
    magnitude = 1.0 - mx.exp(-v * v) * r
    return mx.where(v > 0, magnitude, -magnitude)


@mx.custom_function
def gelu(x: mx.array) -> mx.array:
    return x * (1.0 + _erf(x / SQRT_2)) / 2.0


@gelu.vjp
def _gelu_vjp(x, cotangent, output):
    cdf = (1.0 + _erf(x / SQRT_2)) / 2.0
    density = INV_SQRT_2PI * mx.exp(-0.5 * x * x)
    return cotangent * (cdf + x * density)


class FusedGELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return gelu(x)


@contextmanager
def fused_gelu(block: nn.Module) -> Iterator[None]:
    """Within the block, every exact `nn.GELU` is this GELU until the context exits."""
    swapped = []
    for path, module in block.named_modules():
        if not path:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = get_module(block, parent_path) if parent_path else block
        if isinstance(module, nn.GELU) and module._approx == "none":
            setattr(parent, name, FusedGELU())
            swapped.append((parent, name, module))
    try:
        yield
    finally:
        for parent, name, module in swapped:
            setattr(parent, name, module)
