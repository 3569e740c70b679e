"""Uniform weight quantization on MLX's affine grid, and its scale initialisation.

Every weight grid in taq is stored the way MLX's `QuantizedLinear` stores it
(`mode="affine"`): per output row and per group of `group_size` consecutive input
columns, `w = scale * q + bias` with integer codes `q` in `[0, 2^bits - 1]`. A per-channel
grid is the special case of one group spanning the whole input width; a symmetric grid is
the special case `bias = -scale * 2^(bits-1)` (codes centred on zero). Because MLX keeps a
float bias, an affine grid does not need an integer zero point: `bias` is the clipped
minimum itself.

Scales come from the weights' min-max or from a per-group search over clipping ratios that
minimises the rounding MSE (the initialisation TaQ-DiT, arXiv 2411.14172 Sec. 4, inherits
from BRECQ / Q-Diffusion). Round-to-nearest (RTN) on this grid is the baseline every
learned rounding is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import mlx.core as mx

ScaleMethod = Literal["minmax", "mse"]
SCALE_METHODS: tuple[str, ...] = ("minmax", "mse")
MIN_BITS, MAX_BITS = 2, 8
# Clipping ratios tried by the MSE search, widest first so ties keep the min-max grid.
MSE_RATIOS: tuple[float, ...] = tuple(1.0 - 0.5 * i / 19 for i in range(20))
# Floor for scales of constant groups (max == min): their codes become 0, w = bias exactly.
MIN_SCALE = 1e-8


@dataclass(frozen=True)
class WeightQuantConfig:
    """How a linear layer's weight is quantized.

    `group_size=None` means one group per output channel (the whole input width).
    """

    bits: int = 4
    group_size: int | None = 64
    symmetric: bool = False
    scale_method: ScaleMethod = "minmax"

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(
                f"bits must be an integer in [{MIN_BITS}, {MAX_BITS}], got {self.bits!r}"
            )
        if self.group_size is not None and (
            not isinstance(self.group_size, int) or self.group_size < 1
        ):
            raise ValueError(
                f"group_size must be a positive integer or None (per channel), "
                f"got {self.group_size!r}"
            )
        if self.scale_method not in SCALE_METHODS:
            raise ValueError(
                f"scale_method must be one of {SCALE_METHODS}, got {self.scale_method!r}"
            )

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    def group_width(self, in_features: int) -> int:
        """The number of input columns per group for a weight `in_features` wide."""
        if self.group_size is None:
            return in_features
        if in_features % self.group_size:
            raise ValueError(
                f"group_size {self.group_size} does not divide the input width {in_features}; "
                f"use a divisor of {in_features} or group_size=None (per channel)"
            )
        return self.group_size


@dataclass(frozen=True)
class QuantGrid:
    """A weight's quantization grid: `w = scale * q + bias`, per (output row, group).

    `scale` and `bias` are float32 of shape `(out, in // group_size)`.
    """

    scale: mx.array
    bias: mx.array
    bits: int
    group_size: int

    @property
    def qmax(self) -> int:
        return 2**self.bits - 1

    @property
    def shape(self) -> tuple[int, int]:
        """Shape `(out, in)` of the weight this grid quantizes."""
        out_features, num_groups = self.scale.shape
        return out_features, num_groups * self.group_size


def to_groups(w: mx.array, group_size: int) -> mx.array:
    """`(out, in)` -> `(out, in // group_size, group_size)`."""
    out_features, in_features = w.shape
    return w.reshape(out_features, in_features // group_size, group_size)


def from_groups(w: mx.array) -> mx.array:
    """`(out, groups, group_size)` -> `(out, in)`."""
    out_features, num_groups, group_size = w.shape
    return w.reshape(out_features, num_groups * group_size)


def _check_weight(w: mx.array) -> mx.array:
    if w.ndim != 2:
        raise ValueError(f"expected a 2-d weight (out, in), got shape {tuple(w.shape)}")
    return w.astype(mx.float32)


def _grid_from_range(
    w_min: mx.array, w_max: mx.array, config: WeightQuantConfig, group_size: int
) -> QuantGrid:
    if config.symmetric:
        half = 2 ** (config.bits - 1)
        absmax = mx.maximum(mx.abs(w_min), mx.abs(w_max))
        scale = mx.maximum(absmax / (half - 1), MIN_SCALE)
        bias = -scale * half
    else:
        scale = mx.maximum((w_max - w_min) / config.qmax, MIN_SCALE)
        bias = w_min
    return QuantGrid(scale=scale, bias=bias, bits=config.bits, group_size=group_size)


def minmax_grid(w: mx.array, config: WeightQuantConfig, ratio: float = 1.0) -> QuantGrid:
    """The grid spanning each group's `[min, max]`, both ends scaled by `ratio`."""
    w = _check_weight(w)
    group_size = config.group_width(w.shape[1])
    groups = to_groups(w, group_size)
    return _grid_from_range(
        groups.min(axis=-1) * ratio, groups.max(axis=-1) * ratio, config, group_size
    )


def mse_grid(
    w: mx.array, config: WeightQuantConfig, ratios: tuple[float, ...] = MSE_RATIOS
) -> QuantGrid:
    """Per group, the clipped min-max grid (over `ratios`) with the least RTN squared error.

    Ratio 1.0 (plain min-max) is tried first and kept on ties, so the result is never worse
    than `minmax_grid` in MSE, group by group.
    """
    if not ratios:
        raise ValueError("mse_grid needs at least one clipping ratio")
    w = _check_weight(w)
    group_size = config.group_width(w.shape[1])
    groups = to_groups(w, group_size)
    w_min, w_max = groups.min(axis=-1), groups.max(axis=-1)

    def squared_error(grid: QuantGrid) -> mx.array:
        return mx.square(to_groups(rtn_quantize(w, grid) - w, group_size)).sum(axis=-1)

    best = _grid_from_range(w_min * ratios[0], w_max * ratios[0], config, group_size)
    best_error = squared_error(best)
    for ratio in ratios[1:]:
        grid = _grid_from_range(w_min * ratio, w_max * ratio, config, group_size)
        error = squared_error(grid)
        better = error < best_error
        best = QuantGrid(
            scale=mx.where(better, grid.scale, best.scale),
            bias=mx.where(better, grid.bias, best.bias),
            bits=config.bits,
            group_size=group_size,
        )
        best_error = mx.where(better, error, best_error)
    return best


def init_grid(w: mx.array, config: WeightQuantConfig) -> QuantGrid:
    """The grid `config.scale_method` asks for."""
    if config.scale_method == "mse":
        return mse_grid(w, config)
    return minmax_grid(w, config)


def scaled_weight(w: mx.array, grid: QuantGrid) -> mx.array:
    """`(w - bias) / scale` in groups: the real-valued code each weight would need."""
    groups = to_groups(w.astype(mx.float32), grid.group_size)
    return (groups - grid.bias[..., None]) / grid.scale[..., None]


def dequantize_codes(q: mx.array, grid: QuantGrid) -> mx.array:
    """`scale * q + bias` as float32 `(out, in)`; the same arithmetic as `mx.dequantize`."""
    groups = to_groups(q.astype(mx.float32), grid.group_size)
    return from_groups(groups * grid.scale[..., None] + grid.bias[..., None])


def quantize_codes(w: mx.array, grid: QuantGrid) -> mx.array:
    """Round-to-nearest integer codes in `[0, qmax]`, uint8 `(out, in)`."""
    codes = mx.clip(mx.round(scaled_weight(w, grid)), 0, grid.qmax)
    return from_groups(codes).astype(mx.uint8)


def rtn_quantize(w: mx.array, grid: QuantGrid) -> mx.array:
    """The round-to-nearest quantized weight (float32), the baseline for learned rounding."""
    return dequantize_codes(quantize_codes(w, grid), grid)
