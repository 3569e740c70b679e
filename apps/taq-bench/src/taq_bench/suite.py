"""`taq-bench blas | storage | all`: the BLAS speed-up, artifact bytes, and every ratio at once.

- blas: fp32 GEMM rate with the optimised BLAS taq loads vs MLX's own reference BLAS
  (measured in a subprocess with `TAQ_BLAS` pointing nowhere), same run.
- storage: calibration samples of a real tiny-digits run in our zarr `calib` group vs one
  float32 `.npz` file per (image, step) holding what replaying that sample needs (x_t, t and
  the prompt's conditioning, which zarr stores once per image), written side by side; the
  same for the AdaRound block I/O cache (`blockio/<block>` float16 arrays vs one float32
  `.npz` per (image, step) holding every block's inputs, modulation and outputs).
- infer: tiny-digits sampling with packed W4 layers vs FP32, and resident bytes vs float16
  (taq-infer's `bench_preset`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from taq_adaround.blockio import CacheConfig, cache_block_io, read_block_samples
from taq_calib import CalibConfig, calibrate
from taq_infer.bench import bench_preset
from taq_io import Store
from taq_model.presets import load_preset
from taq_run.calib import calib_timesteps, read_calib_image, require_calib
from taq_run.runs import model_identity

GEMM = (
    "import json; from taq_runtime.blas import blas_info, load_optimised_blas; "
    "load_optimised_blas(); from taq_runtime.doctor import measure_gemm_gflops; "
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
        store = Store.create(root / "run.zarr", model_identity(handle))
        start = time.perf_counter()
        calibrate(handle, store, CalibConfig("tiny-digits", ("digit 3",), images, steps, 3.0))
        calib = require_calib(store)
        timesteps = calib_timesteps(calib)
        npz_dir = root / "npz"
        npz_dir.mkdir()
        for i in range(images):
            image = read_calib_image(calib, i)
            for s in range(steps):  # what replaying one sample needs: x_t, t, conditioning
                np.savez(
                    npz_dir / f"sample_{i}_{s}.npz",
                    x=image.latents[s],
                    t=timesteps[s : s + 1],
                    cond_tokens=image.tokens,
                    cond_pooled=image.pooled,
                )
        zarr_bytes, zarr_files = _bytes(root / "run.zarr" / "calib")
        npz_bytes, npz_files = _bytes(npz_dir)
        cache = _cache_storage(handle, store, root, images * steps)
        seconds = time.perf_counter() - start
    samples = images * steps
    return {
        "samples": samples,
        "zarr_bytes_per_sample": zarr_bytes / samples,
        "npz_bytes_per_sample": npz_bytes / samples,
        "zarr_files": zarr_files,
        "npz_files": npz_files,
        "ratio": zarr_bytes / npz_bytes,
        "cache": cache,
        "seconds": seconds,
    }


def _cache_storage(handle, store: Store, root: Path, samples: int) -> dict:
    """blockio bytes per (image, step) in zarr vs one float32 npz per (image, step)."""
    groups = cache_block_io(handle, store, CacheConfig(stride=1))
    npz_dir = root / "npz-cache"
    npz_dir.mkdir()
    arrays = {block: read_block_samples(group) for block, group in groups.items()}
    first = next(iter(arrays.values()))
    pairs = zip(first["image_index"], first["step_index"], strict=True)
    keys = sorted({(int(i), int(s)) for i, s in pairs})
    for image, step in keys:
        rows = (first["image_index"] == image) & (first["step_index"] == step)
        np.savez(
            npz_dir / f"blockio_{image}_{step}.npz",
            **{
                f"{block}_{name}": value[rows].astype(np.float32)
                for block, named in arrays.items()
                for name, value in named.items()
                if name not in ("image_index", "step_index")
            },
        )
    zarr_bytes, zarr_files = _bytes(root / "run.zarr" / "blockio")
    npz_bytes, npz_files = _bytes(npz_dir)
    return {
        "samples": len(keys),
        "zarr_bytes_per_sample": zarr_bytes / len(keys),
        "npz_bytes_per_sample": npz_bytes / len(keys),
        "zarr_files": zarr_files,
        "npz_files": npz_files,
        "ratio": zarr_bytes / npz_bytes,
    }


def bench_infer() -> dict:
    """tiny-digits, 30 steps: packed W4 vs FP32 time; resident bytes vs float16."""
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines; stdout may be JSON
        result = bench_preset(load_preset("tiny-digits"), 30, repeats=3)
    return {
        "fp32_seconds": result.fp32_seconds,
        "w4_seconds": result.w4_seconds,
        "speed_ratio": result.speed,
        "layers_fp16_bytes": result.layers_fp16,
        "layers_w4_bytes": result.layers_w4,
        "layers_ratio": result.layers_w4 / result.layers_fp16,
        "model_fp16_bytes": result.model_fp16,
        "model_w4_bytes": result.model_w4,
        "model_ratio": result.model_w4 / result.model_fp16,
    }
