"""Record what single quantizable linear layers see, or stream it to an observer.

The activation-statistics stage of TaQ-DiT (arXiv 2411.14172, Sec. 4: time-aware
activation quantization, post-GELU shift) needs every quantizable layer's input at every
timestep. Storing all of them does not scale, so a `HookedLayer` either keeps its calls
(tests, small probes) or hands each call to an observer that folds it into bounded
statistics and stores nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from taq_hooks.proxy import HookSet, Recorder, installed
from taq_model.taxonomy import get_module, quantizable_layers

# observer(layer_name, x, y), called on every call with lazy (unevaluated) arrays.
LayerObserver = Callable[[str, mx.array, mx.array], None]


@dataclass(frozen=True)
class LayerCall:
    """One call of a linear layer: its input, and its output if asked for."""

    x: mx.array
    y: mx.array | None

    def arrays(self) -> list[mx.array]:
        return [self.x] if self.y is None else [self.x, self.y]


class HookedLayer(Recorder[LayerCall]):
    """The recorder of one linear layer (`mm3.image.mlp.fc2`) while it is hooked.

    With an `observer`, each call is passed on and nothing is stored.
    """

    def __init__(
        self,
        name: str,
        layer: nn.Module,
        record_output: bool = False,
        observer: LayerObserver | None = None,
    ) -> None:
        super().__init__(name, layer)
        self.record_output = record_output
        self.observer = observer

    def record(self, args: tuple, kwargs: dict[str, Any], outputs: Any) -> None:
        x = args[0] if args else kwargs["x"]
        if self.observer is not None:
            self.observer(self.name, x, outputs)
        else:
            self._store(LayerCall(x, outputs if self.record_output else None))


@contextmanager
def hook_layers(
    mmdit: nn.Module,
    pattern: str | None = None,
    *,
    record_output: bool = False,
    observer: LayerObserver | None = None,
) -> Iterator[HookSet[HookedLayer]]:
    """Hook the quantizable layers matching `pattern` (globs, comma-separated; default all).

    The model is restored on exit, also on exceptions and KeyboardInterrupt; the hooks keep
    their recordings after it.
    """
    refs = quantizable_layers(mmdit, pattern)
    if not refs:
        raise ValueError(f"no quantizable layer matches {pattern!r} (e.g. 'mm*.image.mlp.fc2')")
    recorders = (
        HookedLayer(ref.name, get_module(mmdit, ref.path), record_output, observer) for ref in refs
    )
    with installed(recorders) as hooks:
        yield hooks
