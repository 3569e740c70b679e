"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers") on the block I/O cache, in MLX's affine group format.

Per block: the FP block is replayed on its cached inputs to collect each linear's Hessian
`H = XᵀX` over every image and text token of the cached samples; `H` is dampened by
`damp` x its mean diagonal; then each weight's columns are quantized in order, the error
of each column spread over the columns not yet quantized through the Cholesky factor of
`H⁻¹`, in lazy batches of `block_columns`. The grid (scales and biases per group of 64) is
round-to-nearest's (`GridConfig`, the same `scale_method`), fixed before the column loop, so
GPTQ only changes which code each weight gets and its weights load wherever RTN's do.
`act_order` quantizes columns by decreasing Hessian diagonal; `sequential` collects the
Hessians of a block's later layers (out-projection, fc1, fc2) with its earlier layers
already quantized. The column loop runs in float64 NumPy (the Cholesky factor in float32
loses the small pivots of a dampened `H` of a few thousand columns).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_adaround.layers import packed_layer, swap_linears
from taq_adaround.reconstruct import (
    BlockData,
    block_mse,
    replay_batch,
    restoring,
    stream_modulation,
)
from taq_model.taxonomy import block_layers, block_streams, get_block, get_module
from taq_quant import QuantGrid, dequantize_codes, init_grid, quantize_codes
from taq_run.weight_methods import WeightMethod
from taq_run.weights import BlockWeights, GridConfig

# the order a block's linears see their inputs: q/k/v share theirs, then o, fc1, fc2
STAGES = (
    ("attn.q_proj", "attn.k_proj", "attn.v_proj"),
    ("attn.o_proj",),
    ("mlp.fc1",),
    ("mlp.fc2",),
)
BATCH = 16  # cached samples per replayed batch


@dataclass(frozen=True)
class GPTQConfig(GridConfig):
    """GPTQ's flags (`taq-adaround gptq`, `taq run`)."""

    damp: float = field(
        default=0.01, metadata={"help": "GPTQ: add this x the mean Hessian diagonal to it"}
    )
    block_columns: int = field(
        default=128, metadata={"help": "GPTQ: columns per lazy batch update"}
    )
    act_order: bool = field(
        default=False,
        metadata={"help": "GPTQ: quantize columns by decreasing Hessian diagonal"},
    )
    sequential: bool = field(
        default=True,
        metadata={"help": "GPTQ: later layers' Hessians from the earlier layers quantized"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.damp < 1:
            raise ValueError(f"--damp must be in (0, 1), got {self.damp}")
        if self.block_columns < 1:
            raise ValueError(f"--block-columns must be at least 1, got {self.block_columns}")
        if self.bits_a:
            raise ValueError(
                f"GPTQ learns no activation scales: --bits-a {self.bits_a} applies to rtn and "
                "adaround (run GPTQ with --bits-a 0, or leave it out of --weights)"
            )


def gptq_codes(
    weight: np.ndarray,
    hessian: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    bits: int,
    damp: float = 0.01,
    block_columns: int = 128,
    act_order: bool = False,
) -> np.ndarray:
    """Codes `(out, in)` in `[0, 2**bits - 1]` for `weight` on the grid `scale * q + bias`
    (`scale`, `bias`: `(out, in)`, one value per column) minimising `‖X (W - Q)ᵀ‖²` for the
    inputs whose `XᵀX` is `hessian`: GPTQ's column loop with lazy batch updates."""
    w = weight.astype(np.float64)
    h = hessian.astype(np.float64)
    columns = w.shape[1]
    dead = np.diag(h) == 0  # a column no input reaches: any code is as good
    h[dead, dead] = 1.0
    h = h + damp * np.mean(np.diag(h)) * np.eye(columns)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(columns)
    w, h = w[:, order], h[np.ix_(order, order)]
    scale, bias = scale[:, order].astype(np.float64), bias[:, order].astype(np.float64)
    # the upper Cholesky factor of H⁻¹: row i holds column i's error-feedback weights
    inverse = np.linalg.inv(np.linalg.cholesky(h))
    upper = np.linalg.cholesky(inverse.T @ inverse).T
    qmax = 2**bits - 1
    codes = np.zeros(w.shape, np.float64)
    for first in range(0, columns, block_columns):
        last = min(first + block_columns, columns)
        batch = w[:, first:last].copy()
        errors = np.zeros_like(batch)
        for j in range(last - first):
            i = first + j
            codes[:, i] = np.clip(np.round((batch[:, j] - bias[:, i]) / scale[:, i]), 0, qmax)
            error = (batch[:, j] - (codes[:, i] * scale[:, i] + bias[:, i])) / upper[i, i]
            batch[:, j:] -= np.outer(error, upper[i, i:last])
            errors[:, j] = error
        w[:, last:] -= errors @ upper[first:last, last:]
    result = np.empty_like(codes)
    result[:, order] = codes
    return result.astype(np.uint8)


class HessianLinear(nn.Module):
    """A frozen linear that adds `XᵀX` of its inputs to `hessian` while `record` is on, and
    computes with `weight` (the float weight, or its quantized one once set)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight.astype(mx.float32)
        if "bias" in linear:
            self.bias = linear.bias.astype(mx.float32)
        self._original = linear
        self.record = False
        self.hessian = mx.zeros((self.weight.shape[1],) * 2, mx.float32)
        self.freeze()

    def __call__(self, x: mx.array) -> mx.array:
        if self.record:
            flat = x.reshape(-1, x.shape[-1]).astype(mx.float32)
            self.hessian = self.hessian + flat.T @ flat
        y = x @ self.weight.T
        return y + self.bias if "bias" in self else y


def _grid_arrays(grid: QuantGrid) -> tuple[np.ndarray, np.ndarray]:
    """The grid's scale and bias repeated over each group's columns, `(out, in)`."""
    scale, bias = np.array(grid.scale), np.array(grid.bias)
    return np.repeat(scale, grid.group_size, axis=1), np.repeat(bias, grid.group_size, axis=1)


def gptq_weights(
    mmdit: nn.Module, block_name: str, data: BlockData, config: GPTQConfig
) -> BlockWeights:
    """The method's per-block entry (`taq_run.weight_methods`)."""
    start = time.perf_counter()
    block, streams = get_block(mmdit, block_name), block_streams(mmdit, block_name)
    refs = block_layers(mmdit, block_name)
    layers = {ref.name: HessianLinear(get_module(mmdit, ref.path)) for ref in refs}
    stages = [[r for r in refs if r.role in roles] for roles in STAGES]
    if not config.sequential:  # every Hessian from the float block
        stages = [[r for stage in stages for r in stage]]
    codes, grids = {}, {}
    swap_linears(mmdit, refs, layers)
    with stream_modulation(block), restoring(mmdit, refs, layers):
        for stage in stages:
            _record(block, streams, data, [layers[r.name] for r in stage])
            for ref in stage:
                layer = layers[ref.name]
                grid = init_grid(layer.weight, config.weight_config)
                scale, bias = _grid_arrays(grid)
                codes[ref.name] = mx.array(
                    gptq_codes(
                        np.array(layer.weight),
                        np.array(layer.hessian),
                        scale,
                        bias,
                        config.bits_w,
                        config.damp,
                        config.block_columns,
                        config.act_order,
                    )
                )
                grids[ref.name] = grid
                layer.hessian = mx.zeros((0, 0))  # release it
                layer.weight = dequantize_codes(codes[ref.name], grid)
        mse = block_mse(block, streams, data)
        for ref in refs:
            layers[ref.name].weight = dequantize_codes(
                quantize_codes(layers[ref.name]._original.weight, grids[ref.name]),
                grids[ref.name],
            )
        rtn_mse = block_mse(block, streams, data)
    packed = [packed_layer(ref, codes[ref.name], grids[ref.name]) for ref in refs]
    return BlockWeights(packed, mse, rtn_mse, time.perf_counter() - start)


def _record(block, streams, data: BlockData, layers: list[HessianLinear]) -> None:
    """Replay the block on every cached sample, adding each of `layers`' input `XᵀX`."""
    for layer in layers:
        layer.record = True
    for first in range(0, len(data), BATCH):
        index = np.arange(first, min(first + BATCH, len(data)))
        outputs = replay_batch(block, streams, data.batch(index))
        mx.eval(outputs, [layer.hessian for layer in layers])
    for layer in layers:
        layer.record = False


METHOD = WeightMethod(
    name="gptq",
    label="GPTQ",
    config=GPTQConfig,
    quantize_block=gptq_weights,
    summary="quantize each weight's columns in turn with Hessian error feedback (GPTQ)",
    order=50,
)
