"""Run one weight method (`taq_run.weight_methods`) over the selected blocks and write
`weights/<method>`, one unit per block, in MLX's QuantizedLinear format (`taq_run.weights`).

Each block is committed on its own (its unit), so a resume redoes only blocks not written.
Under `mlx.launch` the blocks are split across ranks by weight count (largest first onto
the least loaded rank, `taq_runtime.ranks.balance`); a block's result depends only on its
data and its config (with `seed + block index` where the config has a seed), so the group
is the same bit for bit whatever the number of ranks."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from importlib.metadata import version

import mlx.core as mx
from mlx.utils import tree_flatten

from taq_adaround.blockio import load_block_data, require_blockio
from taq_adaround.layers import packed_layer
from taq_io import StageGroup, Store
from taq_model.blocks import positional_encodings
from taq_model.presets import ModelHandle
from taq_model.taxonomy import block_layers, block_names, get_block, get_module
from taq_quant import WeightQuantConfig, minmax_grid, quantize_codes
from taq_run.weight_methods import WeightMethod
from taq_run.weights import (
    BlockWeights,
    GridConfig,
    create_weights_group,
    existing_weights,
    sizes_of,
    write_block,
)
from taq_run.writers import commit, create_group
from taq_runtime import ranks

PRODUCER = f"taq-adaround {version('taq-adaround')}"


@dataclass(frozen=True)
class OptimizeResult:
    group: StageGroup
    rows: list[dict]  # block, rtn_mse, mse, ratio, seconds (this run's blocks)


def quantize_blocks(
    handle: ModelHandle,
    store: Store,
    method: WeightMethod,
    config: GridConfig,
    blocks: list[str] | None = None,
    overwrite: bool = False,
) -> OptimizeResult:
    """`method` on every block of `blocks` (default: all) not yet in `weights/<method>`."""
    all_blocks = block_names(handle.mmdit)
    blocks = list(blocks or all_blocks)
    unknown = [b for b in blocks if b not in all_blocks]
    if unknown:
        raise ValueError(
            f"unknown block(s) {', '.join(unknown)}: this model has {', '.join(all_blocks)}"
        )
    inputs = {f"blockio/{b}": require_blockio(store, b).identity() for b in blocks}
    kinds = {"image": "mm", "text": "mm", "unified": "uni"}  # the group's stream axis
    streams = [s for s, kind in kinds.items() if any(b.startswith(kind) for b in blocks)]

    # --overwrite reads nothing of the group it replaces: a killed writer can leave it corrupt
    found = None if overwrite else existing_weights(store, method.name)
    sizes = found.sizes if found is not None else _probe_sizes(handle, blocks, streams, config)
    group = create_group(
        lambda replace_: create_weights_group(
            store,
            method.name,
            config,
            blocks,
            producer=PRODUCER,
            inputs=inputs,
            sizes=sizes,
            streams=streams,
            overwrite=replace_,
        ),
        overwrite,
    )
    done = group.done_mask()
    seeded = "seed" in {f.name for f in fields(config)}
    weights = [_block_size(handle, block) for block in blocks]
    rows = []
    for index in ranks.balance(weights)[ranks.rank()]:
        if done[index]:
            continue
        block = blocks[index]
        data = load_block_data(store, block)
        data.positional_encodings = positional_encodings(
            handle.mmdit, data.text_in.shape[1], handle.latent_shape
        )
        block_config = replace(config, seed=config.seed + index) if seeded else config
        result = method.quantize_block(handle.mmdit, block, data, block_config)
        write_block(group, index, block, result)
        rows.append(
            {
                "block": block,
                "rtn_mse": result.rtn_mse,
                "mse": result.mse,
                "ratio": result.mse / max(result.rtn_mse, 1e-30),
                "seconds": result.seconds,
            }
        )
        mx.clear_cache()
    commit([group])
    return OptimizeResult(group, rows)


def _block_size(handle: ModelHandle, block: str) -> int:
    """A block's weight count: what quantizing it costs, to balance blocks across ranks."""
    return sum(value.size for _, value in tree_flatten(get_block(handle.mmdit, block).parameters()))


def _probe_sizes(handle: ModelHandle, blocks, streams, config: GridConfig) -> dict:
    """The group's sizes, from the first block's layers on a min-max grid of the config's
    format: rank 0 creates the group from them before any rank has quantized a block."""
    grid_config = WeightQuantConfig(config.bits_w, config.group_size, scale_method="minmax")
    layers = []
    for ref in block_layers(handle.mmdit, blocks[0]):
        weight = get_module(handle.mmdit, ref.path).weight.astype(mx.float32)
        grid = minmax_grid(weight, grid_config)
        layers.append(packed_layer(ref, quantize_codes(weight, grid), grid))
    return sizes_of(BlockWeights(layers, 0.0, 0.0, 0.0), blocks, streams)
