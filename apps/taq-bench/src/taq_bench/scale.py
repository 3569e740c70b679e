"""`taq-bench scale`: one rank vs N ranks (`taq launch -n N`, ring backend over loopback) on
the same tiny-digits work, measured in one run: calibration images/s and the wall time of
`taq-adaround optimize` over the 4 blocks, each with the CPU time it cost.

Each command runs as the user would run it (its console script, under `taq launch` for N
ranks). A stage's time is the slowest rank's own (what the command prints: from the store
open to its commit, so process start-up and model build are left out); the end-to-end wall
of each command, start-up included, is reported beside it, and its CPU time (user + system
of the command and every process it started, launcher included): on a machine other jobs
share, wall times move with their load and CPU times much less. Every rank runs taq's
default of one BLAS thread.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from taq_bench.commands import console_script

STAGE_SECONDS = re.compile(r"in ([0-9.]+)s\b")
ENV = {**os.environ, "TAQ_NO_PROGRESS": "1"}


class ScaleError(RuntimeError):
    """A command of the benchmark failed (its output says why)."""


@dataclass(frozen=True)
class Timing:
    ranks: int
    stage_seconds: float  # the slowest rank's own time
    wall_seconds: float  # the whole command, start-up included
    cpu_seconds: float  # user + system of the command and every process it started


def _run(ranks: int, command: list[str]) -> Timing:
    argv = (
        command
        if ranks == 1
        else [console_script("taq"), "launch", "-n", str(ranks), "--", *command]
    )
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=ENV)
        _, status, usage = os.wait4(process.pid, 0)  # usage: the launcher and its ranks
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    seconds = [float(s) for s in STAGE_SECONDS.findall(stdout)]
    if process.returncode != 0 or len(seconds) != ranks:
        raise ScaleError(f"`{' '.join(argv)}` failed: {(stderr or stdout).strip()[-300:]}")
    return Timing(ranks, max(seconds), wall, usage.ru_utime + usage.ru_stime)


@dataclass(frozen=True)
class ScaleResult:
    ranks: int
    images: int
    iters: int
    calib: tuple[Timing, Timing]  # 1 rank, N ranks
    optimize: tuple[Timing, Timing]

    def as_dict(self) -> dict:
        return asdict(self)


def bench_scale(ranks: int = 2, images: int = 8, steps: int = 10, iters: int = 100) -> ScaleResult:
    """Calibrate `images` x `steps` and optimize the 4 blocks (`iters` each) with 1 rank,
    then with `ranks`, in fresh stores under a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="taq-scale-") as work:
        one, many = Path(work) / "one.zarr", Path(work) / "many.zarr"
        calib = [console_script("taq-calib"), "--model", "tiny-digits", "--num-images", str(images)]
        calib += ["--num-steps", str(steps)]
        # a first, small run fills MLX's on-disk cache of compiled kernels, which would
        # otherwise be paid by whichever timed command ran first
        _run(1, [*calib[:3], "--num-images", "1", "--num-steps", "1", "--store", str(one)])
        shutil.rmtree(one)
        calib_one = _run(1, [*calib, "--store", str(one)])
        calib_many = _run(ranks, [*calib, "--store", str(many)])
        cache = [console_script("taq-adaround"), "cache", "--store", str(one), "--stride", "2"]
        if subprocess.run(cache, capture_output=True, env=ENV).returncode != 0:
            raise ScaleError(f"`{' '.join(cache)}` failed")
        shutil.rmtree(many)
        shutil.copytree(one, many)  # the same block cache for both
        optimize = [console_script("taq-adaround"), "optimize", "--iters", str(iters)]
        _run(1, [*optimize[:2], "--iters", "2", "--store", str(many)])  # the kernel cache again
        shutil.rmtree(many)
        shutil.copytree(one, many)
        optimize_one = _run(1, [*optimize, "--store", str(one)])
        optimize_many = _run(ranks, [*optimize, "--store", str(many)])
    return ScaleResult(ranks, images, iters, (calib_one, calib_many), (optimize_one, optimize_many))


def lines(result: ScaleResult) -> list[str]:
    n = result.ranks
    one, many = result.calib
    rate_one, rate_many = result.images / one.stage_seconds, result.images / many.stage_seconds
    a, b = result.optimize

    def row(label: str, first: float, second: float) -> str:
        return f"{label:<40}{first:>10.1f}{second:>10.1f}{second / first:>7.2f}x"

    return [
        f"{'':<40}{'1 rank':>10}{f'{n} ranks':>10}{'ratio':>8}",
        f"{'calib images/s':<40}{rate_one:>10.2f}{rate_many:>10.2f}{rate_many / rate_one:>7.2f}x",
        row("calib command wall s (start-up incl.)", one.wall_seconds, many.wall_seconds),
        row("calib command CPU s (all processes)", one.cpu_seconds, many.cpu_seconds),
        row(f"optimize 4 blocks s ({result.iters} iters)", a.stage_seconds, b.stage_seconds),
        row("optimize command wall s (start-up incl.)", a.wall_seconds, b.wall_seconds),
        row("optimize command CPU s (all processes)", a.cpu_seconds, b.cpu_seconds),
    ]
