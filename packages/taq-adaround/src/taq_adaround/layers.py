"""A linear layer whose weight is rounded to a 4-bit grid by learned AdaRound offsets.

Modes: `soft` (training: `s * clip(floor(w/s) + h(V)) + b`, differentiable in V),
`hard` (the learned rounding: floor + [h(V) >= 0.5]), `rtn` (round to nearest on the same
grid, the baseline) and `fp`. The input is fake-quantized with a learnable per-tensor
scale (signed, symmetric) unless `bits_a` is 0. Weights, bias and grid are frozen; only
`v` (rounding logits) and `act_scale` train.
"""

from __future__ import annotations

from typing import Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_model.taxonomy import LayerRef, get_module
from taq_quant import (
    QuantGrid,
    WeightQuantConfig,
    activation_scale,
    export_quantized_linear,
    fake_quant,
    floor_codes,
    hard_codes,
    hard_quantize,
    init_grid,
    init_rounding_logits,
    quantize_codes,
    rtn_quantize,
    soft_quantize,
)
from taq_run.weights import PackedLayer

Mode = Literal["soft", "hard", "rtn", "fp"]
TRAINABLE = ("v", "act_scale")


class AdaRoundLinear(nn.Module):
    def __init__(self, linear: nn.Linear, config: WeightQuantConfig, bits_a: int):
        super().__init__()
        self.weight = linear.weight.astype(mx.float32)
        if "bias" in linear:
            self.bias = linear.bias.astype(mx.float32)
        grid = init_grid(self.weight, config)
        self.grid_scale, self.grid_bias = grid.scale, grid.bias
        self.floor_codes = floor_codes(self.weight, grid)  # once: the weight is frozen
        self.v = init_rounding_logits(self.weight, grid)
        self.act_scale = mx.array(1.0)
        self._bits, self._group_size, self._bits_a = config.bits, grid.group_size, bits_a
        self._original = linear
        self._observed = mx.array(0.0)
        self.mode: Mode = "soft"
        self.observe = False
        self.freeze()
        self.unfreeze(keys=list(TRAINABLE), recurse=False)

    @property
    def grid(self) -> QuantGrid:
        return QuantGrid(self.grid_scale, self.grid_bias, self._bits, self._group_size)

    def quantized_weight(self) -> mx.array:
        if self.mode == "soft":
            return soft_quantize(self.floor_codes, self.v, self.grid)
        if self.mode == "hard":
            return hard_quantize(self.weight, self.v, self.grid)
        if self.mode == "rtn":
            return rtn_quantize(self.weight, self.grid)
        return self.weight

    def codes(self, method: str) -> mx.array:
        """uint8 codes of the learned (adaround) or round-to-nearest (rtn) weight."""
        if method == "adaround":
            return hard_codes(self.weight, self.v, self.grid)
        return quantize_codes(self.weight, self.grid)

    def init_act_scale(self) -> None:
        """Min-max over the inputs seen while `observe` was on."""
        if self._bits_a:
            scale, _ = activation_scale(-self._observed, self._observed, self._bits_a, True)
            self.act_scale = scale.astype(mx.float32)

    def __call__(self, x: mx.array) -> mx.array:
        if self.observe:
            self._observed = mx.maximum(self._observed, mx.abs(x).max())
        elif self._bits_a and self.mode != "fp":
            x = fake_quant(x, self.act_scale, self._bits_a)
        y = x @ self.quantized_weight().T
        return y + self.bias if "bias" in self else y


def install_adaround(
    mmdit: nn.Module, refs: list[LayerRef], config: WeightQuantConfig, bits_a: int
) -> dict[str, AdaRoundLinear]:
    """Swap the block's linears for AdaRound layers (same parameter paths)."""
    layers = {ref.name: AdaRoundLinear(get_module(mmdit, ref.path), config, bits_a) for ref in refs}
    swap_linears(mmdit, refs, layers)
    return layers


def swap_linears(mmdit: nn.Module, refs: list[LayerRef], modules: dict[str, nn.Module]) -> None:
    """Put `modules[ref.name]` where each of `refs`' linears is (same parameter paths)."""
    for ref in refs:
        parent_path, attr = ref.path.rsplit(".", 1)
        setattr(get_module(mmdit, parent_path), attr, modules[ref.name])


def restore_linears(mmdit: nn.Module, refs: list[LayerRef], layers: dict[str, nn.Module]):
    """Put back the model's own linears, which each of `layers` keeps as `_original`."""
    swap_linears(mmdit, refs, {ref.name: layers[ref.name]._original for ref in refs})


def packed_layer(
    ref: LayerRef, codes: mx.array, grid: QuantGrid, act_scale: float = 0.0
) -> PackedLayer:
    """`codes` on `grid` in MLX's QuantizedLinear layout, as the `weights` codec takes it."""
    packed = export_quantized_linear(codes, grid)
    return PackedLayer(
        ref.stream,
        ref.role,
        np.array(packed.weight),
        np.array(packed.scales),
        np.array(packed.biases),
        act_scale,
    )
