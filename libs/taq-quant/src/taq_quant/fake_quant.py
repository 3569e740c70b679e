"""Simulated (quantize-dequantize) activation quantization with a learnable scale.

MLX has no integer activation matmul, so taq simulates activation quantization: inputs of
a quantized layer are rounded onto a uniform grid and mapped back to float32. TaQ-DiT
(arXiv 2411.14172, Sec. 4) learns activation scales jointly with AdaRound; the rounding
passes gradients straight through (STE) and the scale receives LSQ's gradient
(Esser et al. 2020), which is what autodiff yields for `s * clip(round_ste(x / s) + z)`.

The post-GELU `shift` of TaQ-DiT (Sec. 4.2) is subtracted before quantization and added
back after, so the grid covers the shifted, roughly symmetric distribution.

All functions are pure `mlx.core` code: usable under `mx.compile` and `mx.value_and_grad`
(`bits` and `signed` are Python values, hence compile-time constants).
"""

from __future__ import annotations

import mlx.core as mx


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """The integer code range: `[-2^(b-1), 2^(b-1) - 1]` signed, `[0, 2^b - 1]` unsigned."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def round_ste(x: mx.array) -> mx.array:
    """Round to nearest in the forward pass, identity in the backward pass."""
    return x + mx.stop_gradient(mx.round(x) - x)


def fake_quant(
    x: mx.array,
    scale: mx.array | float,
    bits: int,
    *,
    zero_point: mx.array | float = 0.0,
    shift: mx.array | float = 0.0,
    signed: bool = True,
) -> mx.array:
    """Quantize-dequantize `x`: `s * (clip(round((x - shift) / s) + z, qmin, qmax) - z) + shift`.

    `scale`, `zero_point` (an integer-valued offset of the codes) and `shift` broadcast
    against `x` (per tensor or per channel). Gradients: straight through the rounding to
    `x` inside the range, zero outside; LSQ-style to `scale`.
    """
    qmin, qmax = code_range(bits, signed)
    codes = mx.clip(round_ste((x - shift) / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale + shift


def activation_scale(
    low: mx.array, high: mx.array, bits: int, signed: bool = True
) -> tuple[mx.array, mx.array]:
    """`(scale, zero_point)` of the grid covering `[low, high]` (min-max initialisation).

    Signed grids are symmetric (zero point 0, scale from the larger magnitude); unsigned
    grids are affine with an integer zero point so that 0 is exactly representable.
    """
    qmin, qmax = code_range(bits, signed)
    low, high = mx.minimum(low, 0.0), mx.maximum(high, 0.0)
    if signed:
        scale = mx.maximum(mx.maximum(-low / -qmin, high / qmax), 1e-8)
        return scale, mx.zeros_like(scale)
    scale = mx.maximum((high - low) / qmax, 1e-8)
    return scale, mx.round(-low / scale)
