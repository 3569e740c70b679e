"""Names of the MMDiT's blocks and quantizable linear layers, in one place.

Blocks: `multimodal_transformer_blocks[i]` -> `mm{i}` (image + text sub-blocks),
`unified_transformer_blocks[i]` -> `uni{i}`. Layers are named
`{block}.{stream}.{attn.q_proj|...|mlp.fc2}` with stream `image`/`text` for MM blocks
and `unified` for unified blocks, e.g. `mm3.image.mlp.fc2`. `adaLN_modulation` is never
quantized; the last MM block's text sub-block (with no unified blocks after it) has no
post-attention layers (`attn.o_proj`, `mlp.*`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import mlx.nn as nn

LAYER_ROLES = ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.fc1", "mlp.fc2")
"""The quantizable linears of a sub-block, in model order: layer `mm3.image.mlp.fc2` has role
`mlp.fc2` (the store's `weights` group names them by their last part, `fc2`)."""
PRE_ATTENTION_ROLES = LAYER_ROLES[:3]
STREAM_ATTR = {
    "image": "image_transformer_block",
    "text": "text_transformer_block",
    "unified": "transformer_block",
}


@dataclass(frozen=True)
class LayerRef:
    """One quantizable linear: its taq name and its parameter path in the MMDiT."""

    name: str  # mm3.image.mlp.fc2
    block: str  # mm3
    stream: str  # image | text | unified
    role: str  # mlp.fc2
    path: str  # multimodal_transformer_blocks.3.image_transformer_block.mlp.fc2

    @property
    def is_post_gelu(self) -> bool:
        return self.role == "mlp.fc2"


def block_names(mmdit: nn.Module) -> list[str]:
    names = [f"mm{i}" for i in range(len(mmdit.multimodal_transformer_blocks))]
    names += [f"uni{i}" for i in range(len(getattr(mmdit, "unified_transformer_blocks", [])))]
    return names


def block_path(block: str) -> str:
    match = re.fullmatch(r"(mm|uni)(\d+)", block)
    if not match:
        raise ValueError(f"not a block name: {block!r} (expected mm<i> or uni<i>)")
    kind, index = match.groups()
    prefix = "multimodal_transformer_blocks" if kind == "mm" else "unified_transformer_blocks"
    return f"{prefix}.{index}"


def get_block(mmdit: nn.Module, block: str) -> nn.Module:
    kind, index = block_path(block).split(".")
    return getattr(mmdit, kind)[int(index)]


def block_streams(mmdit: nn.Module, block: str) -> dict[str, nn.Module]:
    """Sub-blocks (`TransformerBlock`) of a block, keyed by stream name."""
    module = get_block(mmdit, block)
    if block.startswith("mm"):
        return {"image": module.image_transformer_block, "text": module.text_transformer_block}
    return {"unified": module.transformer_block}


def sub_block_roles(sub_block: nn.Module) -> tuple[str, ...]:
    """The roles a sub-block has: the last MM block's text sub-block (with no unified blocks
    after it) stops after the attention inputs."""
    return PRE_ATTENTION_ROLES if sub_block.skip_post_sdpa else LAYER_ROLES


def block_layers(mmdit: nn.Module, block: str) -> list[LayerRef]:
    refs = []
    for stream, sub_block in block_streams(mmdit, block).items():
        for role in sub_block_roles(sub_block):
            refs.append(
                LayerRef(
                    name=f"{block}.{stream}.{role}",
                    block=block,
                    stream=stream,
                    role=role,
                    path=f"{block_path(block)}.{STREAM_ATTR[stream]}.{role}",
                )
            )
    return refs


def quantizable_layers(mmdit: nn.Module, pattern: str | None = None) -> list[LayerRef]:
    """Every quantizable linear in model order; `pattern` filters by glob(s), comma-separated."""
    refs = [ref for block in block_names(mmdit) for ref in block_layers(mmdit, block)]
    if pattern:
        globs = [g.strip() for g in pattern.split(",") if g.strip()]
        refs = [r for r in refs if any(fnmatch.fnmatchcase(r.name, g) for g in globs)]
    return refs


def get_module(root: nn.Module, path: str) -> nn.Module:
    module = root
    for part in path.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return module


def get_layer(mmdit: nn.Module, name: str) -> nn.Linear:
    refs = {ref.name: ref for ref in quantizable_layers(mmdit)}
    if name not in refs:
        raise KeyError(f"unknown layer {name!r}")
    return get_module(mmdit, refs[name].path)
