"""DiffusionKit's transformer blocks behind one interface: how they are called, where they read
their adaLN modulation, how RoPE tables are built, and where the adaLN parameters live.

DiffusionKit's blocks do not compute their modulation: `MMDiT.cache_modulation_params`
precomputes every sub-block's adaLN output per timestep into the private dict
`sub_block._modulation_params[timestep.item()]`, then empties the adaLN linears (and keeps
them in a `to_offload` list on the model). Calibration records that modulation, block
reconstruction replays a block on cached inputs with it, and inference enumerates, empties
and restores the adaLN parameters. Those private names and the block call signature are
used here and nowhere else in taq, so a DiffusionKit change is fixed in this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from taq_model.compat import import_diffusionkit
from taq_model.taxonomy import STREAM_ATTR

_MODULATION = "adaLN_modulation"  # the adaLN linears' name in parameter paths
_OFFLOAD = "to_offload"  # the list of emptied adaLN linears caching leaves on the MMDiT
MODULATION_KEY = 0.0
"""The one timestep key `run_block` places modulation under: blocks use the timestep only as
the key of their modulation dict."""
# a size-1 constant (not a traced input) keeps the block's `timestep.item()` lookup valid
# inside `mx.compile`
_TIMESTEP_KEY = mx.array([MODULATION_KEY])

Modulation = dict[str, mx.array]
"""A block's adaLN output per stream (`image`/`text` for MM blocks, `unified`)."""


def sub_blocks(block: nn.Module) -> dict[str, nn.Module]:
    """A block's sub-blocks (`TransformerBlock`) keyed by stream, in the block's order."""
    return {stream: block[attr] for stream, attr in STREAM_ATTR.items() if attr in block}


# --- calling a block -------------------------------------------------------------------


# DiffusionKit's block call signatures: `MultiModalTransformerBlock.__call__` and
# `UnifiedTransformerBlock.__call__` (a hook may have swapped the block's class, so they are
# spelled out rather than read from `type(block)`)
_MM_PARAMETERS = (
    "latent_image_embeddings",
    "token_level_text_embeddings",
    "timestep",
    "positional_encodings",
)
_UNIFIED_PARAMETERS = ("latent_unified_embeddings", "timestep", "positional_encodings")


def _bound_call(block: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    unified = STREAM_ATTR["unified"] in block
    names = _UNIFIED_PARAMETERS if unified else _MM_PARAMETERS
    return {**dict(zip(names, args, strict=False)), **kwargs}


def timestep_key(timestep: mx.array) -> float:
    """The key a block reads its modulation under for `timestep` (DiffusionKit's
    `TransformerBlock.pre_sdpa` lookup, which evaluates `timestep`)."""
    if timestep.size > 1:
        timestep = timestep[0]
    return timestep.item()


def call_timestep_key(block: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> float:
    """The modulation key of one call of `block` with `args`, `kwargs`."""
    return timestep_key(_bound_call(block, args, kwargs)["timestep"])


def call_tokens(block: nn.Module, args: tuple, kwargs: Mapping[str, Any]) -> tuple[mx.array, ...]:
    """The token inputs of one call of `block`: (image, text) for an MM block, the joint
    `concat(text, image)` stream for a unified block; `(B, L, 1, D)` each."""
    arguments = _bound_call(block, args, kwargs)
    if _UNIFIED_PARAMETERS[0] in arguments:
        return (arguments["latent_unified_embeddings"],)
    return arguments["latent_image_embeddings"], arguments["token_level_text_embeddings"]


def forward_block(
    block: nn.Module,
    tokens: tuple[mx.array, ...],
    timestep: mx.array,
    positional_encodings: mx.array | None = None,
) -> Any:
    """`block` on `tokens` (as `call_tokens` gives them) at `timestep`, whose modulation it
    must hold (`install_modulation`): (image, text or None) for MM blocks, one array for
    unified blocks."""
    return block(*tokens, timestep, positional_encodings=positional_encodings)


def run_block(
    block: nn.Module,
    image_in: mx.array,
    text_in: mx.array,
    modulation: Mapping[str, mx.array],
    positional_encodings: mx.array | None = None,
) -> tuple[mx.array, mx.array | None]:
    """`block` on cached inputs: tokens `(N, L, D)` and each stream's modulation `(N, M)`.

    Returns (image out, text out or None), tokens `(N, L, D)`. The modulation replaces what
    the sub-blocks held (`saved_modulation` / `restore_modulation` keep it around this). A
    unified block runs on `concat(text, image)`, as `MMDiT.__call__` builds it.
    """
    streams = sub_blocks(block)
    for stream, sub in streams.items():
        sub._modulation_params = {MODULATION_KEY: modulation[stream][:, None, None, :]}
    if "unified" in streams:
        joint = mx.concatenate([text_in, image_in], axis=1)[:, :, None, :]
        out = forward_block(block, (joint,), _TIMESTEP_KEY, positional_encodings)[:, :, 0, :]
        return out[:, text_in.shape[1] :], out[:, : text_in.shape[1]]
    tokens = (image_in[:, :, None, :], text_in[:, :, None, :])
    image, text = forward_block(block, tokens, _TIMESTEP_KEY, positional_encodings)
    return image[:, :, 0, :], None if text is None else text[:, :, 0, :]


# --- modulation ------------------------------------------------------------------------


def recorded_modulation(block: nn.Module, key: float) -> Modulation:
    """What each sub-block read as its modulation under `key` (cached by the sampler)."""
    return {stream: sub["_modulation_params"][key] for stream, sub in sub_blocks(block).items()}


def install_modulation(block: nn.Module, key: float, modulation: Mapping[str, mx.array]) -> None:
    """Place each stream's `modulation` where the block reads it under `key` (other keys
    are kept)."""
    for stream, sub in sub_blocks(block).items():
        if "_modulation_params" not in sub:
            sub["_modulation_params"] = {}
        sub["_modulation_params"][key] = modulation[stream]


def saved_modulation(block: nn.Module) -> dict[str, dict | None]:
    """The sub-blocks' modulation dicts as they are now (None: none), for `restore_modulation`."""
    return {s: getattr(sub, "_modulation_params", None) for s, sub in sub_blocks(block).items()}


def restore_modulation(block: nn.Module, saved: Mapping[str, dict | None]) -> None:
    for stream, sub in sub_blocks(block).items():
        if saved[stream] is None:
            sub.__dict__.pop("_modulation_params", None)
        else:
            sub._modulation_params = saved[stream]


def cache_block_modulation(block: nn.Module, embedding: mx.array, timestep: mx.array) -> None:
    """Compute a lone block's modulation for `embedding` (pooled + timestep embedding) under
    `timestep`, then empty its adaLN linears, as `MMDiT.cache_modulation_params` does."""
    for sub in sub_blocks(block).values():
        sub._modulation_params = {timestep.item(): sub.adaLN_modulation(embedding)}
        mx.eval(sub._modulation_params)
        sub.adaLN_modulation.layers[1].update({"weight": mx.array([]), "bias": mx.array([])})


def cache_modulation(mmdit: nn.Module, pooled: mx.array, timesteps: mx.array) -> None:
    """Cache every block's modulation for `pooled` x `timesteps`; this empties the adaLN
    linears, which must be loaded again before the next prompt."""
    mmdit.cache_modulation_params(pooled, timesteps)


def clear_modulation(mmdit: nn.Module) -> None:
    """Drop every cached modulation (sampling's and the toy training's per-sample one)."""
    mmdit.clear_modulation_params_cache()


def is_modulation_path(path: str) -> bool:
    """The parameter or module path lies in an adaLN linear."""
    return _MODULATION in path


def is_modulation_linear(path: str, module: nn.Module) -> bool:
    """An adaLN linear (a `class_predicate` for `nn.quantize`)."""
    return is_modulation_path(path) and isinstance(module, nn.Linear)


def modulation_parameters(module: nn.Module | dict) -> list[tuple[str, mx.array]]:
    """The adaLN parameters of a module (or a parameter tree) as (path, array) pairs, as
    `load_weights` takes them."""
    params = module.parameters() if isinstance(module, nn.Module) else module
    return [(path, value) for path, value in tree_flatten(params) if is_modulation_path(path)]


def model_parameters(mmdit: nn.Module) -> list[tuple[str, mx.array]]:
    """The MMDiT's parameters by path, without the `to_offload` list of adaLN modules that
    DiffusionKit leaves on the model after caching modulation (they are the blocks' own)."""
    return [(k, v) for k, v in tree_flatten(mmdit.parameters()) if not k.startswith(_OFFLOAD)]


# --- rotary positional encodings -------------------------------------------------------


def positional_encodings(
    mmdit: nn.Module, text_tokens: int, latent_shape: tuple[int, ...]
) -> mx.array | None:
    """The rotary table `MMDiT.__call__` hands every block (FLUX), None for learned
    positions (SD3): a function of the token counts only, so it is rebuilt, not cached."""
    config = mmdit.config
    if config.pos_embed_type.name != "PreSDPARope":
        return None
    height, width = latent_shape[:2]
    return mmdit.pre_sdpa_rope(
        text_sequence_length=text_tokens,
        latent_image_resolution=(height // config.patch_size, width // config.patch_size),
    )


def rope_table(config, text_tokens: int, resolution: tuple[int, int]) -> mx.array | None:
    """The rotary table of a model `config` for `resolution` patches (None without RoPE),
    for blocks built without their MMDiT."""
    if not config.rope_axes_dim:
        return None
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import RoPE

    rope = RoPE(theta=10000, axes_dim=config.rope_axes_dim)
    return rope(latent_image_resolution=resolution, text_sequence_length=text_tokens)
