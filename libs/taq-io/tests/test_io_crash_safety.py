"""A writer SIGKILLed at any point of the commit protocol resumes to a bit-identical store."""

from __future__ import annotations

import filecmp
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taq_io import GroupMissingError, Store, UnitNotDoneError

WRITER = Path(__file__).with_name("calib_writer.py")
_spec = importlib.util.spec_from_file_location("calib_writer", WRITER)
calib_writer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(calib_writer)


def run_writer(store: Path, *stall: str) -> subprocess.CompletedProcess | None:
    """Run the writer; with a stall point, wait until it stalls there and SIGKILL it."""
    command = [sys.executable, str(WRITER), str(store), *stall]
    if not stall:
        return subprocess.run(command, check=True, capture_output=True, timeout=1800)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "stalled"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=1800)  # a hang guard, not a time assertion
    assert process.returncode == -signal.SIGKILL
    return None


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("reference") / "run.zarr"
    run_writer(store)
    return store


@pytest.mark.parametrize(
    ("array", "index", "done_after_kill"),
    [
        ("final_latents", "3", [0, 1, 2]),  # mid-unit: latents of image 3 already on disk
        ("done", "3", [0, 1, 2]),  # every array of image 3 written, its done flag not
        ("sigmas", "-", None),  # while allocating: the group was never created
    ],
    ids=["mid-unit", "before-done-flag", "during-allocation"],
)
def test_killed_writer_resumes_bit_identical(
    tmp_path: Path, uninterrupted: Path, array: str, index: str, done_after_kill: list[int] | None
) -> None:
    store_path = tmp_path / "run.zarr"
    run_writer(store_path, array, index)

    store = Store.open(store_path, calib_writer.MODEL)
    if done_after_kill is None:
        with pytest.raises(GroupMissingError):
            store.require_group("calib")
    else:
        group = store.create_group(
            "calib",
            producer="taq-calib 0.1.0",
            config=calib_writer.CONFIG,
            inputs={},
            sizes=calib_writer.SIZES,
            constants=calib_writer.constants(),
        )
        assert group.done_units().tolist() == done_after_kill
        for name in group.spec.unit_arrays():
            values = group.read(name)
            assert len(values) == len(done_after_kill)
            if values.dtype.kind == "f":
                assert not np.isnan(values).any(), name
        with pytest.raises(UnitNotDoneError):
            group.read_unit(3)
        assert not group.meta.complete

    run_writer(store_path)  # the rerun with --resume

    assert tree(store_path) == tree(uninterrupted)
    mismatch = filecmp.cmpfiles(store_path, uninterrupted, tree(uninterrupted), shallow=False)[1:]
    assert mismatch == ([], [])
    calib = Store.open(store_path, calib_writer.MODEL).require_group("calib")
    assert calib.done_units().tolist() == list(range(calib_writer.IMAGES))
    for image in range(calib_writer.IMAGES):
        expected = calib_writer.unit(image)
        np.testing.assert_array_equal(calib.read_unit(image)["latents"], expected["latents"])
