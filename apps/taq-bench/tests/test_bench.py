import json
import os
import subprocess
import sys


def adaround_bench(*flags: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "adaround", "--shapes", "tiny-digits", *flags,
         "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    return row


def test_adaround_bench_prints_ratio_json_and_micro_batches_hold_less():
    row = adaround_bench()
    assert row["shape"] == "tiny-digits" and row["eager_its"] > 0 and row["compiled_its"] > 0
    assert abs(row["ratio"] - row["compiled_its"] / row["eager_its"]) < 1e-9
    assert row["step_cpu_ms"] > 0 and row["plain_cpu_ms"] > 0
    assert abs(row["cpu_ratio"] - row["step_cpu_ms"] / row["plain_cpu_ms"]) < 1e-9
    micro = adaround_bench("--micro-batch", "4")
    assert micro["batch"] == row["batch"] == 32 and micro["micro_batch"] == 4
    assert 0 < micro["step_peak_gb"] < row["step_peak_gb"], (micro, row)


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
