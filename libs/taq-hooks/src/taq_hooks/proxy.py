"""Recording proxies: install a recorder on an `nn.Module` by swapping the instance's class.

A proxy must not change parameter paths (DESIGN: weight reloads use `strict=False` and
would skip renamed keys silently), so nothing wraps the module: its class is swapped for a
cached subclass whose `__call__` runs the original and hands the call to a recorder, the
way optimum-quanto's calibration hooks leave the model's structure alone. `isinstance`
still holds, and the recorder lives in the `_taq_hook` instance attribute, outside MLX's
parameter tree (a plain object in `__dict__` is neither a parameter nor a child module).

Recorders never evaluate: calls are kept lazily, and `flush()` evaluates everything
recorded since the last flush with one `mx.eval`, so a forward pass costs one evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any, Generic, Protocol, TypeVar

import mlx.core as mx
import mlx.nn as nn

HOOK_ATTR = "_taq_hook"


class Call(Protocol):
    def arrays(self) -> list[mx.array]: ...


CallT = TypeVar("CallT", bound=Call)


class Recorder(Generic[CallT]):
    """Base of the hooks: holds the module, the recorded calls, and the unflushed ones."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self._calls: list[CallT] = []
        self._pending: list[CallT] = []

    def record(self, args: tuple, kwargs: dict[str, Any], outputs: Any) -> None:
        """Called by the proxy after each call of the module."""
        raise NotImplementedError

    def _store(self, call: CallT) -> None:
        self._calls.append(call)
        self._pending.append(call)

    def pending_arrays(self) -> list[mx.array]:
        return [array for call in self._pending for array in call.arrays()]

    def mark_flushed(self) -> None:
        self._pending.clear()

    def flush(self) -> list[CallT]:
        """Every call recorded so far, evaluated (one `mx.eval` for the unflushed ones)."""
        if self._pending:
            mx.eval(self.pending_arrays())
        self.mark_flushed()
        return list(self._calls)

    def clear(self) -> None:
        """Forget the recorded calls (to bound memory between batches)."""
        self._calls.clear()
        self._pending.clear()


RecorderT = TypeVar("RecorderT", bound=Recorder)


class HookSet(Mapping[str, RecorderT]):
    """The recorders installed by one context manager, by name."""

    def __init__(self, hooks: dict[str, RecorderT]) -> None:
        self._hooks = hooks

    def __getitem__(self, name: str) -> RecorderT:
        return self._hooks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hooks)

    def __len__(self) -> int:
        return len(self._hooks)

    def flush(self, *extra: Any) -> dict[str, list]:
        """Evaluate what every recorder holds (and `extra`, e.g. the model output) with one
        `mx.eval`; return each recorder's calls."""
        mx.eval([hook.pending_arrays() for hook in self._hooks.values()], *extra)
        for hook in self._hooks.values():
            hook.mark_flushed()
        return {name: hook.flush() for name, hook in self._hooks.items()}

    def clear(self) -> None:
        for hook in self._hooks.values():
            hook.clear()


@cache
def _proxy_class(cls: type[nn.Module]) -> type[nn.Module]:
    original_call = cls.__call__

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        outputs = original_call(self, *args, **kwargs)
        vars(self)[HOOK_ATTR].record(args, kwargs, outputs)
        return outputs

    return type(f"Hooked{cls.__name__}", (cls,), {"__call__": __call__, "_taq_proxied": cls})


def hooked_by(module: nn.Module) -> Recorder | None:
    """The recorder installed on `module`, if any."""
    return vars(module).get(HOOK_ATTR)


def install_proxy(recorder: Recorder) -> None:
    """Make `recorder.module` report every call; refuses a module that is already hooked."""
    module = recorder.module
    if (existing := hooked_by(module)) is not None:
        raise RuntimeError(
            f"{recorder.name} is already hooked (by {type(existing).__name__} "
            f"{existing.name!r}); remove that hook first"
        )
    vars(module)[HOOK_ATTR] = recorder
    module.__class__ = _proxy_class(type(module))


def remove_proxy(recorder: Recorder) -> None:
    """Restore the module's own class and drop the recorder, if it is this one's."""
    module = recorder.module
    if hooked_by(module) is not recorder:
        return
    # getattr: an interrupt may land between setting the recorder and swapping the class
    module.__class__ = getattr(type(module), "_taq_proxied", type(module))
    del vars(module)[HOOK_ATTR]


@contextmanager
def installed(recorders: Iterable[RecorderT]) -> Iterator[HookSet[RecorderT]]:
    """Install `recorders`; always remove the ones installed, also on errors and ^C."""
    attempted: list[RecorderT] = []
    try:
        for recorder in recorders:
            attempted.append(recorder)
            install_proxy(recorder)
        yield HookSet({recorder.name: recorder for recorder in attempted})
    finally:
        for recorder in reversed(attempted):
            remove_proxy(recorder)
