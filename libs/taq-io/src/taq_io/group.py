"""One stage's group: pre-allocate, write units, mark each done, commit last; read done units.

The protocol that makes writes crash-safe and resumable (docs/schema.md, "Commit protocol"):
every array exists, NaN-filled, before the group's attributes are written; a unit's chunks are
written before its `done` flag; `complete: true` is written after every unit is done. zarr's
local store replaces each file atomically, so a killed writer leaves whole chunks or none, and
readers trust only what the flags say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import zarr
from numpy.typing import ArrayLike

from taq_io import dtypes, integrity
from taq_io.errors import CorruptGroupError, GroupIncompleteError, UnitNotDoneError
from taq_io.identity import config_hash
from taq_io.schema import ATTRS_KEY, DONE, ArraySpec, GroupSpec


@dataclass(frozen=True)
class GroupMeta:
    """The group's `taq` attribute: what made it, from what, and whether it is committed."""

    type: str
    version: int
    producer: str
    config: dict
    config_hash: str
    inputs: dict[str, str]
    complete: bool

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, object]) -> GroupMeta | None:
        """None when the group has no `taq` attribute: its creation never finished."""
        record = attrs.get(ATTRS_KEY)
        return None if record is None else cls(**record)


@dataclass(frozen=True)
class GroupStatus:
    """A group's health, as `describe` reports it."""

    path: str
    kind: str
    complete: bool
    done: int
    total: int
    unit: str | None
    producer: str
    config_hash: str
    stale: str = ""  # why the group is stale (`Store.state`'s detail); "" when it is not

    def __str__(self) -> str:
        state = "STALE" if self.stale else "complete" if self.complete else "partial"
        units = f" {self.done}/{self.total} {self.unit}s" if self.unit else ""
        text = f"{self.path}: {state}{units}, {self.producer}, config {self.config_hash}"
        return text + (f" ({self.stale})" if self.stale else "")


class StageGroup:
    """A stage group in a store. Get one from `Store.create_group` or `Store.require_group`."""

    def __init__(
        self, zgroup: zarr.Group, spec: GroupSpec, path: str, store_label: str, meta: GroupMeta
    ) -> None:
        self.path = path
        self.spec = spec
        self.meta = meta
        self._zgroup = zgroup
        self._store_label = store_label
        specs = spec.all_arrays()
        names = list(specs)
        if meta.version != spec.version:  # another format, stale: open what it has
            names = [name for name in names if name in zgroup]
        # arrays a later schema minor added: a group written before lacks them
        self._committed_done: np.ndarray | None = None
        self._absent = {n for n in names if specs[n].since is not None and n not in zgroup}
        names = [name for name in names if name not in self._absent]
        # write_empty_chunks is a runtime setting, not stored: set it on every array opened
        self._arrays = {
            name: zgroup[name].with_config(integrity.ARRAY_OPTIONS["config"]) for name in names
        }

    @classmethod
    def allocate(
        cls,
        zgroup: zarr.Group,
        spec: GroupSpec,
        path: str,
        store_label: str,
        meta: GroupMeta,
        sizes: Mapping[str, int],
        constants: Mapping[str, ArrayLike],
    ) -> StageGroup:
        """Create every array (fill: NaN / 0 / False / ""), write the constants, then the meta."""
        specs = spec.all_arrays()
        missing = sorted({dim for a in specs.values() for dim in a.dims} - set(sizes))
        if missing:
            raise ValueError(f"{path}: sizes lack dims {missing}")
        if set(constants) != set(spec.constant_arrays()):
            raise ValueError(
                f"{path}: constants must be exactly {sorted(spec.constant_arrays())}, "
                f"got {sorted(constants)}"
            )
        for name, array_spec in specs.items():
            zgroup.create_array(
                name,
                shape=array_spec.shape(sizes),
                chunks=array_spec.chunk_shape(sizes),
                dtype=dtypes.STORAGE_DTYPES[array_spec.dtype],
                fill_value=dtypes.FILL_VALUES[array_spec.dtype],
                dimension_names=array_spec.dims,
                attributes={ATTRS_KEY: {"dtype": array_spec.dtype, integrity.EVERY_CHUNK: True}},
                **integrity.ARRAY_OPTIONS,
            )
        for name, value in constants.items():
            data = dtypes.encode(specs[name].dtype, value)
            _check_shape(path, name, data.shape, specs[name].shape(sizes))
            zgroup[name].with_config(integrity.ARRAY_OPTIONS["config"])[...] = data
        zgroup.attrs[ATTRS_KEY] = asdict(meta)
        return cls(zgroup, spec, path, store_label, meta)

    @property
    def sizes(self) -> dict[str, int]:
        """The size of every dim, as given at creation."""
        sizes = {
            dim: size
            for name, array_spec in self.spec.all_arrays().items()
            if name in self._arrays
            for dim, size in zip(array_spec.dims, self._arrays[name].shape, strict=True)
        }
        absent = (self.spec.arrays[name].dims for name in self._absent)
        return {**{dim: 0 for dims in absent for dim in dims}, **sizes}

    @property
    def total_units(self) -> int:
        return self._arrays[DONE].shape[0] if self.spec.unit else 0

    def done_mask(self) -> np.ndarray:
        """Which units are whole; all False for a group without units. A committed group's
        mask no longer changes: it is read once (on object storage each read is a request
        per chunk, and every read of a unit asks)."""
        if not self.spec.unit:
            return np.zeros(0, dtype=bool)
        if self._committed_done is not None:
            return self._committed_done.copy()
        mask = self._arrays[DONE][...]
        if self.meta.complete:
            self._committed_done = mask.copy()
        return mask

    def done_units(self) -> np.ndarray:
        """Indices of the units that are written, ascending."""
        return np.flatnonzero(self.done_mask())

    def write_unit(self, index: int, values: Mapping[str, ArrayLike]) -> None:
        """Write every per-unit array at `index`, then mark the unit done (last)."""
        names = self.spec.unit_arrays()
        if set(values) != set(names):
            raise ValueError(
                f"{self.path}: a unit is exactly {sorted(names)}, got {sorted(values)}"
            )
        if not 0 <= index < self.total_units:
            raise IndexError(
                f"{self.path}: {self.spec.unit} {index} outside 0..{self.total_units - 1}"
            )
        for name in names:
            if name in self._absent:
                _check_absent(self.path, name, self.spec.arrays[name], values[name])
                continue
            array = self._arrays[name]
            data = dtypes.encode(self.spec.arrays[name].dtype, values[name])
            _check_shape(self.path, name, data.shape, array.shape[1:])
            array[index] = data
        self._arrays[DONE][index] = True

    def mark_complete(self) -> None:
        """Commit the group: from now on readers may `require_group` it."""
        done = int(self.done_mask().sum())
        if done < self.total_units:
            raise GroupIncompleteError(
                f"cannot commit `{self.path}`: {done}/{self.total_units} {self.spec.unit}s written"
            )
        self.meta = replace(self.meta, complete=True)
        self._zgroup.attrs[ATTRS_KEY] = asdict(self.meta)

    def read(self, name: str, units: Sequence[int] | None = None) -> np.ndarray:
        """An array's values. For a per-unit array: the done units only (all of them, in index
        order, or those asked for); asking for a unit that is not done raises.

        What is read is checked (`taq_io.integrity`): a missing or undecodable chunk, or NaN /
        inf in a float array that is not padding, raises `CorruptGroupError` naming the unit
        and the command that regenerates this group."""
        array_spec = self.spec.all_arrays().get(name)
        if array_spec is None:
            raise KeyError(f"{self.path} has no array {name!r}")
        if name in self._absent:  # written before the array existed: empty
            sizes = self.sizes
            shape = list(array_spec.shape(sizes))
            if name in self.spec.unit_arrays():
                shape[0] = int(self.done_mask().sum()) if units is None else len(units)
            return np.zeros(shape, dtypes.STORAGE_DTYPES[array_spec.dtype])
        array = self._arrays[name]
        where = (self.spec, self.path, self._store_label, name)
        if name not in self.spec.unit_arrays():
            integrity.check_chunks(*where, array, None)
            data = self._decode(array_spec.dtype, name, array, None)
            integrity.check_values(*where, data, None, self._real(array_spec, None))
            return data
        mask = self.done_mask()
        selected = np.flatnonzero(mask) if units is None else np.asarray(units, dtype=np.int64)
        not_done = selected[~mask[selected]]
        if not_done.size:
            raise UnitNotDoneError(
                f"`{self.path}` in {self._store_label}: {self.spec.unit}s {not_done.tolist()} "
                "are not written"
            )
        integrity.check_chunks(*where, array, selected.tolist())
        data = self._decode(array_spec.dtype, name, array, selected)
        integrity.check_values(*where, data, selected.tolist(), self._real(array_spec, selected))
        return data

    def _real(self, array_spec: ArraySpec, units: np.ndarray | None) -> np.ndarray | None:
        """Where a padded array's values are real (`ArraySpec.real_where`), for `units`."""
        if array_spec.real_where is None:
            return None
        mask, index = array_spec.real_where
        return self.read(mask, None if units is None else units.tolist())[..., index]

    def _decode(
        self, dtype: str, name: str, array: zarr.Array, selected: np.ndarray | None
    ) -> np.ndarray:
        """Read and decode; a chunk that fails its checksum or decompression is named."""
        try:
            if selected is None:
                return dtypes.decode(dtype, array[...])
            return dtypes.decode(dtype, array.get_orthogonal_selection((selected,)))
        except CorruptGroupError:
            raise
        except Exception as error:  # numcodecs / zarr raise assorted types for a bad chunk
            unit = None
            for index in [] if selected is None else selected.tolist():
                try:
                    array.get_orthogonal_selection(([index],))
                except Exception:  # noqa: BLE001 - locating the bad unit
                    unit = index
                    break
            raise integrity.unreadable(
                self.spec, self.path, self._store_label, name, unit, error
            ) from error

    def read_unit(self, index: int) -> dict[str, np.ndarray]:
        """Every per-unit array at one done unit."""
        return {name: self.read(name, [index])[0] for name in self.spec.unit_arrays()}

    def read_arrays(
        self, names: Sequence[str], units: Sequence[int] | None = None
    ) -> dict[str, np.ndarray]:
        """Several arrays (`read`'s checks; per-unit ones at `units`), checked to agree on
        the size of every dim they share: each array's shape is its own metadata, so an
        edited store could make them disagree, and a decoder indexing one by another's
        size would read wrong rows silently."""
        arrays = {
            name: self.read(name, units if name in self.spec.unit_arrays() else None)
            for name in names
        }
        where = f"`{self.path}` in {self._store_label}"
        fix = integrity.regenerate(self.spec, self._store_label)
        seen: dict[str, tuple[str, int]] = {}
        for name, data in arrays.items():
            dims = self.spec.all_arrays()[name].dims
            if data.ndim != len(dims):
                raise CorruptGroupError(
                    f"{where}: {name} has {data.ndim} dims, the schema's has {len(dims)} "
                    f"({' '.join(dims)}): {fix}"
                )
            for dim, size in zip(dims, data.shape, strict=True):
                first, want = seen.setdefault(dim, (name, size))
                if size != want:
                    raise CorruptGroupError(
                        f"{where}: {name} has {size} {dim}s but {first} has {want}: {fix}"
                    )
        return arrays

    def identity(self) -> str:
        """What downstream groups record in `inputs`: changes whenever this group's content
        could (its kind, version, producer, config or own inputs)."""
        if not self.meta.complete:
            raise GroupIncompleteError(f"`{self.path}` is not complete: it has no identity yet")
        meta = asdict(self.meta)
        return config_hash(
            {k: meta[k] for k in ("type", "version", "producer", "config_hash", "inputs")}
        )

    def status(self) -> GroupStatus:
        return GroupStatus(
            path=self.path,
            kind=self.spec.kind,
            complete=self.meta.complete,
            done=int(self.done_mask().sum()),
            total=self.total_units,
            unit=self.spec.unit,
            producer=self.meta.producer,
            config_hash=self.meta.config_hash,
        )


def _check_absent(path: str, name: str, spec: ArraySpec, value: ArrayLike) -> None:
    if np.asarray(value).size:
        raise ValueError(
            f"{path} was written before schema {spec.since} added {name}: rewrite the group "
            "with --overwrite"
        )


def _check_shape(path: str, name: str, got: tuple[int, ...], want: tuple[int, ...]) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{path}/{name}: shape {tuple(got)}, the schema wants {tuple(want)}")
