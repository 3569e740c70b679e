"""Record every call of MMDiT blocks: inputs, outputs, and the modulation they used.

TaQ-DiT (arXiv 2411.14172, Sec. 3) reconstructs the quantized model block by block
against the full-precision block's outputs, so the calibration stage caches each block's
inputs and outputs. DiffusionKit's blocks read their adaLN modulation from a cache the
sampler fills per prompt (`taq_model.blocks`); replaying a block offline therefore needs the
modulation it saw, which the hook records next to the inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from taq_hooks.proxy import HookSet, Recorder, installed
from taq_model.blocks import (
    call_timestep_key,
    call_tokens,
    install_modulation,
    recorded_modulation,
)
from taq_model.taxonomy import block_names, get_block


@dataclass(frozen=True)
class BlockCall:
    """One call of a block: what it was given, what it returned, the modulation it read.

    `tokens` are the token inputs among `args` (`taq_model.blocks.call_tokens`: (image,
    text) for MM blocks, the joint stream for unified blocks). `outputs` is what the block
    returned (for MM blocks `(image, text)`, with `text` `None` for the last MM block of an
    MMDiT without unified blocks). `modulation` maps a stream (`image`/`text`/`unified`) to
    the modulation it read under `timestep_key`.
    """

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: Any
    modulation: dict[str, mx.array]
    timestep_key: float
    tokens: tuple[mx.array, ...]

    def arrays(self) -> list[mx.array]:
        tree = (self.args, self.kwargs, self.outputs, self.modulation)
        return [leaf for _, leaf in tree_flatten(tree) if isinstance(leaf, mx.array)]


class BlockHook(Recorder[BlockCall]):
    """The recorder of one block (`mm{i}` or `uni{i}`) while it is hooked."""

    def record(self, args: tuple, kwargs: dict[str, Any], outputs: Any) -> None:
        key = call_timestep_key(self.module, args, kwargs)
        modulation = recorded_modulation(self.module, key)
        tokens = call_tokens(self.module, args, kwargs)
        self._store(BlockCall(args, dict(kwargs), outputs, modulation, key, tokens))


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

    The recorded modulation is placed where the block reads it under the call's timestep
    key (other keys are kept).
    """
    install_modulation(block, call.timestep_key, call.modulation)
    return block(*call.args, **call.kwargs)
