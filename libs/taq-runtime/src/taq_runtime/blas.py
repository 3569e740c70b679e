"""Load an optimised BLAS before MLX on Linux CPU.

The `mlx-cpu` wheel links a reference BLAS: fp32 GEMM runs at ~4 GFLOP/s on the
2-core CI machine, ~200 GFLOP/s once OpenBLAS is loaded with RTLD_GLOBAL before
`import mlx` (its symbols then win the dynamic lookup). numpy's bundled OpenBLAS
has renamed symbols and does not work. OpenBLAS 0.3.21 does not recognise recent
Xeons and falls back to the "Prescott" kernels (~33 GFLOP/s), so we pick the
core type from the CPU flags unless the user set OPENBLAS_CORETYPE.

OpenBLAS runs on one thread unless OPENBLAS_NUM_THREADS says otherwise. taq's GEMMs on the
tiny models are small and a second thread spins between them (an AdaRound optimize on
tiny-digits: system CPU 13 % of user with 2 threads, 4 % with 1), and one fixed count makes a
run's numbers independent of how many cores the machine has (a GEMM's result can depend on
how OpenBLAS splits it across threads). Large models want more: set OPENBLAS_NUM_THREADS,
the same on every rank of a launch (the ranks refuse to differ, `ranks.check_launch`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
DEFAULT_THREADS = 1
INSTALL_HINT = "apt-get install libopenblas0-pthread (or set TAQ_BLAS=/path/to/libopenblas.so)"


@dataclass(frozen=True)
class BlasInfo:
    name: str  # "openblas", "accelerate (MLX Metal/CPU build)", "reference"
    path: str | None
    core_type: str | None
    optimised: bool
    threads: int  # OPENBLAS_NUM_THREADS, DEFAULT_THREADS unless the user set it


_INFO: BlasInfo | None = None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _core_type() -> str | None:
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"]
    if platform.machine() != "x86_64":
        return None
    flags = _cpu_flags()
    if "avx512f" in flags:
        return "SkylakeX"
    if "avx2" in flags:
        return "Haswell"
    return None


def _threads() -> int:
    value = os.environ.get("OPENBLAS_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


def load_optimised_blas() -> BlasInfo:
    """Load OpenBLAS globally once; must run before the first `import mlx`."""
    global _INFO
    if _INFO is not None:
        return _INFO
    threads = _threads()
    if sys.platform != "linux":
        _INFO = BlasInfo("accelerate", None, None, True, threads)
        return _INFO
    if "mlx.core" in sys.modules:
        logger.warning(
            "mlx was imported before the optimised BLAS was loaded: it may not be used "
            "(start taq commands through taq_runtime.launcher.launch)"
        )
    override = os.environ.get("TAQ_BLAS")
    paths = (override,) if override else CANDIDATES
    core = _core_type()
    for path in paths:
        if path and Path(path).exists():
            if core:
                os.environ["OPENBLAS_CORETYPE"] = core
            os.environ["OPENBLAS_NUM_THREADS"] = str(threads)  # read when the library loads
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            _INFO = BlasInfo("openblas", path, core, True, threads)
            return _INFO
    logger.warning(
        "No optimised BLAS found: MLX on CPU will use its reference BLAS (~40x slower). "
        "Install one: %s",
        INSTALL_HINT,
    )
    _INFO = BlasInfo("reference", None, None, False, threads)
    return _INFO


def blas_info() -> BlasInfo:
    return load_optimised_blas()
