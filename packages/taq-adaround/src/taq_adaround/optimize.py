"""`taq-adaround optimize`: AdaRound every selected block and write `weights/adaround` and
`weights/rtn` (same grid), one unit per block, in MLX's QuantizedLinear format.

Each block is committed on its own (its unit), so a resume redoes only blocks not written.
Under `mlx.launch` the blocks are split across ranks by weight count (largest first onto
the least loaded rank, `taq_runtime.ranks.balance`); a block's result depends only on its
data and its seed (`seed + block index`), so the groups are the same bit for bit whatever
the number of ranks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from taq_adaround.blockio import load_block_data, require_blockio
from taq_adaround.layers import install_adaround, restore_linears
from taq_adaround.reconstruct import AdaRoundConfig, BlockResult, adaround_block
from taq_io import StageGroup, Store
from taq_io.schema import WEIGHT_ROLES
from taq_model.blocks import positional_encodings
from taq_model.presets import ModelHandle
from taq_model.taxonomy import block_layers, block_names, get_block
from taq_quant import export_quantized_linear
from taq_run.weights import METHODS, create_weights_group
from taq_run.writers import commit, create_group
from taq_runtime import ranks

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


def _sizes(refs, layers, blocks: list[str], streams: list[str]) -> dict:
    sizes = {"block": len(blocks), "stream": len(streams), "role": len(WEIGHT_ROLES)}
    for ref in refs:
        layer = layers[ref.name]
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

    # --overwrite reads nothing of the groups it replaces: a killed writer can leave them corrupt
    found = {} if overwrite else {m: store.state("weights", m).group for m in METHODS}
    if found and all(group is not None for group in found.values()):
        sizes = found["adaround"].sizes  # resume: the groups say their sizes
    else:
        sizes = _probe_sizes(handle, blocks[0], blocks, streams, config)
    groups = create_group(
        lambda replace: {method: create(method, sizes, replace) for method in METHODS},
        overwrite,
    )
    done = groups["adaround"].done_mask()  # a block is done once adaround is
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
        block_config = AdaRoundConfig(**{**asdict(config), "seed": config.seed + index})
        result = adaround_block(handle.mmdit, block, data, block_config, compile_step)
        for method in METHODS:
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
    commit(groups.values())
    return OptimizeResult(groups, rows)


def _block_size(handle: ModelHandle, block: str) -> int:
    """A block's weight count: what its AdaRound costs, to balance blocks across ranks."""
    return sum(value.size for _, value in tree_flatten(get_block(handle.mmdit, block).parameters()))


def _probe_sizes(handle: ModelHandle, block: str, blocks, streams, config) -> dict:
    """The groups' sizes, from `block`'s layers on the grid before any training: rank 0
    creates the groups from them before any rank has trained a block."""
    refs = block_layers(handle.mmdit, block)
    layers = install_adaround(handle.mmdit, refs, config.weight_config, config.bits_a)
    try:
        return _sizes(refs, layers, blocks, streams)
    finally:
        restore_linears(handle.mmdit, refs, layers)
