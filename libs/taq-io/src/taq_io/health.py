"""What is in a store and how far each stage got, for `taq doctor`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from taq_io.group import GroupStatus, StageGroup
from taq_io.identity import ModelIdentity
from taq_io.store import STALE, Store


@dataclass(frozen=True)
class StoreStatus:
    path: Path | str  # a URL for a store on object storage
    schema_version: str
    model: ModelIdentity
    groups: list[GroupStatus]

    def __str__(self) -> str:
        lines = [f"{self.path}: schema {self.schema_version}, model {self.model}"]
        lines += [f"  {group}" for group in self.groups] or ["  no groups yet"]
        return "\n".join(lines)


def describe(path: str | Path) -> StoreStatus:
    """Each group's kind, complete, partial or stale (`Store.state`: through the whole chain
    of inputs), units done / total, producer and config hash.

    Raises the same `StoreError`s as `Store.open` for a missing, foreign or unreadable store.
    """
    store = Store.open(path)
    return StoreStatus(
        path=store.path,
        schema_version=store.schema_version,
        model=store.model,
        groups=[_status(store, group) for group in store.groups()],
    )


def _status(store: Store, group: StageGroup) -> GroupStatus:
    kind, _, name = group.path.partition("/")
    found = store.state(kind, name or None)
    return replace(group.status(), stale=found.detail if found.state == STALE else "")
