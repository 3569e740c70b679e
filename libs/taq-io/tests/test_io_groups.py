"""Stage groups: allocation, units, commit, resume, staleness, dtypes and what lands on disk."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from taq_io import (
    GROUPS,
    ArraySpec,
    CorruptGroupError,
    CorruptStoreError,
    GroupConflictError,
    GroupIncompleteError,
    GroupMissingError,
    GroupSpec,
    StaleGroupError,
    Store,
    UnitNotDoneError,
    describe,
    from_bfloat16_bits,
    to_bfloat16_bits,
)
from taq_io.integrity import verify_group
from taq_io.schema import WEIGHT_ROLES

_spec = importlib.util.spec_from_file_location(
    "calib_writer", Path(__file__).with_name("calib_writer.py")
)
calib_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calib_writer)

BLOCKIO_SIZES = dict(
    sample=2,
    image_token=4,
    text_token=3,
    text_out_token=3,
    hidden=8,
    image_modulation=48,
    text_modulation=48,
    unified_modulation=0,
)


def create_calib(store: Store, **overrides: object):
    arguments = dict(
        producer="taq-calib 0.1.0",
        config=calib_writer.CONFIG,
        inputs={},
        sizes=calib_writer.SIZES,
        constants=calib_writer.constants(),
    )
    return store.create_group("calib", **{**arguments, **overrides})


def write_calib(store: Store, images: range = range(calib_writer.IMAGES), commit: bool = True):
    group = create_calib(store)
    for image in images:
        group.write_unit(image, calib_writer.unit(image))
    if commit:
        group.mark_complete()
    return group


def create_blockio(store: Store, calib_identity: str):
    return store.create_group(
        "blockio",
        "mm0",
        producer="taq-adaround 0.1.0",
        config={"samples": 2},
        inputs={"calib": calib_identity},
        sizes=BLOCKIO_SIZES,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.create(tmp_path / "run", calib_writer.MODEL)


def test_allocation_fills_floats_with_nan_and_marks_nothing_done(store: Store) -> None:
    group = create_calib(store)
    assert group.meta.complete is False
    assert group.done_units().size == 0
    assert group.read("latents").shape == (0, calib_writer.STEPS, 4, 4, 1)
    raw = {
        name: zarr.open_array(store.path / "calib" / name)
        for name in ("latents", "cond_pooled", "seeds", "done")
    }  # what a reader bypassing the done mask would see
    assert np.isnan(raw["latents"][...]).all()
    assert np.isnan(raw["cond_pooled"][...]).all()
    assert (raw["seeds"][...] == 0).all() and not raw["done"][...].any()
    np.testing.assert_array_equal(group.read("sigmas"), calib_writer.constants()["sigmas"])


def test_units_read_back_only_when_done(store: Store) -> None:
    group = write_calib(store, images=range(3, 5), commit=False)
    assert group.done_units().tolist() == [3, 4]
    assert group.read("prompts").tolist() == ["digit 3", "digit 4"]
    assert group.read("seeds", units=[4]).tolist() == [1004]
    unit = group.read_unit(3)
    np.testing.assert_array_equal(unit["latents"], calib_writer.unit(3)["latents"])
    with pytest.raises(UnitNotDoneError, match=r"images \[0, 2\] are not written"):
        group.read("latents", units=[0, 2, 3])
    with pytest.raises(UnitNotDoneError):
        group.read_unit(1)


def test_write_unit_takes_exactly_one_whole_unit(store: Store) -> None:
    group = create_calib(store)
    unit = calib_writer.unit(0)
    with pytest.raises(ValueError, match="a unit is exactly"):
        group.write_unit(0, {k: v for k, v in unit.items() if k != "seeds"})
    with pytest.raises(ValueError, match="shape"):
        group.write_unit(0, {**unit, "latents": unit["latents"][:2]})
    with pytest.raises(IndexError):
        group.write_unit(calib_writer.IMAGES, unit)
    assert group.done_units().size == 0


def test_commit_needs_every_unit(store: Store) -> None:
    group = write_calib(store, images=range(2), commit=False)
    with pytest.raises(GroupIncompleteError, match="cannot commit `calib`: 2/6 images"):
        group.mark_complete()
    for image in range(2, calib_writer.IMAGES):
        group.write_unit(image, calib_writer.unit(image))
    group.mark_complete()
    assert store.require_group("calib").meta.complete


def test_same_config_resumes_the_existing_group(store: Store) -> None:
    write_calib(store, images=range(2), commit=False)
    reopened = Store.open(store.path, calib_writer.MODEL, mode="r+")
    assert create_calib(reopened).done_units().tolist() == [0, 1]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"config": {**calib_writer.CONFIG, "cfg": 5.0}}, "was made with cfg=3.0 (now 5.0)"),
        ({"inputs": {"checkpoint": "ffff"}}, "was made from inputs"),
        ({"sizes": {**calib_writer.SIZES, "H": 8}}, "has sizes"),
    ],
    ids=["config", "inputs", "sizes"],
)
def test_another_config_refuses_unless_overwrite(
    store: Store, overrides: dict, reason: str
) -> None:
    write_calib(store, images=range(2), commit=False)
    with pytest.raises(GroupConflictError) as refusal:
        create_calib(store, **overrides)
    message = str(refusal.value)
    assert message.startswith(f"`calib` in {store.path} {reason}")
    assert message.endswith(f"rerun `taq-calib --store {store.path} --overwrite` to replace it")


def test_overwrite_replaces_the_group(store: Store) -> None:
    write_calib(store, images=range(2), commit=False)
    config = {**calib_writer.CONFIG, "cfg": 5.0}
    replaced = create_calib(store, config=config, overwrite=True)
    assert replaced.done_units().size == 0
    assert Store.open(store.path).groups()[0].meta.config == config


def test_require_refuses_a_missing_group(store: Store) -> None:
    with pytest.raises(GroupMissingError) as refusal:
        store.require_group("calib")
    assert str(refusal.value) == (
        f"no `calib` group in {store.path}: run `taq-calib --store {store.path}` first"
    )


def test_require_refuses_an_incomplete_group(store: Store) -> None:
    write_calib(store, images=range(4), commit=False)
    with pytest.raises(GroupIncompleteError) as refusal:
        store.require_group("calib")
    assert str(refusal.value) == (
        f"`calib` in {store.path} is incomplete (4/6 images): "
        f"rerun `taq-calib --store {store.path} --resume`"
    )


def test_require_refuses_a_corrupt_group(store: Store) -> None:
    write_calib(store)
    (store.path / "calib" / "zarr.json").write_text("{")
    with pytest.raises(CorruptStoreError, match=r"`calib` in .* is corrupt .*--overwrite`"):
        Store.open(store.path).require_group("calib")


def test_read_arrays_reads_what_read_reads(store: Store) -> None:
    group = write_calib(store)
    arrays = group.read_arrays(["latents", "timesteps", "negative_tokens"], [2])
    np.testing.assert_array_equal(arrays["latents"], group.read("latents", [2]))
    np.testing.assert_array_equal(arrays["timesteps"], calib_writer.constants()["timesteps"])
    assert list(arrays) == ["latents", "timesteps", "negative_tokens"]


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((calib_writer.STEPS - 1,), "timesteps has 4 steps but latents has 5"),
        ((calib_writer.STEPS, 1), r"timesteps has 2 dims, the schema's has 1 \(step\)"),
    ],
    ids=["one-step-short", "another-rank"],
)
def test_read_arrays_refuses_arrays_that_disagree(store: Store, shape, message) -> None:
    """Each array's shape is its own metadata: a store edited by hand can make two arrays
    disagree on a dim, which a decoder indexing one by the other would not notice."""
    write_calib(store)
    zarr.open_group(store.path / "calib", mode="r+").create_array(
        "timesteps", shape=shape, dtype="float32", fill_value=0.0, overwrite=True
    )
    group = Store.open(store.path).require_group("calib")
    with pytest.raises(CorruptGroupError, match=rf"`calib` in .*: {message}: rerun `taq-calib"):
        group.read_arrays(["latents", "timesteps"])


def test_a_named_group_with_truncated_metadata_is_named_with_its_command(store: Store) -> None:
    """Listing the groups (`taq doctor`) names the broken one and the command that rewrites
    it, not the JSON parser's complaint alone."""
    write_calib(store)
    create_blockio(store, store.require_group("calib").identity())
    metadata = store.path / "blockio" / "mm0" / "zarr.json"
    metadata.write_text(metadata.read_text()[:100])
    with pytest.raises(
        CorruptStoreError,
        match=r"^`blockio/mm0` in .* is corrupt \(.*\): rerun `taq-adaround cache --store .* "
        r"--overwrite`$",
    ):
        describe(store.path)


WEIGHT_SIZES = {
    "block": 1,
    "stream": 2,
    "role": len(WEIGHT_ROLES),
    **{f"{role}_{dim}": 2 for role in WEIGHT_ROLES for dim in ("out", "words", "groups")},
}


def write_weights(store: Store, nan_at_present: bool) -> None:
    """One block of `weights/adaround`: the text stream lacks its first role (NaN padding
    there); with `nan_at_present`, a NaN in a scale of a layer that is present."""
    group = store.create_group(
        "weights",
        "adaround",
        producer="taq-adaround 0.1.0",
        config={"bits_w": 4},
        inputs={},
        sizes=WEIGHT_SIZES,
        constants={"stream_names": ["image", "text"], "role_names": list(WEIGHT_ROLES)},
    )
    present = np.ones((2, len(WEIGHT_ROLES)), bool)
    present[1, 0] = False
    unit = {"block_names": "mm0", "present": present, "mse": 1.0, "rtn_mse": 1.0, "seconds": 1.0}
    for r, role in enumerate(WEIGHT_ROLES):
        unit[f"{role}_weight"] = np.zeros((2, 2, 2), np.uint32)
        for part in ("scales", "biases"):
            values = np.ones((2, 2, 2), np.float32)
            values[~present[:, r]] = np.nan
            unit[f"{role}_{part}"] = values
        unit[f"{role}_act_scale"] = np.where(present[:, r], 1.0, np.nan).astype(np.float32)
    if nan_at_present:
        unit[f"{WEIGHT_ROLES[1]}_scales"][0, 1, 0] = np.nan
    group.write_unit(0, unit)
    group.mark_complete()


def test_weights_padding_may_be_nan_but_a_present_layer_may_not(store: Store) -> None:
    write_weights(store, nan_at_present=False)
    group = store.require_group("weights", "adaround", verify=True)
    assert np.isnan(group.read(f"{WEIGHT_ROLES[0]}_scales")[0, 1]).all()  # absent: padding


def test_a_nan_in_a_present_layers_scales_is_refused_and_verified(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "run", calib_writer.MODEL)
    write_weights(store, nan_at_present=True)
    group = store.require_group("weights", "adaround")
    name = f"{WEIGHT_ROLES[1]}_scales"
    message = (
        rf"^`weights/adaround` in .*: {name} of block 0 holds NaN or inf: rerun "
        r"`taq-adaround optimize --store .* --overwrite`$"
    )
    with pytest.raises(CorruptGroupError, match=message):
        group.read(name)
    assert [p for p in verify_group(group) if name in p] and len(verify_group(group)) == 1


def test_overwrite_replaces_a_group_left_corrupt_by_a_killed_writer(store: Store) -> None:
    """Killed between a group's metadata and its arrays: the refusal names --overwrite, and
    --overwrite must then work without reading the broken group."""
    write_calib(store)
    shutil.rmtree(store.path / "calib" / "seeds")
    with pytest.raises(CorruptStoreError, match=r"--overwrite`"):
        Store.open(store.path, mode="r+").require_group("calib")
    reopened = Store.open(store.path, mode="r+")
    group = create_calib(reopened, overwrite=True)
    for image in range(calib_writer.IMAGES):
        group.write_unit(image, calib_writer.unit(image))
    group.mark_complete()
    assert Store.open(store.path).require_group("calib").read("seeds").shape[0] > 0


def test_a_group_of_another_format_version_is_stale_not_corrupt(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_calib(store)
    newer = dataclasses.replace(
        GROUPS["calib"],
        version=2,
        arrays={**GROUPS["calib"].arrays, "extra": ArraySpec("float32", ("image",), (1,), "new")},
    )
    monkeypatch.setitem(GROUPS, "calib", newer)
    with pytest.raises(StaleGroupError) as refusal:
        Store.open(store.path).require_group("calib")
    assert str(refusal.value) == (
        f"`calib` in {store.path} has calib format version 1, this taq writes 2: "
        f"rerun `taq-calib --store {store.path} --overwrite`"
    )


def test_require_refuses_another_config(store: Store) -> None:
    calib = write_calib(store)
    assert store.require_group("calib", config_hash=calib.meta.config_hash) is not None
    with pytest.raises(StaleGroupError) as refusal:
        store.require_group("calib", config_hash="0000")
    assert str(refusal.value) == (
        f"`calib` in {store.path} was made with config {calib.meta.config_hash}, you asked for "
        f"0000: rerun `taq-calib --store {store.path} --overwrite`"
    )


def test_require_refuses_a_group_made_from_an_older_input(store: Store) -> None:
    old_identity = write_calib(store).identity()
    blockio = create_blockio(store, old_identity)
    for sample in range(2):
        specs = {n: blockio.spec.arrays[n] for n in blockio.spec.unit_arrays()}
        blockio.write_unit(
            sample, {n: np.zeros(a.shape(BLOCKIO_SIZES)[1:]) for n, a in specs.items()}
        )
    blockio.mark_complete()
    assert store.require_group("blockio", "mm0").meta.inputs == {"calib": old_identity}

    new = write_calib_with(store, cfg=5.0)
    with pytest.raises(StaleGroupError) as refusal:
        store.require_group("blockio", "mm0")
    assert str(refusal.value) == (
        f"`blockio/mm0` in {store.path} was made from calib {old_identity}, the store's calib "
        f"is now {new.identity()}: rerun `taq-adaround cache --store {store.path} --overwrite`"
    )


def test_a_group_written_before_an_added_array_reads_it_as_empty(store: Store) -> None:
    """Schema 1.2 added `blockio/*/unified_modulation`; a 1.1 group lacks it and stays readable
    (and resumable) without a rewrite."""
    assert GROUPS["blockio"].arrays["unified_modulation"].since == "1.2"
    identity = write_calib(store).identity()
    create_blockio(store, identity)
    shutil.rmtree(store.path / "blockio" / "mm0" / "unified_modulation")  # as 1.1 wrote it
    store.close()
    store = Store.open(store.path, mode="r+")
    blockio = create_blockio(store, identity)  # resume the old group
    unit = {n: np.zeros(a.shape(BLOCKIO_SIZES)[1:]) for n, a in blockio.spec.arrays.items()}
    with pytest.raises(ValueError, match="before schema 1.2 added unified_modulation"):
        blockio.write_unit(0, {**unit, "unified_modulation": np.zeros(6)})
    for sample in range(2):
        blockio.write_unit(sample, {**unit, "image_index": sample})
    blockio.mark_complete()
    old = store.require_group("blockio", "mm0", verify=True)
    assert old.sizes["unified_modulation"] == 0 and old.sizes["image_modulation"] == 48
    assert old.read("unified_modulation").shape == (2, 0)
    assert old.read("unified_modulation", [1]).shape == (1, 0)
    assert old.read("image_index").tolist() == [0, 1]
    store.close()


def write_calib_with(store: Store, **config: object):
    group = create_calib(store, config={**calib_writer.CONFIG, **config}, overwrite=True)
    for image in range(calib_writer.IMAGES):
        group.write_unit(image, calib_writer.unit(image))
    group.mark_complete()
    return group


def test_identity_follows_config_and_inputs(store: Store) -> None:
    first = write_calib(store).identity()
    assert Store.open(store.path).require_group("calib").identity() == first
    assert write_calib_with(store, cfg=5.0).identity() != first
    with pytest.raises(GroupIncompleteError):
        create_calib(store, overwrite=True).identity()


def test_describe_reports_each_group(store: Store) -> None:
    create_blockio(store, write_calib(store).identity())
    status = describe(store.path)
    assert [(g.path, g.complete, g.done, g.total, g.producer) for g in status.groups] == [
        ("calib", True, 6, 6, "taq-calib 0.1.0"),
        ("blockio/mm0", False, 0, 2, "taq-adaround 0.1.0"),
    ]
    assert "blockio/mm0: partial 0/2 samples, taq-adaround 0.1.0" in str(status)


def test_arrays_on_disk_have_dimension_names_chunks_and_fill(store: Store) -> None:
    create_calib(store)
    sizes = calib_writer.SIZES
    for name, spec in GROUPS["calib"].all_arrays().items():
        metadata = json.loads((store.path / "calib" / name / "zarr.json").read_text())
        assert metadata["dimension_names"] == list(spec.dims), name
        assert metadata["shape"] == [sizes[d] for d in spec.dims], name
        assert metadata["attributes"] == {"taq": {"dtype": spec.dtype, "every_chunk": True}}
        zstd = [c for c in metadata["codecs"] if c["name"] == "zstd"]
        assert zstd and zstd[0]["configuration"]["checksum"] is True, name
    latents = json.loads((store.path / "calib" / "latents" / "zarr.json").read_text())
    assert latents["chunk_grid"]["configuration"]["chunk_shape"] == [1, sizes["step"], 4, 4, 1]
    assert (latents["data_type"], latents["fill_value"]) == ("float32", "NaN")
    done = json.loads((store.path / "calib" / "done" / "zarr.json").read_text())
    assert done["chunk_grid"]["configuration"]["chunk_shape"] == [1]
    group = json.loads((store.path / "calib" / "zarr.json").read_text())["attributes"]["taq"]
    assert group == {
        "type": "taq.calib",
        "version": 1,
        "producer": "taq-calib 0.1.0",
        "config": calib_writer.CONFIG,
        "config_hash": group["config_hash"],
        "inputs": {},
        "complete": False,
    }


PROBE = GroupSpec(
    kind="probe",
    version=1,
    command="taq-probe",
    doc="every dtype",
    unit="item",
    arrays={
        name: ArraySpec(name, ("item", "x"), (1, None), name)
        if name != "str"
        else ArraySpec("str", ("item",), (1,), name)
        for name in ("float32", "float16", "bfloat16", "int32", "int64", "bool", "str")
    },
)


def test_every_dtype_round_trips(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(GROUPS, "probe", PROBE)
    group = store.create_group(
        "probe", producer="test", config={}, inputs={}, sizes={"item": 2, "x": 3}
    )
    fill = {name: zarr.open_array(store.path / "probe" / name)[0] for name in PROBE.arrays}
    assert np.isnan(fill["float16"]).all() and np.isnan(fill["float32"]).all()
    assert (fill["bfloat16"] == 0x7FC0).all() and fill["str"] == ""

    rng = np.random.default_rng(0)
    values = {
        "float32": rng.standard_normal(3, dtype=np.float32),
        "float16": rng.standard_normal(3).astype(np.float16),
        "bfloat16": to_bfloat16_bits(rng.standard_normal(3)),
        "int32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
        "int64": np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64),
        "bool": np.array([True, False, True]),
        "str": "digit 7 — ünïcode",
    }
    group.write_unit(1, values)
    back = (
        Store.open(store.path)
        .create_group("probe", producer="test", config={}, inputs={}, sizes={"item": 2, "x": 3})
        .read_unit(1)
    )
    for name in ("float32", "float16", "int32", "int64", "bool"):
        assert back[name].dtype == values[name].dtype
        assert back[name].tobytes() == values[name].tobytes(), name
    assert back["bfloat16"].dtype == np.float32
    assert (to_bfloat16_bits(back["bfloat16"]) == values["bfloat16"]).all()
    assert back["str"] == values["str"]
    bits = json.loads((store.path / "probe" / "bfloat16" / "zarr.json").read_text())
    assert (bits["data_type"], bits["attributes"]["taq"]["dtype"]) == ("uint16", "bfloat16")


def test_bfloat16_bits_round_to_nearest_even() -> None:
    values = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5, np.inf, np.nan], dtype=np.float32)
    bits = to_bfloat16_bits(values)
    assert bits.tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80, 0x7FC0]
    assert from_bfloat16_bits(bits[:5]).tolist() == [1.0, 1.0, 1.015625, -2.5, np.inf]
