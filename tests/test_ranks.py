"""Every sharded stage under `mlx.launch` (2 ranks, ring backend over loopback) writes what
one process writes, a rank killed mid-optimize resumes to the same weights, and ranks that
disagree are refused on every rank. Each launch costs two process start-ups: few launches."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from taq_actstats.cli import main as actstats
from taq_adaround.cli import main as adaround
from taq_calib.cli import main as calib
from taq_runtime.ranks import local_launch
from taq_runtime.testing import HANG_GUARD_S

COMMANDS = {"calib": calib, "adaround": adaround, "actstats": actstats}
OPTIMIZE = ["optimize", "--iters", "10", "--batch-size", "4"]
CHAIN = [  # 3 images: rank 0 gets 2, rank 1 gets 1
    ("calib", ["--model", "tiny-digits", "--num-images", "3", "--num-steps", "4"]),
    ("adaround", ["cache", "--stride", "2"]),
    ("adaround", OPTIMIZE),
    ("actstats", ["collect"]),
    ("actstats", ["analyze"]),
]
DRIVER = """
import json, sys
from taq_runtime.blas import load_optimised_blas
load_optimised_blas()
from taq_actstats.cli import main as actstats
from taq_adaround.cli import main as adaround
from taq_calib.cli import main as calib
commands = {"calib": calib, "adaround": adaround, "actstats": actstats}
for name, args in json.loads(sys.argv[2]):
    code = commands[name]([*args, "--store", sys.argv[1]])
    if code:
        sys.exit(code)
"""
pytestmark = [
    pytest.mark.ranks,
    pytest.mark.filterwarnings("ignore:Object at taq-writer.lock"),  # the lock file: not zarr
]
ENV = {**os.environ, "TAQ_NO_PROGRESS": "1"}
TIMINGS = ("seconds",)  # wall times differ between runs: every other array must not


def run_chain(store: Path, steps) -> None:
    for name, args in steps:
        code = COMMANDS[name]([*args, "--store", str(store)])
        assert code == 0, (name, args)


def launch(*command: object, **kwargs) -> subprocess.CompletedProcess:
    argv = local_launch(2, [str(c) for c in command])
    return subprocess.run(
        argv, capture_output=True, text=True, env=ENV, timeout=HANG_GUARD_S, **kwargs
    )


def console(name: str) -> Path:
    return Path(sys.executable).parent / name


def contents(store: Path, under: str = "") -> tuple[dict, dict]:
    """Every array (but wall times) and every group's `taq` record below `under`."""
    root = zarr.open_group(store, mode="r")
    base = root[under] if under else root
    arrays, records = {}, {}
    for path, member in base.members(max_depth=None):
        if isinstance(member, zarr.Array) and path.rsplit("/", 1)[-1] not in TIMINGS:
            arrays[path] = member[...]
        elif isinstance(member, zarr.Group) and "taq" in member.attrs:
            records[path] = member.attrs["taq"]
    return arrays, records


def assert_same(got: Path, want: Path, under: str = "") -> None:
    got_arrays, got_records = contents(got, under)
    want_arrays, want_records = contents(want, under)
    assert got_records == want_records
    assert sorted(got_arrays) == sorted(want_arrays)
    for path, value in want_arrays.items():
        floats = value.dtype.kind in "fc"
        assert np.array_equal(got_arrays[path], value, equal_nan=floats), path


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory) -> Path:
    """The chain run by one process (in this one): the reference."""
    store = tmp_path_factory.mktemp("one-rank") / "run.zarr"
    run_chain(store, CHAIN)
    return store


def test_two_ranks_write_what_one_rank_writes(one_rank, tmp_path):
    store = tmp_path / "run.zarr"
    driver = tmp_path / "chain.py"
    driver.write_text(DRIVER)
    out = launch(sys.executable, driver, store, json.dumps(CHAIN))
    assert "exited with code" not in out.stderr and "killed" not in out.stderr, out.stderr
    assert "rank 0/2: calib: wrote 2 image(s)" in out.stdout, out.stdout
    assert "rank 1/2: calib: wrote 1 image(s)" in out.stdout, out.stdout
    # calib, blockio, weights, actstats and quant_config, bit for bit
    assert_same(store, one_rank)


def _rank_pid(store: Path, rank: int) -> int | None:
    """The pid of rank `rank` of the launch writing `store` (its environment says its rank)."""
    for entry in Path("/proc").iterdir():
        try:
            if str(store) not in (entry / "cmdline").read_text():
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"MLX_RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def test_rank_killed_mid_optimize_resumes_to_the_same_weights(one_rank, tmp_path):
    store = tmp_path / "run.zarr"
    shutil.copytree(one_rank, store)
    for group in ("weights", "quant_config"):
        shutil.rmtree(store / group)
    command = local_launch(2, [str(console("taq-adaround")), *OPTIMIZE, "--store", str(store)])
    launcher = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    done_file = store / "weights" / "adaround"
    deadline = time.time() + HANG_GUARD_S
    done = np.zeros(4, bool)
    while time.time() < deadline and launcher.poll() is None and not done.any():
        time.sleep(0.05)
        if (done_file / "done" / "zarr.json").exists():
            done = zarr.open_array(done_file / "done", mode="r")[...]
    pid = _rank_pid(store, 1)
    assert pid is not None and launcher.poll() is None, "the launch ended before the kill"
    os.kill(pid, signal.SIGKILL)
    launcher.wait(timeout=HANG_GUARD_S)  # mlx.launch stops the other rank
    done = zarr.open_array(done_file / "done", mode="r")[...]
    assert done.any() and not done.all(), done
    resumed = launch(
        console("taq-adaround"), OPTIMIZE[0], "--store", store, *OPTIMIZE[1:], "--resume"
    )
    assert "exited with code" not in resumed.stderr, resumed.stderr
    redone = set(re.findall(r"rank \d/2: (mm\d) ", resumed.stdout))
    assert redone == {f"mm{i}" for i in np.flatnonzero(~done)}, resumed.stdout
    assert_same(store, one_rank, "weights")


def test_ranks_with_other_flags_are_refused_on_every_rank(tmp_path):
    store = tmp_path / "run.zarr"
    script = 'exec "$0" --store "$1" --model tiny-digits --num-images 1 --seed "$MLX_RANK"'
    out = launch("sh", "-c", script, console("taq-calib"), store)
    errors = [line for line in out.stdout.splitlines() + out.stderr.splitlines() if "error" in line]
    for rank in (0, 1):
        line = next((e for e in errors if f"rank {rank} on" in e), None)
        assert line is not None, out.stdout + out.stderr
        assert "error: ranks disagree on the command line" in line, line
        assert f"has `--seed {rank}`, rank {1 - rank} has `--seed {1 - rank}`" in line, line
        assert "launch every rank with the same flags" in line
        assert f"Node with rank {rank} exited with code 2" in out.stdout + out.stderr
    assert not store.exists()
