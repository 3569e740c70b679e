"""Report the compute environment: MLX version, device, BLAS and a measured GEMM rate."""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass

import mlx.core as mx

from taq_runtime.blas import blas_info


@dataclass(frozen=True)
class EnvironmentReport:
    mlx_version: str
    device: str
    platform: str
    blas: str
    blas_path: str | None
    openblas_core: str | None
    blas_optimised: bool
    blas_threads: int
    gemm_gflops: float

    def lines(self) -> list[str]:
        return [
            f"mlx          {self.mlx_version}",
            f"device       {self.device}",
            f"platform     {self.platform}",
            f"blas         {self.blas}" + (f" ({self.blas_path})" if self.blas_path else ""),
            f"openblas     core type {self.openblas_core}" if self.openblas_core else "",
            f"blas threads {self.blas_threads} (OPENBLAS_NUM_THREADS)",
            f"gemm fp32    {self.gemm_gflops:.1f} GFLOP/s (1024x1024, measured now)",
            "" if self.blas_optimised else "WARNING      reference BLAS: CPU runs ~40x slower",
        ]

    def as_dict(self) -> dict:
        return asdict(self)


def measure_gemm_gflops(size: int = 1024, repeats: int = 10) -> float:
    a = mx.random.normal((size, size))
    b = mx.random.normal((size, size))
    mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def environment_report() -> EnvironmentReport:
    info = blas_info()
    return EnvironmentReport(
        mlx_version=mx.__version__,
        device=str(mx.default_device()),
        platform=f"{platform.system()} {platform.machine()}",
        blas=info.name,
        blas_path=info.path,
        openblas_core=info.core_type,
        blas_optimised=info.optimised,
        blas_threads=info.threads,
        gemm_gflops=measure_gemm_gflops(),
    )
