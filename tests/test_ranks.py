"""Every sharded stage under `taq launch -n 2` (ring backend over loopback) writes what one
process writes while the launcher itself stays idle, a rank killed mid-optimize fails the
launch and resumes to the same weights, and ranks that disagree are refused on every rank.
Each launch costs two process start-ups: few launches."""

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
from taq_runtime.testing import HANG_GUARD_S

COMMANDS = {"calib": calib, "adaround": adaround, "actstats": actstats}
OPTIMIZE = ["optimize", "--iters", "10", "--batch-size", "4"]
CHAIN = [  # 3 images: rank 0 gets 2, rank 1 gets 1
    ("calib", ["--model", "tiny-digits", "--num-images", "3", "--num-steps", "4"]),
    ("adaround", ["cache", "--stride", "2"]),
    ("adaround", OPTIMIZE),
    ("adaround", ["gptq"]),
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


def console(name: str) -> Path:
    return Path(sys.executable).parent / name


def local_launch(*command: object) -> list[str]:
    return [str(console("taq")), "launch", "-n", "2", "--", *(str(c) for c in command)]


def launch(*command: object) -> subprocess.CompletedProcess:
    argv = local_launch(*command)
    return subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=HANG_GUARD_S)


def own_cpu_share(launcher: subprocess.Popen, started: float) -> float:
    """The launcher's own CPU time (user + system, its ranks' excluded) over its life, as a
    share of one core: read from the kernel's accounting once it has exited, before reaping."""
    os.waitid(os.P_PID, launcher.pid, os.WEXITED | os.WNOWAIT)
    life = time.monotonic() - started
    fields = (Path("/proc") / str(launcher.pid) / "stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    launcher.wait()
    return ticks / os.sysconf("SC_CLK_TCK") / life


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
    started = time.monotonic()
    with open(tmp_path / "out", "w+") as out, open(tmp_path / "err", "w+") as err:
        command = local_launch(sys.executable, driver, store, json.dumps(CHAIN))
        launcher = subprocess.Popen(command, env=ENV, stdout=out, stderr=err)
        share = own_cpu_share(launcher, started)
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert launcher.returncode == 0, stderr
    assert "rank 0/2: calib: wrote 2 image(s)" in stdout, stdout
    assert "rank 1/2: calib: wrote 1 image(s)" in stdout, stdout
    assert share < 0.05, f"the launcher used {share:.1%} of a core"
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
    command = local_launch(console("taq-adaround"), *OPTIMIZE, "--store", store)
    launcher = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    done_file = store / "weights" / "adaround"
    deadline = time.time() + HANG_GUARD_S
    done = np.zeros(4, bool)
    while time.time() < deadline and launcher.poll() is None and not done.any():
        time.sleep(0.05)
        if (done_file / "done" / "zarr.json").exists():
            done = zarr.open_array(done_file / "done", mode="r")[...]
    pid = _rank_pid(store, 1)
    if pid is None or launcher.poll() is not None:
        pytest.fail(f"the launch ended before the kill: {launcher.communicate()[1]}")
    os.kill(pid, signal.SIGKILL)
    _, stderr = launcher.communicate(timeout=HANG_GUARD_S)  # the launcher stops the other rank
    assert launcher.returncode == 128 + signal.SIGKILL, stderr
    assert "taq launch: rank 1 was killed by SIGKILL; stopping the other ranks" in stderr
    done = zarr.open_array(done_file / "done", mode="r")[...]
    assert done.any() and not done.all(), done
    resumed = launch(
        console("taq-adaround"), OPTIMIZE[0], "--store", store, *OPTIMIZE[1:], "--resume"
    )
    assert resumed.returncode == 0, resumed.stderr
    redone = set(re.findall(r"rank \d/2: (mm\d) ", resumed.stdout))
    assert redone == {f"mm{i}" for i in np.flatnonzero(~done)}, resumed.stdout
    assert_same(store, one_rank, "weights/adaround")  # the only method this launch reran


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
    assert out.returncode == 2 and "taq launch: rank" in out.stderr, out.stderr
    assert not store.exists()


def test_ranks_with_other_blas_thread_counts_are_refused(tmp_path):
    store = tmp_path / "run.zarr"
    script = 'OPENBLAS_NUM_THREADS=$((MLX_RANK + 1)) exec "$0" --store "$1" --num-images 1'
    out = launch("sh", "-c", script, console("taq-calib"), store)
    assert out.returncode == 2, out.stderr
    assert "error: ranks disagree on the BLAS thread count" in out.stderr, out.stderr
    assert "set the same OPENBLAS_NUM_THREADS on every rank" in out.stderr
    assert not store.exists()
