"""Opening and creating stores: every refusal names its fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zarr

from taq_io import (
    CorruptStoreError,
    ModelIdentity,
    ModelMismatchError,
    NotATaqStoreError,
    SchemaVersionError,
    Store,
    StoreExistsError,
    StoreNotFoundError,
    StoreNotWritableError,
    describe,
)

MODEL = ModelIdentity("tiny-digits", "aaaa")


def set_root_record(path: Path, **changes: object) -> None:
    metadata_file = path / "zarr.json"
    metadata = json.loads(metadata_file.read_text())
    metadata["attributes"]["taq"].update(changes)
    metadata_file.write_text(json.dumps(metadata))


def test_create_writes_the_root_record(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    metadata = json.loads((tmp_path / "run" / "zarr.json").read_text())
    assert metadata["zarr_format"] == 3
    assert metadata["attributes"] == {
        "taq": {
            "schema": "taq",
            "schema_version": "1.3",
            "model": {"preset": "tiny-digits", "config_hash": "aaaa"},
            "created_by": "taq-io 0.1.0",
        }
    }
    store = Store.open(tmp_path / "run", MODEL)
    assert (store.model, store.schema_version) == (MODEL, "1.3")


def test_open_missing_store_names_the_first_stage(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError, match=r"no taq store at .*run `taq-calib --store "):
        Store.open(tmp_path / "nothing")


@pytest.mark.parametrize("content", ["directory", "file", "plain-zarr"])
def test_open_refuses_what_is_not_a_taq_store(tmp_path: Path, content: str) -> None:
    path = tmp_path / "other"
    if content == "directory":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    elif content == "file":
        path.write_text("mine")
    else:
        zarr.open_group(path, mode="w", zarr_format=3)
    with pytest.raises(NotATaqStoreError, match="not a taq store: pass another --store path"):
        Store.open(path)


def test_open_refuses_corrupt_metadata(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    (tmp_path / "run" / "zarr.json").write_text('{"attributes": {"taq": ')
    with pytest.raises(CorruptStoreError, match=r"zarr.json is corrupt .*re-run from `taq-calib`"):
        Store.open(tmp_path / "run")


def test_open_refuses_a_malformed_record(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    set_root_record(tmp_path / "run", model={"preset": "tiny-digits"})
    with pytest.raises(CorruptStoreError, match="malformed `taq` attribute"):
        Store.open(tmp_path / "run")


def test_open_refuses_another_schema_major(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    set_root_record(tmp_path / "run", schema_version="2.3")
    with pytest.raises(SchemaVersionError) as refusal:
        Store.open(tmp_path / "run")
    assert str(refusal.value) == (
        f"{tmp_path / 'run'} was written by schema taq 2.3, this taq reads 1.x: "
        "upgrade taq, or re-run into a new --store"
    )


def test_open_reads_a_newer_minor(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    set_root_record(tmp_path / "run", schema_version="1.7")
    assert Store.open(tmp_path / "run").schema_version == "1.7"


def test_open_refuses_another_model(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    with pytest.raises(ModelMismatchError) as refusal:
        Store.open(tmp_path / "run", ModelIdentity("sd3-medium-random", "bbbb"))
    assert str(refusal.value) == (
        f"{tmp_path / 'run'} is for model tiny-digits (hash aaaa), "
        "you asked for sd3-medium-random (hash bbbb): use another --store"
    )


def test_create_refuses_an_unwritable_path(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreNotWritableError, match="cannot create a store at .*writable --store"):
        Store.create(tmp_path / "a-file" / "run", MODEL)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to read-only directories")
def test_open_for_writing_refuses_a_read_only_store(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    (tmp_path / "run").chmod(0o500)
    try:
        with pytest.raises(StoreNotWritableError, match="is not writable"):
            Store.open(tmp_path / "run", mode="r+")
    finally:
        (tmp_path / "run").chmod(0o700)


def test_create_refuses_an_existing_store_unless_overwrite(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    with pytest.raises(StoreExistsError, match="already a taq store: .*--overwrite"):
        Store.create(tmp_path / "run", ModelIdentity("sd3-medium-random", "bbbb"))
    replaced = Store.create(tmp_path / "run", ModelIdentity("sd3-medium-random", "bbbb"), True)
    assert replaced.model.preset == "sd3-medium-random"


def test_create_never_removes_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(NotATaqStoreError):
        Store.create(tmp_path / "mine", MODEL, overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_open_or_create(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert Store.open_or_create(tmp_path / "empty", MODEL).model == MODEL
    assert Store.open_or_create(tmp_path / "empty", MODEL).model == MODEL
    with pytest.raises(ModelMismatchError):
        Store.open_or_create(tmp_path / "empty", ModelIdentity("tiny-digits", "cccc"))


def test_describe_an_empty_store(tmp_path: Path) -> None:
    Store.create(tmp_path / "run", MODEL)
    status = describe(tmp_path / "run")
    assert status.groups == []
    assert "no groups yet" in str(status)
