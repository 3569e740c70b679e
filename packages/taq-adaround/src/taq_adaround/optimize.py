"""`taq-adaround optimize`: AdaRound every selected block and write `weights/adaround` and
`weights/rtn` (same grid), one unit per block, in MLX's QuantizedLinear format."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version

import mlx.core as mx
import numpy as np

from taq_adaround.blockio import load_block_data, require_blockio
from taq_adaround.reconstruct import (
    AdaRoundConfig,
    BlockResult,
    adaround_block,
    positional_encodings,
)
from taq_io import StageGroup, Store
from taq_io.schema import WEIGHT_ROLES
from taq_model.presets import ModelHandle
from taq_model.taxonomy import block_names
from taq_quant import export_quantized_linear
from taq_run.weights import METHODS, create_weights_group

PRODUCER = f"taq-adaround {version('taq-adaround')}"


@dataclass(frozen=True)
class OptimizeResult:
    groups: dict[str, StageGroup]
    rows: list[dict]  # block, rtn_mse, adaround_mse, ratio, seconds (this run's blocks)


def _role(name: str) -> str:
    return name.rsplit(".", 1)[1]


def _unit(result: BlockResult, block: str, method: str, streams: list[str], sizes) -> dict:
    values: dict[str, object] = {"block_names": block}
    present = np.zeros((len(streams), len(WEIGHT_ROLES)), bool)
    for role in WEIGHT_ROLES:
        out, words, groups = (sizes[f"{role}_{d}"] for d in ("out", "words", "groups"))
        values[f"{role}_weight"] = np.zeros((len(streams), out, words), np.uint32)
        for part in ("scales", "biases"):
            values[f"{role}_{part}"] = np.full((len(streams), out, groups), np.nan, np.float32)
        values[f"{role}_act_scale"] = np.full(len(streams), np.nan, np.float32)
    for ref in result.refs:
        layer = result.layers[ref.name]
        s, role = streams.index(ref.stream), _role(ref.role)
        packed = export_quantized_linear(layer.codes(method), layer.grid)
        present[s, WEIGHT_ROLES.index(role)] = True
        values[f"{role}_weight"][s] = np.array(packed.weight)
        values[f"{role}_scales"][s] = np.array(packed.scales)
        values[f"{role}_biases"][s] = np.array(packed.biases)
        values[f"{role}_act_scale"][s] = layer.act_scale.item()
    values["present"] = present
    values["mse"] = result.adaround_mse if method == "adaround" else result.rtn_mse
    values["rtn_mse"] = result.rtn_mse
    values["seconds"] = result.seconds
    return values


def _sizes(result: BlockResult, blocks: list[str], streams: list[str], config) -> dict:
    sizes = {"block": len(blocks), "stream": len(streams), "role": len(WEIGHT_ROLES)}
    for ref in result.refs:
        layer = result.layers[ref.name]
        packed = export_quantized_linear(layer.codes("rtn"), layer.grid)
        role = _role(ref.role)
        sizes[f"{role}_out"] = packed.weight.shape[0]
        sizes[f"{role}_words"] = packed.weight.shape[1]
        sizes[f"{role}_groups"] = packed.scales.shape[1]
    return sizes


def optimize_blocks(
    handle: ModelHandle,
    store: Store,
    config: AdaRoundConfig,
    blocks: list[str] | None = None,
    overwrite: bool = False,
    compile_step: bool = True,
) -> OptimizeResult:
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
    groups: dict[str, StageGroup] = {}

    def create(method: str, sizes: dict, overwrite: bool) -> StageGroup:
        return create_weights_group(
            store,
            method,
            config,
            blocks,
            producer=PRODUCER,
            inputs=inputs,
            sizes=sizes,
            streams=streams,
            overwrite=overwrite,
        )

    found = {method: store.state("weights", method).group for method in METHODS}
    if not overwrite and all(group is not None for group in found.values()):
        for method in METHODS:
            groups[method] = create(method, found[method].sizes, False)
    rows = []
    for index, block in enumerate(blocks):
        if groups and groups["adaround"].done_mask()[index]:
            continue
        data = load_block_data(store, block)
        data.positional_encodings = positional_encodings(
            handle.mmdit, data.text_in.shape[1], handle.latent_shape
        )
        block_config = AdaRoundConfig(**{**asdict(config), "seed": config.seed + index})
        result = adaround_block(handle.mmdit, block, data, block_config, compile_step)
        if not groups:
            sizes = _sizes(result, blocks, streams, config)
            for method in METHODS:
                groups[method] = create(method, sizes, overwrite)
        for method in METHODS:
            sizes = groups[method].sizes
            groups[method].write_unit(index, _unit(result, block, method, streams, sizes))
        rows.append(
            {
                "block": block,
                "rtn_mse": result.rtn_mse,
                "adaround_mse": result.adaround_mse,
                "ratio": result.adaround_mse / max(result.rtn_mse, 1e-30),
                "seconds": result.seconds,
            }
        )
        mx.clear_cache()
    for group in groups.values():
        group.mark_complete()
    return OptimizeResult(groups, rows)
