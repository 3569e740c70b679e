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


def test_infer_bench_is_registered():
    out = subprocess.run(
        [sys.executable, "-m", "taq_bench", "infer", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--presets" in out.stdout
