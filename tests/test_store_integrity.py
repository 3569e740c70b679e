"""Store integrity: one writer at a time; damaged chunks caught by the next consumer and by
`taq doctor --verify`; staleness followed through the whole chain of groups.

Every test damages its own copy of one finished minimal run (`store_copy`) and calls the real
CLI entry points (in-process where a refusal is expected: they fail fast)."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from taq_actstats.cli import main as actstats
from taq_adaround.cli import main as adaround
from taq_calib.cli import main as calib
from taq_infer.cli import main as infer
from taq_io.lock import LOCK_FILE
from taq_pipeline.cli import main as taq
from taq_pipeline.testing import ENV, MINIMAL
from taq_runtime.testing import HANG_GUARD_S

LATENTS_CHUNK = "calib/latents/c/1/0/0/0/0"  # image 1's only chunk


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("TAQ_NO_PROGRESS", "1")


def call(capsys, main, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def snapshot(store) -> dict:
    """Every file of the store but the lock file, with its bytes' hash."""
    return {
        str(p.relative_to(store)): hash(p.read_bytes())
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def damage(store, kind: str) -> None:
    chunk = store / LATENTS_CHUNK
    if kind == "deleted":
        chunk.unlink()
    elif kind == "nan":  # a valid, checksummed chunk holding NaN
        array = zarr.open_array(store / "calib" / "latents", mode="r+")
        values = array[1]
        values[2, 3, 3, 0] = np.nan
        array.with_config({"write_empty_chunks": True})[1] = values
    elif kind == "flipped":
        data = bytearray(chunk.read_bytes())
        for i in range(8):
            data[len(data) // 2 + i] ^= 0xFF
        chunk.write_bytes(bytes(data))
    else:
        chunk.write_bytes(np.random.default_rng(0).bytes(len(chunk.read_bytes())))


@pytest.mark.parametrize("kind", ["deleted", "nan", "flipped", "random"])
def test_damaged_chunk_is_caught_by_the_next_consumer_and_doctor(store_copy, capsys, kind):
    damage(store_copy, kind)
    before = snapshot(store_copy)
    for main, command in ((adaround, "cache"), (actstats, "collect")):
        code, _, err = call(capsys, main, command, "--store", store_copy, "--overwrite")
        line = one_line(err)
        assert code == 2
        assert "`calib`" in line and "latents" in line and "image 1" in line, line
        assert f"rerun `taq-calib --store {store_copy} --overwrite`" in line  # upstream
        assert snapshot(store_copy) == before  # the consumer's good groups are kept
    code, out, _ = call(capsys, taq, "doctor", "--store", store_copy, "--verify")
    bad = [line for line in out.splitlines() if "BAD:" in line]
    assert code == 1 and len(bad) == 1 and "latents of image 1" in bad[0], out
    assert "verify: 1 bad chunk(s)" in out


def test_flipped_weights_chunk_is_refused_by_infer(store_copy, capsys, tmp_path):
    chunk = next((store_copy / "weights" / "adaround" / "fc1_weight").rglob("c/0/*/*/*"))
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    args = ("--store", store_copy, "--prompt", "digit 3", "--output", tmp_path / "x.png")
    code, _, err = call(capsys, infer, *args)
    line = one_line(err)
    assert code == 2 and "`weights/adaround`" in line and "block 0" in line
    assert "taq-adaround optimize" in line and not (tmp_path / "x.png").exists()


def test_recalibrating_makes_everything_downstream_stale(store_copy, capsys, tmp_path):
    args = ("--store", store_copy, "--num-images", "2", "--num-steps", "6", "--overwrite")
    assert call(capsys, calib, *args)[0] == 0
    code, out, _ = call(capsys, taq, "doctor", "--store", store_copy)
    states = {}
    for line in out.splitlines():
        path, _, rest = line.strip().partition(": ")
        states[path] = rest.split(" ")[0].rstrip(",")
    for path in ("blockio/mm0", "actstats", "quant_config", "weights/adaround", "weights/rtn"):
        assert states[path] == "STALE", (path, out)
    assert states["calib"] == "complete"
    png = tmp_path / "x.png"
    args = ("--store", store_copy, "--prompt", "digit 3", "--output", png, "--steps", "2")
    code, _, err = call(capsys, infer, *args)
    line = one_line(err)
    assert code == 2 and "weights/adaround" in line and "stale" in line
    assert "--allow-stale" in line and not png.exists()
    code, out, err = call(capsys, infer, *args, "--allow-stale", "--act", "none")
    assert code == 0 and png.exists(), err


def _wait_for_holder(store, proc) -> dict:
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and proc.poll() is None:
        try:
            record = json.loads((store / LOCK_FILE).read_text() or "{}")
        except (OSError, ValueError):
            record = {}
        if record.get("pid") == proc.pid:
            return record
        time.sleep(0.02)
    raise AssertionError("the first writer never took the lock")


def _calib(store, *extra):
    args = ("--store", store, "--num-images", "2", "--num-steps", "40", *extra)
    return [sys.executable, "-m", "taq_calib", *map(str, args)]


def test_second_writer_is_refused_and_the_store_stays_intact(store_copy, capsys):
    first = subprocess.Popen(
        _calib(store_copy, "--overwrite"), env=ENV, stderr=subprocess.PIPE, text=True
    )
    holder = _wait_for_holder(store_copy, first)
    code, _, err = call(capsys, adaround, "cache", "--store", store_copy, "--overwrite")
    line = one_line(err)
    assert code == 2 and f"pid {holder['pid']}" in line and "taq_calib" in line, line
    assert first.wait(timeout=HANG_GUARD_S) == 0, first.stderr.read()
    code, out, _ = call(capsys, taq, "doctor", "--store", store_copy, "--verify")
    assert code == 0 and "verify: every chunk reads" in out
    assert "calib: complete 2/2 images" in out


def test_two_taq_runs_on_one_store_one_is_refused(tmp_path, capsys):
    """A second `taq run` on a store a first one is writing is refused in one line naming
    the first, before it writes anything."""
    store = tmp_path / "run.zarr"
    cmd = [sys.executable, "-m", "taq_pipeline", "run", "--store", str(store), *MINIMAL]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        holder = _wait_for_holder(store, first)
        code, out, err = call(capsys, taq, "run", "--store", store, *MINIMAL)
        line = one_line(err)
        assert code == 2 and f"pid {holder['pid']}" in line and "taq_pipeline run" in line, line
        assert "==" not in out  # no stage started
        assert json.loads((store / LOCK_FILE).read_text())["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


def test_lock_of_a_killed_writer_is_taken_over(store_copy, capsys):
    first = subprocess.Popen(_calib(store_copy, "--overwrite"), env=ENV)
    _wait_for_holder(store_copy, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads((store_copy / LOCK_FILE).read_text())["pid"] == first.pid  # stale record
    # --overwrite: the kill may have come before or after the new calib group was created
    code, _, err = call(capsys, calib, *_calib(store_copy, "--overwrite")[3:])
    assert code == 0, err
    code, out, _ = call(capsys, taq, "doctor", "--store", store_copy, "--verify")
    assert code == 0 and "calib: complete 2/2 images" in out


@pytest.mark.parametrize(
    ("main", "command", "array"),
    [
        (calib, ["--num-images", "2", "--num-steps", "6"], "calib/latents"),
        (actstats, ["collect", "--num-images", "1"], "actstats/absmax"),
    ],
)
def test_overwrite_replaces_a_group_a_killed_writer_left_half_made(
    store_copy, capsys, main, command, array
):
    """A writer killed while creating its group leaves the group's metadata without all its
    arrays; --overwrite, the fix the refusal names, must replace it without reading it."""
    shutil.rmtree(store_copy / array)
    code, _, err = call(capsys, main, *command, "--store", store_copy)
    assert code == 2 and "is corrupt" in one_line(err) and "--overwrite" in err
    code, _, err = call(capsys, main, *command, "--store", store_copy, "--overwrite")
    assert code == 0, err
    assert (store_copy / array / "zarr.json").exists()
