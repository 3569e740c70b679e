"""Export learned integer codes into MLX's `QuantizedLinear` (affine mode), bit for bit.

TaQ-DiT's W4 result (arXiv 2411.14172, Sec. 5) must really be 4-bit in memory. MLX's affine
format, as `mx.quantize` writes it: each row of codes is one little-endian bit stream cut
into uint32 words (code `j` occupies bits `j*b .. j*b + b - 1` of the row), so a row of
`in` codes takes `in * bits / 32` words, also for 3-, 5- and 6-bit codes that straddle
words. `scales` and `biases` are `(out, in // group_size)` in the weight's float dtype and
`mx.dequantize` computes `scale * q + bias`, the same arithmetic as
`taq_quant.quantizer.dequantize_codes`.

MLX accepts only group sizes 32/64/128 and bits 1-6 and 8. A per-channel grid (or any group
size that is a multiple of 32) is exported exactly by repeating its scale and bias over the
largest supported group size that divides it; 7-bit grids and other group sizes are refused.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_quant.quantizer import MIN_BITS, QuantGrid

MLX_GROUP_SIZES: tuple[int, ...] = (128, 64, 32)
MLX_BITS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8)
WORD_BITS = 32


def check_exportable(bits: int, group_size: int, bits_flag: str = "--bits-w") -> None:
    """Refuse (ValueError naming the flags; `bits_flag`: the flag that gave `bits`) a weight
    grid MLX's QuantizedLinear cannot hold: what every stage checks on its flags before it
    starts."""
    supported = [b for b in MLX_BITS if b >= MIN_BITS]
    if bits not in supported:
        raise ValueError(
            f"{bits_flag} {bits} is not supported: MLX's QuantizedLinear stores "
            f"{', '.join(map(str, supported))} bits"
        )
    if group_size < MLX_GROUP_SIZES[-1] or group_size % MLX_GROUP_SIZES[-1]:
        raise ValueError(
            f"--group-size {group_size} is not supported: MLX quantizes in groups of "
            f"{', '.join(map(str, sorted(MLX_GROUP_SIZES)))} (or multiples of 32)"
        )


def _check_bits(bits: int) -> None:
    if bits not in MLX_BITS:
        raise ValueError(
            f"MLX's QuantizedLinear cannot hold {bits}-bit codes (supported: {MLX_BITS})"
        )


def pack_codes(q: mx.array, bits: int) -> mx.array:
    """Pack integer codes `(out, in)` into uint32 words `(out, in * bits / 32)` as MLX does."""
    _check_bits(bits)
    codes = np.asarray(q, dtype=np.uint32)
    out_features, in_features = codes.shape
    if (in_features * bits) % WORD_BITS:
        raise ValueError(f"{in_features} codes of {bits} bits do not fill whole uint32 words")
    if codes.max(initial=0) >= 2**bits:
        raise ValueError(f"codes exceed {bits} bits (max {codes.max()})")
    stream = (codes[..., None] >> np.arange(bits, dtype=np.uint32)) & 1
    stream = stream.reshape(out_features, -1, WORD_BITS).astype(np.uint64)
    words = (stream << np.arange(WORD_BITS, dtype=np.uint64)).sum(axis=-1)
    return mx.array(words.astype(np.uint32))


def unpack_codes(packed: mx.array, bits: int) -> mx.array:
    """Inverse of `pack_codes`: uint32 words `(out, words)` -> uint8 codes `(out, in)`."""
    _check_bits(bits)
    words = np.asarray(packed, dtype=np.uint32)
    out_features = words.shape[0]
    stream = (words[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1
    stream = stream.reshape(out_features, -1, bits)
    codes = (stream << np.arange(bits, dtype=np.uint32)).sum(axis=-1)
    return mx.array(codes.astype(np.uint8))


def mlx_group_size(grid: QuantGrid) -> int:
    """The group size MLX stores `grid` with: the largest supported size dividing the grid's
    own (a per-channel grid, or groups of 256, repeat their scale and bias)."""
    for size in MLX_GROUP_SIZES:
        if grid.group_size % size == 0:
            return size
    raise ValueError(
        f"MLX's QuantizedLinear supports group sizes {MLX_GROUP_SIZES} (or multiples, by "
        f"repetition); cannot export groups of {grid.group_size}"
    )


def export_quantized_linear(
    q: mx.array, grid: QuantGrid, bias: mx.array | None = None
) -> nn.QuantizedLinear:
    """A frozen `nn.QuantizedLinear` (affine) holding exactly the codes `q` on `grid`.

    `mx.dequantize` of its weight equals `dequantize_codes(q, grid)` bit for bit
    (float32 scales and biases). `bias` is the layer's additive bias, if any.
    """
    _check_bits(grid.bits)
    out_features, in_features = grid.shape
    if tuple(q.shape) != (out_features, in_features):
        raise ValueError(f"codes of shape {tuple(q.shape)} do not match the grid's {grid.shape}")
    group_size = mlx_group_size(grid)
    repeats = grid.group_size // group_size
    scales = mx.repeat(grid.scale.astype(mx.float32), repeats, axis=1)
    biases = mx.repeat(grid.bias.astype(mx.float32), repeats, axis=1)

    layer = nn.QuantizedLinear(
        in_features,
        out_features,
        bias=bias is not None,
        group_size=group_size,
        bits=grid.bits,
        mode="affine",
    )
    layer.weight = pack_codes(q, grid.bits)
    layer.scales = scales
    layer.biases = biases
    if bias is not None:
        layer.bias = bias
    layer.freeze()
    return layer


def dequantize_linear_weight(layer: nn.QuantizedLinear) -> mx.array:
    """The float weight `(out, in)` a `QuantizedLinear` represents (affine mode)."""
    return mx.dequantize(
        layer.weight,
        layer.scales,
        layer.biases,
        group_size=layer.group_size,
        bits=layer.bits,
        mode=layer.mode,
    )
