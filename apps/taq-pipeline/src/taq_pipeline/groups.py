"""Any group of a store by its path (`kind` or `kind/name`), read through its owner.

`taq eval`, `taq report` and `taq sweep` record the identities of the groups they read; the
paths come from the schema's kinds, and each is opened by the one module that owns its kind.
"""

from __future__ import annotations

from collections.abc import Callable

from taq_actstats.collect import require_stats
from taq_actstats.temporal import require_temporal
from taq_adaround.blockio import require_blockio
from taq_io import StageGroup, Store
from taq_run.calib import require_calib
from taq_run.quant_config import require_quant_config
from taq_run.weights import require_weights

READERS: dict[str, Callable[..., StageGroup]] = {
    "calib": require_calib,
    "blockio": require_blockio,
    "actstats": require_stats,
    "quant_config": require_quant_config,
    "temporal": require_temporal,
    "weights": require_weights,
}
"""Each kind's reader; named kinds (`blockio`, `weights`) take the name after the store."""


def require(store: Store, kind: str, name: str | None = None) -> StageGroup:
    """The complete, up-to-date group `kind[/name]` (its owner's refusals)."""
    if kind not in READERS:
        raise KeyError(f"unknown group kind {kind!r}; known: {sorted(READERS)}")
    return READERS[kind](store, name) if name else READERS[kind](store)


def identity(store: Store, path: str) -> str:
    """The identity of the group at `path` (`kind` or `kind/name`)."""
    kind, _, name = path.partition("/")
    return require(store, kind, name or None).identity()
