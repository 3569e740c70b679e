"""A taq store: one zarr v3 directory per run, checked on open, holding one group per stage.

Opening refuses anything a stage must not silently build on (another model, an unknown schema
major, a corrupt or foreign directory); `require_group` refuses missing, incomplete and stale
groups. Every refusal is a `StoreError` whose message names the command that fixes it.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import zarr
from numpy.typing import ArrayLike
from zarr.core.sync import sync

from taq_io.errors import (
    CorruptGroupError,
    CorruptStoreError,
    GroupConflictError,
    GroupIncompleteError,
    GroupMissingError,
    ModelMismatchError,
    NotATaqStoreError,
    SchemaVersionError,
    StaleGroupError,
    StoreExistsError,
    StoreNotFoundError,
    StoreNotWritableError,
)
from taq_io.group import GroupMeta, StageGroup
from taq_io.identity import ModelIdentity, config_hash
from taq_io.integrity import verify_group
from taq_io.location import Location, locate
from taq_io.lock import WriterLock
from taq_io.schema import ATTRS_KEY, GROUPS, SCHEMA_NAME, SCHEMA_VERSION, GroupSpec

CREATED_BY = f"taq-io {version('taq-io')}"
FIRST_COMMAND = GROUPS["calib"].command
"""The stage that starts a run, named when there is no store yet."""


MISSING, PARTIAL, COMPLETE, STALE = "missing", "partial", "complete", "stale"


@dataclass(frozen=True)
class GroupState:
    """`Store.state`'s answer: the state, the group's path, why (one line), the group."""

    state: str  # MISSING | PARTIAL | COMPLETE | STALE
    path: str
    detail: str = ""
    group: StageGroup | None = None


class Store:
    """An open taq store. Use `Store.create`, `Store.open` or `Store.open_or_create`.
    `path` is the local directory, or the URL of a store on object storage (a str)."""

    def __init__(
        self,
        location: Location,
        root: zarr.Group,
        model: ModelIdentity,
        schema_version: str,
        lock: WriterLock | None = None,
    ):
        self.path = location.label
        self._location = location
        self.model = model
        self.schema_version = schema_version
        self._root = root
        self._lock = lock
        if lock is not None:  # released when the store is closed or collected
            self._release = weakref.finalize(self, lock.release)

    def close(self) -> None:
        """Release the writer lock (a store opened for writing holds it until then)."""
        if self._lock is not None:
            self._release()
            self._lock = None

    @classmethod
    def create(cls, path: str | Path, model: ModelIdentity, overwrite: bool = False) -> Store:
        """A new, empty store at `path` (a missing or empty directory or URL, or a taq store
        to replace when `overwrite`). Never removes what is not a taq store.
        The new store holds the writer lock (see `taq_io.lock`)."""
        where = locate(path)
        label = where.label
        lock = None
        if where.exists() and not where.is_empty():
            _read_root_record(where)  # refuses what is not a taq store
            if not overwrite:
                raise StoreExistsError(
                    f"{label} is already a taq store: open it, or pass --overwrite to replace it"
                )
            lock = _acquire(where)
            where.clear()  # keeps the lock: it is what we hold
        record = {
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "model": model.to_json(),
            "created_by": CREATED_BY,
        }
        try:
            if lock is None:
                where.prepare()
                lock = _acquire(where)
            # "a", not "w": "w" would clear the directory, lock file included
            root = zarr.open_group(
                store=where.zarr_store(read_only=False),
                mode="a",
                zarr_format=3,
                attributes={ATTRS_KEY: record},
            )
            if root.attrs.get(ATTRS_KEY) != record:  # a record left by a create that died
                root.attrs.put({ATTRS_KEY: record})
        except OSError as error:
            if lock is not None:
                lock.release()
            raise StoreNotWritableError(
                f"cannot create a store at {label} ({error.strerror or error}): "
                "pass a writable --store path"
            ) from error
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(where, root, model, SCHEMA_VERSION, lock)

    @classmethod
    def open(
        cls,
        path: str | Path,
        model: ModelIdentity | None = None,
        mode: Literal["r", "r+"] = "r",
    ) -> Store:
        """Open an existing store; with `model`, refuse a store made for another model.
        `mode="r+"` takes the writer lock (refused while another process writes the store)."""
        where = locate(path)
        label = where.label
        record = _read_root_record(where)
        stored_model = ModelIdentity(**record["model"])
        if model is not None and model != stored_model:
            raise ModelMismatchError(
                f"{label} is for model {stored_model}, you asked for {model}: use another --store"
            )
        lock = None
        if mode == "r+":
            where.check_writable()
            lock = _acquire(where)
        root = zarr.open_group(
            store=where.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3
        )
        return cls(where, root, stored_model, record["schema_version"], lock)

    @staticmethod
    def recorded_model(path: str | Path) -> ModelIdentity | None:
        """The model the store at `path` was made for (None: no store there yet), read from
        its root record alone, so a wrong `--model` is refused before the model is built."""
        where = locate(path)
        if not where.exists() or where.is_empty():
            return None
        return ModelIdentity(**_read_root_record(where)["model"])

    @classmethod
    def open_or_create(cls, path: str | Path, model: ModelIdentity) -> Store:
        """What a writing stage wants: the store at `path` for `model`, created if absent."""
        where = locate(path)
        if not where.exists() or where.is_empty():
            return cls.create(path, model)
        return cls.open(path, model, mode="r+")

    def create_group(
        self,
        kind: str,
        name: str | None = None,
        *,
        producer: str,
        config: Mapping[str, object],
        inputs: Mapping[str, str],
        sizes: Mapping[str, int],
        constants: Mapping[str, ArrayLike] | None = None,
        overwrite: bool = False,
    ) -> StageGroup:
        """A group to write, pre-allocated from `sizes` (dim name -> length).

        If the group exists with the same config, inputs and sizes it is returned as it is, so
        the writer resumes at the first unit not done (a complete group needs no work). If it
        differs, this refuses unless `overwrite`, which replaces it. `constants` are the
        arrays without the unit dim; `inputs` maps each input's group path to its identity.
        """
        spec, path = _resolve(kind, name)
        meta = GroupMeta(
            type=spec.type,
            version=spec.version,
            producer=producer,
            config=dict(config),
            config_hash=config_hash(dict(config)),
            inputs=dict(inputs),
            complete=False,
        )
        # `overwrite` replaces without reading what is there: a writer killed while creating
        # the group leaves it corrupt, and --overwrite is the fix the refusal names.
        found = None if overwrite else self.state(kind, name, config=meta.config)
        if found is not None and found.group is not None:
            conflict = _difference(found, meta, dict(sizes), f"`{path}` in {self.path}")
            if conflict is None:
                return found.group
            raise GroupConflictError(
                f"{conflict}: rerun `{spec.command} --store {self.path} --overwrite` to replace it"
            )
        parent = self._root.require_group(kind) if spec.named else self._root
        zgroup = parent.create_group(name or kind, overwrite=True)
        return StageGroup.allocate(zgroup, spec, path, str(self.path), meta, sizes, constants or {})

    def state(
        self,
        kind: str,
        name: str | None = None,
        *,
        config: Mapping[str, object] | None = None,
        wanted_hash: str | None = None,
    ) -> GroupState:
        """Where a group stands: missing, partial, complete or stale. The one place taq
        decides it: every stage, `taq run`, `taq doctor`, the report and every reader ask here.

        Stale: written by another format version, made with a config other than `config`
        (when given; the detail names the fields that differ) or whose hash is not
        `wanted_hash` (when given), or made from inputs that changed since, at any depth: a
        group built from a group that is itself stale is stale too (recalibrating makes the
        weights built from the old block cache stale, not only the cache)."""
        spec, path = _resolve(kind, name)
        group = self._find(spec, path)
        if group is None:
            return GroupState(MISSING, path, f"no `{path}` group in {self.path}")
        stale = _version_difference(group.meta, spec)
        if stale is None:
            stale = _config_difference(group.meta, config, wanted_hash)
        stale = stale or self._stale_input(group.meta, {})
        if stale is not None:
            return GroupState(STALE, path, f"`{path}` in {self.path} {stale}", group)
        if not group.meta.complete:
            progress = (
                f"{int(group.done_mask().sum())}/{group.total_units} {spec.unit}s"
                if spec.unit
                else "not committed"
            )
            return GroupState(
                PARTIAL, path, f"`{path}` in {self.path} is incomplete ({progress})", group
            )
        return GroupState(COMPLETE, path, "", group)

    def require_group(
        self,
        kind: str,
        name: str | None = None,
        *,
        config_hash: str | None = None,
        allow_stale: bool = False,
        verify: bool = False,
    ) -> StageGroup:
        """A complete group to read. Refuses a missing or incomplete group, one made with a
        config other than `config_hash` (when given), and a stale one (see `state`) unless
        `allow_stale`. With `verify`, every chunk is read first (`CorruptGroupError` on the
        first bad one): what a stage does before it replaces its own groups, so corrupt input
        never costs the user good output."""
        spec, _ = _resolve(kind, name)
        found = self.state(kind, name, wanted_hash=config_hash)
        command = f"{spec.command} --store {self.path}"
        if found.state == MISSING:
            raise GroupMissingError(f"{found.detail}: run `{command}` first")
        if found.state == STALE and not allow_stale:
            raise StaleGroupError(f"{found.detail}: rerun `{command} --overwrite`")
        group = found.group
        if not group.meta.complete:
            raise GroupIncompleteError(f"{found.detail}: rerun `{command} --resume`")
        if verify and (problems := verify_group(group)):
            raise CorruptGroupError(problems[0])
        return group

    def nbytes(self, group: str) -> int:
        """Bytes the store holds under `group` (on disk, or in the object store)."""
        return self._location.nbytes(group)

    def record_timing(self, stage: str, seconds: float, outcome: str, groups: list[str]) -> None:
        """Record a stage's wall time in the root record as soon as it completes, so a run
        killed later keeps it (a stage that is skipped keeps the time of the run that made
        it)."""
        record = dict(self._root.attrs[ATTRS_KEY])
        timings = dict(record.get("timings", {}))
        timings[stage] = {"seconds": seconds, "outcome": outcome, "groups": list(groups)}
        self._root.attrs[ATTRS_KEY] = {**record, "timings": timings}

    def timings(self) -> dict[str, dict]:
        """Stage name -> {seconds, outcome, groups}, in the order the stages completed."""
        return dict(self._root.attrs[ATTRS_KEY].get("timings", {}))

    def groups(self) -> list[StageGroup]:
        """Every stage group in the store whose creation finished, complete or not."""
        found = []
        for kind, spec in GROUPS.items():
            if spec.named:
                paths = [f"{kind}/{name}" for name in self._child_names(kind)]
            else:
                paths = [kind]
            found += [group for p in paths if (group := self._find(spec, p)) is not None]
        return found

    def _child_names(self, kind: str) -> list[str]:
        """The names under a named kind (`blockio` -> mm0, mm1, ...), listed without reading
        their metadata: a corrupt one is then named by `_find`, not a bare JSON error."""
        parent = self._root.get(kind)
        if not isinstance(parent, zarr.Group):
            return []

        async def names() -> list[str]:
            return [name async for name in parent.store.list_dir(parent.path)]

        return sorted(name for name in sync(names()) if name != "zarr.json")

    def _find(self, spec: GroupSpec, path: str) -> StageGroup | None:
        """The group at `path`, or None if absent or its creation never finished."""
        try:
            zgroup = self._root.get(path)
            meta = GroupMeta.from_attrs(zgroup.attrs) if isinstance(zgroup, zarr.Group) else None
            return None if meta is None else StageGroup(zgroup, spec, path, str(self.path), meta)
        except (ValueError, TypeError, KeyError) as error:
            raise CorruptStoreError(
                f"`{path}` in {self.path} is corrupt ({error!r}): "
                f"rerun `{spec.command} --store {self.path} --overwrite`"
            ) from error

    def _stale_input(self, meta: GroupMeta, seen: dict[str, str | None]) -> str | None:
        """How a recorded input (a group of this store) or anything upstream of it differs
        from what it was when `meta`'s group was made, if it does. `seen` memoises paths."""
        for path, recorded in meta.inputs.items():
            spec = GROUPS.get(path.split("/")[0])
            if spec is None:
                continue  # not a group of this store (e.g. an external file's hash)
            current = self._find(spec, path)
            if current is None:
                now = "missing"
            elif not current.meta.complete:
                now = "incomplete"
            elif current.identity() != recorded:
                now = current.identity()
            else:
                if path not in seen:
                    seen[path] = None  # no cycles in a store, but never loop
                    upstream = _version_difference(current.meta, spec)
                    seen[path] = upstream or self._stale_input(current.meta, seen)
                if seen[path] is not None:
                    return f"was made from {path}, which is stale ({path} {seen[path]})"
                continue
            return f"was made from {path} {recorded}, the store's {path} is now {now}"
        return None


def _resolve(kind: str, name: str | None) -> tuple[GroupSpec, str]:
    spec = GROUPS.get(kind)
    if spec is None:
        raise KeyError(f"unknown group kind {kind!r}; known: {sorted(GROUPS)}")
    if spec.named != (name is not None):
        raise ValueError(f"`{kind}` groups {'need' if spec.named else 'take no'} name")
    if name is not None and (not name or "/" in name):
        raise ValueError(f"bad group name {name!r}")
    return spec, f"{kind}/{name}" if spec.named else kind


def _version_difference(meta: GroupMeta, spec: GroupSpec) -> str | None:
    if meta.version != spec.version:
        return f"has {spec.kind} format version {meta.version}, this taq writes {spec.version}"
    return None


def _config_difference(
    meta: GroupMeta, config: Mapping[str, object] | None, wanted_hash: str | None
) -> str | None:
    """How the config a group was made with differs from `config` (by field) or from
    `wanted_hash`, if it does."""
    if config is not None and config_hash(dict(config)) != meta.config_hash:
        return f"was made with {changed_fields(meta.config, config)}"
    if wanted_hash is not None and wanted_hash != meta.config_hash:
        return f"was made with config {meta.config_hash}, you asked for {wanted_hash}"
    return None


def changed_fields(recorded: Mapping[str, object], wanted: Mapping[str, object]) -> str:
    """`name=recorded (now wanted)` for each config field that differs (a tuple and the list
    it was stored as are the same)."""

    def canon(value):
        return list(value) if isinstance(value, tuple) else value

    diffs = [
        f"{key}={recorded.get(key)!r} (now {wanted.get(key)!r})"
        for key in sorted(set(recorded) | set(wanted))
        if canon(recorded.get(key)) != canon(wanted.get(key))
    ]
    return ", ".join(diffs) or "a different config"


def _difference(
    found: GroupState, wanted: GroupMeta, sizes: dict[str, int], where: str
) -> str | None:
    """How an existing group differs from the one a writer asks for, if it does: its state
    (`Store.state` with the writer's config), then the inputs and sizes the writer names."""
    existing = found.group
    if found.state == STALE:
        return found.detail
    if existing.meta.inputs != wanted.inputs:
        return f"{where} was made from inputs {existing.meta.inputs}, you asked for {wanted.inputs}"
    asked = {dim: sizes.get(dim) for dim in existing.sizes}
    if existing.sizes != asked:
        return f"{where} has sizes {existing.sizes}, you asked for {asked}"
    return None


def _acquire(where: Location) -> WriterLock:
    lock = where.lock()
    lock.acquire()
    return lock


def _read_root_record(where: Location) -> dict:
    """The root's `taq` attribute, after checking the location holds a taq store we read."""
    path = where.label
    if not where.exists():
        raise StoreNotFoundError(
            f"no taq store at {path}: run `{FIRST_COMMAND} --store {path}` first"
        )
    where.check_contained()
    metadata_file = f"{path}/zarr.json"
    text = where.read_text("zarr.json")
    if text is None:
        raise NotATaqStoreError(f"{path} exists but is not a taq store: pass another --store path")
    try:
        metadata = json.loads(text)
        record = metadata.get("attributes", {}).get(ATTRS_KEY)
    except (ValueError, AttributeError) as error:
        raise CorruptStoreError(
            f"{metadata_file} is corrupt ({error}): restore it, or remove {path} and re-run "
            f"from `{FIRST_COMMAND}`"
        ) from error
    if not isinstance(record, dict) or record.get("schema") != SCHEMA_NAME:
        raise NotATaqStoreError(
            f"{path} is a zarr store but not a taq store: pass another --store path"
        )
    if metadata.get("zarr_format") != 3 or metadata.get("node_type") != "group":
        raise CorruptStoreError(
            f"{metadata_file} is not a zarr v3 group (zarr_format "
            f"{metadata.get('zarr_format')!r}, node_type {metadata.get('node_type')!r}): restore "
            f"it, or remove {path} and re-run from `{FIRST_COMMAND}`"
        )
    try:
        major = int(str(record["schema_version"]).split(".")[0])
        ModelIdentity(**record["model"])
    except (KeyError, ValueError, TypeError) as error:
        raise CorruptStoreError(
            f"{metadata_file} has a malformed `{ATTRS_KEY}` attribute ({error!r}): restore it, "
            f"or remove {path} and re-run from `{FIRST_COMMAND}`"
        ) from error
    our_major = int(SCHEMA_VERSION.split(".")[0])
    if major != our_major:
        raise SchemaVersionError(
            f"{path} was written by schema {SCHEMA_NAME} {record['schema_version']}, this taq "
            f"reads {our_major}.x: upgrade taq, or re-run into a new --store"
        )
    return record
