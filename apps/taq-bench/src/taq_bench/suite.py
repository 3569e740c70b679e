"""`taq-bench blas | storage | all`: the BLAS speed-up, artifact bytes, and every ratio at once.

- blas: fp32 GEMM rate with the optimised BLAS taq loads vs MLX's own reference BLAS
  (measured in a subprocess with `TAQ_BLAS` pointing nowhere), same run.
- storage: calibration latents of a real tiny-digits run in our zarr `calib` group vs one
  float32 `.npz` file per (image, step), written side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taq_model.presets import load_preset

import numpy as np

from taq_calib import CalibConfig, calibrate
from taq_io import Store

GEMM = (
    "import taq_model, json; from taq_model.doctor import measure_gemm_gflops; "
    "from taq_model.blas import blas_info; "
    "print(json.dumps([blas_info().name, measure_gemm_gflops()]))"
)


def bench_blas() -> dict:
    def run(env: dict) -> tuple[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", GEMM],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=True,
        )
        name, rate = json.loads(out.stdout.strip().splitlines()[-1])
        return name, rate

    name, optimised = run({})
    _, reference = run({"TAQ_BLAS": "/nonexistent/libblas.so"})
    return {
        "blas": name,
        "optimised_gflops": optimised,
        "reference_gflops": reference,
        "ratio": optimised / reference,
    }


def _bytes(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files), len(files)


def bench_storage(images: int = 4, steps: int = 10) -> dict:
    handle = load_preset("tiny-digits")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store.create(root / "run.zarr", handle.identity)
        start = time.perf_counter()
        calibrate(handle, store, CalibConfig("tiny-digits", ("digit 3",), images, steps, 3.0))
        latents = store.require_group("calib").read("latents")
        npz_dir = root / "npz"
        npz_dir.mkdir()
        for i in range(images):
            for s in range(steps):
                np.savez(npz_dir / f"latent_{i}_{s}.npz", x=latents[i, s].astype(np.float32))
        zarr_bytes, zarr_files = _bytes(root / "run.zarr" / "calib")
        npz_bytes, npz_files = _bytes(npz_dir)
        seconds = time.perf_counter() - start
    samples = images * steps
    return {
        "samples": samples,
        "zarr_bytes_per_sample": zarr_bytes / samples,
        "npz_bytes_per_sample": npz_bytes / samples,
        "zarr_files": zarr_files,
        "npz_files": npz_files,
        "ratio": zarr_bytes / npz_bytes,
        "seconds": seconds,
    }
