"""`taq-bench scale`: one rank vs N ranks (`mlx.launch`, ring backend over loopback) on the
same tiny-digits work, measured in one run: calibration images/s and the wall time of
`taq-adaround optimize` over the 4 blocks.

Each command runs as the user would run it (its console script, under `mlx.launch` for N
ranks). A stage's time is the slowest rank's own (what the command prints: from the store
open to its commit, so process start-up and model build are left out); the end-to-end wall
of each command, start-up included, is reported beside it. One rank uses every core for BLAS;
N ranks get cores / N BLAS threads each (`blas_threads`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from taq_runtime.ranks import local_launch

STAGE_SECONDS = re.compile(r"in ([0-9.]+)s\b")
ENV = {**os.environ, "TAQ_NO_PROGRESS": "1"}


class ScaleError(RuntimeError):
    """A command of the benchmark failed (its output says why)."""


@dataclass(frozen=True)
class Timing:
    ranks: int
    stage_seconds: float  # the slowest rank's own time
    wall_seconds: float  # the whole command, start-up included


def blas_threads(ranks: int) -> int:
    """BLAS threads per rank: the cores shared out (OpenBLAS takes them all by default, and
    ranks whose threads outnumber the cores spin against each other)."""
    return max(1, (os.cpu_count() or 1) // ranks)


def _run(ranks: int, command: list[str]) -> Timing:
    env = [f"OPENBLAS_NUM_THREADS={blas_threads(ranks)}"]
    argv = command if ranks == 1 else local_launch(ranks, command, env)
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - start
    seconds = [float(s) for s in STAGE_SECONDS.findall(out.stdout)]
    if out.returncode != 0 or "exited with code" in out.stderr or len(seconds) != ranks:
        raise ScaleError(f"`{' '.join(argv)}` failed: {(out.stderr or out.stdout).strip()[-300:]}")
    return Timing(ranks, max(seconds), wall)


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


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
        calib = [_script("taq-calib"), "--model", "tiny-digits", "--num-images", str(images)]
        calib += ["--num-steps", str(steps)]
        calib_one = _run(1, [*calib, "--store", str(one)])
        calib_many = _run(ranks, [*calib, "--store", str(many)])
        cache = [_script("taq-adaround"), "cache", "--store", str(one), "--stride", "2"]
        if subprocess.run(cache, capture_output=True, env=ENV).returncode != 0:
            raise ScaleError(f"`{' '.join(cache)}` failed")
        shutil.rmtree(many)
        shutil.copytree(one, many)  # the same block cache for both
        optimize = [_script("taq-adaround"), "optimize", "--iters", str(iters)]
        optimize_one = _run(1, [*optimize, "--store", str(one)])
        optimize_many = _run(ranks, [*optimize, "--store", str(many)])
    return ScaleResult(ranks, images, iters, (calib_one, calib_many), (optimize_one, optimize_many))


def lines(result: ScaleResult) -> list[str]:
    n = result.ranks
    one, many = result.calib
    rate_one, rate_many = result.images / one.stage_seconds, result.images / many.stage_seconds
    a, b = result.optimize
    return [
        f"{'':<36}{'1 rank':>10}{f'{n} ranks':>10}{'ratio':>8}",
        f"{'calib images/s':<36}{rate_one:>10.2f}{rate_many:>10.2f}{rate_many / rate_one:>7.2f}x",
        f"{'calib command wall s (start-up incl.)':<36}{one.wall_seconds:>10.1f}"
        f"{many.wall_seconds:>10.1f}{many.wall_seconds / one.wall_seconds:>7.2f}x",
        f"{f'optimize 4 blocks s ({result.iters} iters)':<36}{a.stage_seconds:>10.1f}"
        f"{b.stage_seconds:>10.1f}{b.stage_seconds / a.stage_seconds:>7.2f}x",
        f"{'optimize command wall s (start-up incl.)':<36}{a.wall_seconds:>10.1f}"
        f"{b.wall_seconds:>10.1f}{b.wall_seconds / a.wall_seconds:>7.2f}x",
    ]
