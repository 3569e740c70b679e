"""The ranks of one `mlx.launch` as one writer of a store (`taq_runtime.ranks` says who is who).

Rank 0 opens (or creates) the store first and holds its writer lock; the other ranks then
open it under that lock (`taq_io.lock.join_launch`). Rank 0 alone creates, replaces and
commits groups; every rank writes only the units it owns, and rank 0 commits a group
(`complete`, written last) only after a barrier, once every rank's units are in. With one
process these are the plain calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from taq_io import MISSING, StageGroup, Store
from taq_io.lock import join_launch
from taq_runtime import ranks
from taq_runtime.cli import UsageError

T = TypeVar("T")


def open_store(open_: Callable[[], T]) -> T:
    """`open_()` (opening a store for writing, and any checks of what it holds) on rank 0,
    then on the other ranks, under rank 0's lock; every rank returns once all have it."""
    if ranks.rank() > 0:
        join_launch()
    return ranks.rank0_first(open_)


def refuse_existing(
    store: Store,
    label: str,
    kind: str,
    names: Iterable[str | None] = (None,),
    *,
    resume: bool,
    overwrite: bool,
) -> None:
    """Refuse to write `kind` groups (`names`) into a store that has any of them, unless
    --resume or --overwrite says what to do with them. The flags are looked at first: a
    writer killed while creating a group leaves it corrupt, and --overwrite, the fix every
    refusal names, must replace it without reading it."""
    if resume or overwrite:
        return
    if any(store.state(kind, name).state != MISSING for name in names):
        raise UsageError(
            f"{label} already has {kind}: pass --resume to continue or --overwrite to replace it"
        )


def create_group(create: Callable[[bool], T], overwrite: bool) -> T:
    """`create(overwrite)` (`Store.create_group` calls) on rank 0, which alone may replace
    groups; the others then reopen what it made."""
    return ranks.rank0_first(lambda: create(overwrite and ranks.rank() == 0))


def commit(groups: Iterable[StageGroup]) -> None:
    """Commit `groups` once every rank has written its units: rank 0 marks them complete
    (refused if a unit is missing), the others wait for it."""
    groups = list(groups)
    ranks.barrier()
    ranks.on_rank0(lambda: [group.mark_complete() for group in groups])
