"""Record every call of MMDiT blocks: inputs, outputs, and the modulation they used.

TaQ-DiT (arXiv 2411.14172, Sec. 3) reconstructs the quantized model block by block
against the full-precision block's outputs, so the calibration stage caches each block's
inputs and outputs. DiffusionKit's blocks read their adaLN modulation from
`sub_block._modulation_params[timestep.item()]`, precomputed per prompt by
`cache_modulation_params`; replaying a block offline therefore needs the modulation it
saw, which the hook records next to the inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from taq_hooks.proxy import HookSet, Recorder, installed
from taq_model.taxonomy import STREAM_ATTR, block_names, get_block


@dataclass(frozen=True)
class BlockCall:
    """One call of a block: what it was given, what it returned, the modulation it read.

    `outputs` is what the block returned (for MM blocks `(image, text)`, with `text`
    `None` for the last MM block of an MMDiT without unified blocks). `modulation` maps
    a stream (`image`/`text`/`unified`) to its `_modulation_params[timestep_key]`.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: Any
    modulation: dict[str, mx.array]
    timestep_key: float

    def arrays(self) -> list[mx.array]:
        tree = (self.args, self.kwargs, self.outputs, self.modulation)
        return [leaf for _, leaf in tree_flatten(tree) if isinstance(leaf, mx.array)]


def _sub_blocks(block: nn.Module) -> dict[str, nn.Module]:
    return {stream: block[attr] for stream, attr in STREAM_ATTR.items() if attr in block}


def _timestep_key(timestep: mx.array) -> float:
    # The lookup DiffusionKit's TransformerBlock.pre_sdpa does (it evaluated `timestep`).
    if timestep.size > 1:
        timestep = timestep[0]
    return timestep.item()


class BlockHook(Recorder[BlockCall]):
    """The recorder of one block (`mm{i}` or `uni{i}`) while it is hooked."""

    def __init__(self, name: str, block: nn.Module) -> None:
        super().__init__(name, block)
        self._signature = inspect.signature(type(block).__call__)

    def record(self, args: tuple, kwargs: dict[str, Any], outputs: Any) -> None:
        bound = self._signature.bind(self.module, *args, **kwargs)
        key = _timestep_key(bound.arguments["timestep"])
        modulation = {
            stream: sub_block["_modulation_params"][key]
            for stream, sub_block in _sub_blocks(self.module).items()
        }
        self._store(BlockCall(args, dict(kwargs), outputs, modulation, key))


@contextmanager
def hook_blocks(
    mmdit: nn.Module, blocks: Iterable[str] | None = None
) -> Iterator[HookSet[BlockHook]]:
    """Record the calls of `blocks` (default: every block) while inside the `with`.

    The model is restored on exit, also on exceptions and KeyboardInterrupt; the hooks keep
    their recordings after it.
    """
    known = block_names(mmdit)
    names = known if blocks is None else list(blocks)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown block {name!r}; this model has {known}")
    with installed(BlockHook(name, get_block(mmdit, name)) for name in names) as hooks:
        yield hooks


def replay_block(block: nn.Module, call: BlockCall) -> Any:
    """Run `block` on a recorded call's inputs with the modulation that call used.

    The recorded modulation is placed in each sub-block's `_modulation_params` under the
    call's timestep key (other keys are kept).
    """
    for stream, sub_block in _sub_blocks(block).items():
        if "_modulation_params" not in sub_block:
            sub_block["_modulation_params"] = {}
        sub_block["_modulation_params"][call.timestep_key] = call.modulation[stream]
    return block(*call.args, **call.kwargs)
