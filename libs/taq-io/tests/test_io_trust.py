"""A store is untrusted input (a tarball, a shared mount): nothing it holds can make taq read,
write, truncate or delete a file outside it. Each test plants a real symlink (or a special
file) and checks the file outside is untouched and the refusal is one line naming it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taq_io import CorruptStoreError, ModelIdentity, Store, StoreError, StoreNotWritableError
from taq_io.lock import LOCK_FILE

MODEL = ModelIdentity("tiny-digits", "aaaa")
PRECIOUS = "someone else's file\n"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store holding a file the user can write."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "notes.txt").write_text(PRECIOUS)
    return folder


def _store(tmp_path: Path) -> Path:
    store = Store.create(tmp_path / "run.zarr", MODEL)
    store.close()
    return tmp_path / "run.zarr"


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_a_lock_linked_outside_is_refused_and_the_file_is_untouched(tmp_path, outside, mode):
    path = _store(tmp_path)
    (path / LOCK_FILE).unlink(missing_ok=True)
    (path / LOCK_FILE).symlink_to(outside / "notes.txt")
    with pytest.raises(StoreError, match=rf"holds a link leading out of the store: {LOCK_FILE}"):
        Store.open(path, mode=mode)
    assert (outside / "notes.txt").read_text() == PRECIOUS


def test_a_new_store_whose_lock_is_a_link_is_refused(tmp_path, outside):
    """A directory holding only a lock counts as empty (a create that died early): the lock
    is opened without following links, so the file it points to keeps its bytes."""
    path = tmp_path / "run.zarr"
    path.mkdir()
    (path / LOCK_FILE).symlink_to(outside / "notes.txt")
    with pytest.raises(StoreNotWritableError, match="is not a regular file"):
        Store.create(path, MODEL)
    assert (outside / "notes.txt").read_text() == PRECIOUS


def test_a_lock_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    path = _store(tmp_path)
    (path / LOCK_FILE).unlink(missing_ok=True)
    os.mkfifo(path / LOCK_FILE)
    with pytest.raises(StoreNotWritableError, match="is not a regular file"):
        Store.open(path, mode="r+")


@pytest.mark.parametrize("link", ["weights", "calib/latents", "calib/latents/c"])
def test_a_directory_linked_outside_is_refused_for_reading_and_writing(tmp_path, outside, link):
    """A group, an array or a chunk directory that is a link out of the store: zarr would
    follow it, and `--overwrite` would delete what it points to."""
    path = _store(tmp_path)
    (path / link).parent.mkdir(parents=True, exist_ok=True)
    (path / link).symlink_to(outside, target_is_directory=True)
    for mode in ("r", "r+"):
        with pytest.raises(StoreError, match=rf"leading out of the store: {link} -> {outside}"):
            Store.open(path, mode=mode)
        with pytest.raises(StoreError, match="leading out of the store"):
            Store.create(path, MODEL, overwrite=True)
    assert sorted(p.name for p in outside.iterdir()) == ["notes.txt"]
    assert (outside / "notes.txt").read_text() == PRECIOUS


def test_a_link_that_stays_inside_the_store_is_allowed(tmp_path):
    path = _store(tmp_path)
    (path / "spare").mkdir()
    (path / "alias").symlink_to(path / "spare", target_is_directory=True)
    Store.open(path, mode="r+").close()


def test_a_zarr_v2_root_is_refused(tmp_path):
    """A root metadata file saying `zarr_format: 2` is not read as an empty v3 store."""
    path = _store(tmp_path)
    metadata = path / "zarr.json"
    metadata.write_text(metadata.read_text().replace('"zarr_format": 3', '"zarr_format": 2'))
    with pytest.raises(CorruptStoreError, match=r"is not a zarr v3 group \(zarr_format 2"):
        Store.open(path)


@pytest.mark.parametrize("empty", ["", " "])
def test_an_empty_store_path_is_refused(tmp_path, monkeypatch, empty):
    """`--store ''` would make the current directory a store."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match="--store is empty"):
        Store.open_or_create(empty, MODEL)
    assert list(tmp_path.iterdir()) == []
