"""Integrity at the source: what a reader checks before it builds on a committed group.

zarr reads a missing chunk as the fill value and says nothing, and a chunk without a checksum
decodes flipped bytes into plausible garbage. So every array is written with zstd's content
checksum (a corrupt chunk fails to decode) and with every chunk present (`write_empty_chunks`),
and every read of a committed group checks, for the units it reads: each chunk exists, decodes,
and a float array that is not padding holds only finite values. A failure is a
`CorruptGroupError` naming the group, the array, the unit (image, step, ...) and the command
that regenerates the group: the stage upstream of the reader, not the reader itself.

`verify_group` reads every chunk of a group and lists each bad one (`taq doctor --verify`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence

import numpy as np
import zarr
from zarr.codecs import ZstdCodec
from zarr.core.sync import sync

from taq_io.errors import CorruptGroupError
from taq_io.schema import ATTRS_KEY, DONE, ArraySpec, GroupSpec

EVERY_CHUNK = "every_chunk"
"""Array attribute (inside `taq`): written with every chunk present, so a missing one is an
error. Arrays written before integrity checks existed lack it and are not checked for it."""

ARRAY_OPTIONS = {
    "compressors": ZstdCodec(level=3, checksum=True),
    "config": {"write_empty_chunks": True},
}
"""How every taq array is created: checksummed chunks, all of them written."""


def regenerate(spec: GroupSpec, store_label: str) -> str:
    return f"rerun `{spec.command} --store {store_label} --overwrite`"


def _chunk_coords(array: zarr.Array, unit: int | None) -> list[tuple[int, ...]]:
    """Coordinates of every chunk of `array`, or of those holding index `unit` of dim 0."""
    grid = [range(math.ceil(s / c)) for s, c in zip(array.shape, array.chunks, strict=True)]
    if unit is not None and grid:
        grid[0] = range(unit // array.chunks[0], unit // array.chunks[0] + 1)
    return list(itertools.product(*grid))


def missing_chunks(array: zarr.Array, unit: int | None = None) -> list[tuple[int, ...]]:
    """Chunks that should exist (the array records `every_chunk`) but do not."""
    if not (array.attrs.get(ATTRS_KEY) or {}).get(EVERY_CHUNK) or 0 in array.shape:
        return []
    store, prefix = array.store_path.store, array.store_path.path
    coords = _chunk_coords(array, unit)
    keys = [array.metadata.encode_chunk_key(c) for c in coords]
    keys = [f"{prefix}/{key}" if prefix else key for key in keys]

    async def exist() -> list[bool]:  # at once: on object storage each is a round trip
        return await asyncio.gather(*(store.exists(key) for key in keys))

    return [c for c, found in zip(coords, sync(exist()), strict=True) if not found]


def _where(spec: GroupSpec, array_spec: ArraySpec, unit: int | None, bad: np.ndarray) -> str:
    """`image 1, steps [2, 3]`: the unit and, where the next dim is a step, the steps."""
    parts = [] if unit is None else [f"{spec.unit} {unit}"]
    dims = array_spec.dims[1:] if unit is not None else array_spec.dims
    if bad.ndim and dims and dims[0] == "step":
        steps = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1)).tolist()
        parts.append(f"steps {steps}")
    return ", ".join(parts)


def check_values(
    spec: GroupSpec,
    path: str,
    store_label: str,
    name: str,
    data: np.ndarray,
    units: Sequence[int] | None,
    real: np.ndarray | None = None,
) -> None:
    """Refuse non-finite values of a float array that is not padding (`units`: the rows of
    `data`, for a per-unit array; `real`: for a padded array, where its values are real)."""
    array_spec = spec.all_arrays()[name]
    if (array_spec.padded and real is None) or not np.issubdtype(data.dtype, np.floating):
        return
    finite = np.isfinite(data)
    if real is not None:  # padding may be NaN: only the real values must be finite
        finite |= ~real.reshape(real.shape + (1,) * (data.ndim - real.ndim))
    if finite.all():
        return
    if units is None:
        where = _where(spec, array_spec, None, ~finite)
        raise CorruptGroupError(
            f"`{path}` in {store_label}: {name} holds NaN or inf"
            f"{f' ({where})' if where else ''}: {regenerate(spec, store_label)}"
        )
    row = int(np.flatnonzero(~finite.reshape(len(units), -1).all(axis=1))[0])
    where = _where(spec, array_spec, int(units[row]), ~finite[row])
    raise CorruptGroupError(
        f"`{path}` in {store_label}: {name} of {where} holds NaN or inf: "
        f"{regenerate(spec, store_label)}"
    )


def check_chunks(
    spec: GroupSpec,
    path: str,
    store_label: str,
    name: str,
    array: zarr.Array,
    units: Sequence[int] | None,
) -> None:
    """Refuse missing chunks of `array` (all of it, or the chunks of `units`)."""
    for unit in [None] if units is None else units:
        if missing_chunks(array, None if unit is None else int(unit)):
            where = "" if unit is None else f" of {spec.unit} {int(unit)}"
            raise CorruptGroupError(
                f"`{path}` in {store_label}: {name}{where} is missing a chunk: "
                f"{regenerate(spec, store_label)}"
            )


def unreadable(
    spec: GroupSpec, path: str, store_label: str, name: str, unit: int | None, error: Exception
) -> CorruptGroupError:
    where = "" if unit is None else f" of {spec.unit} {unit}"
    return CorruptGroupError(
        f"`{path}` in {store_label}: {name}{where} is unreadable ({type(error).__name__}: "
        f"{str(error)[:80]}; checksum or decompression failed): {regenerate(spec, store_label)}"
    )


def verify_group(group) -> list[str]:
    """Read every chunk of a `StageGroup`; one line per bad array x unit (empty: all good)."""
    problems = []
    unit_arrays = set(group.spec.unit_arrays())
    units = group.done_units().tolist() if group.spec.unit else []
    for name in group.spec.all_arrays():
        if name == DONE and not group.meta.complete:
            continue  # units not yet written have no done chunk: that is not damage
        per_unit = name in unit_arrays
        for unit in units if per_unit else [None]:
            try:
                group.read(name, None if unit is None else [unit])
            except CorruptGroupError as error:
                problems.append(str(error))
    return problems
