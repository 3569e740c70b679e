import json
import os
import subprocess
import sys


def test_adaround_bench_prints_ratio_json():
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "adaround", "--shapes", "tiny-digits", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
    )
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["shape"] == "tiny-digits" and row["eager_its"] > 0 and row["compiled_its"] > 0
    assert abs(row["ratio"] - row["compiled_its"] / row["eager_its"]) < 1e-9
    assert row["step_cpu_ms"] > 0 and row["plain_cpu_ms"] > 0
    assert abs(row["cpu_ratio"] - row["step_cpu_ms"] / row["plain_cpu_ms"]) < 1e-9


def test_infer_bench_is_registered():
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "infer", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--presets" in out.stdout


def test_storage_and_blas_ratios_are_measured_side_by_side():
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "all", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    storage, blas = data["storage"], data["blas"]
    assert storage["npz_files"] == storage["samples"] == 40
    assert storage["zarr_files"] > 0 and storage["zarr_bytes_per_sample"] > 0
    assert (
        abs(storage["ratio"] * storage["npz_bytes_per_sample"] - storage["zarr_bytes_per_sample"])
        < 1e-6 * storage["npz_bytes_per_sample"]
    )
    assert blas["reference_gflops"] > 0 and blas["ratio"] > 0
