"""`taq sweep` at tiny settings: every point in the table and both plots; a SIGKILLed sweep
resumes without recomputing finished points; a rerun recomputes nothing."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from taq_pipeline.sweep import SweepConfig, point_intervals
from taq_pipeline.testing import ENV, taq
from taq_run.weight_methods import weight_methods
from taq_runtime.testing import HANG_GUARD_S

TINY = ("--weight-bits", "2", "--avg-bits", "8,4", "--plans", "time-aware,static",
        "--recipes", "taq-dit", "--eval-samples", "2", "--iters", "5")  # fmt: skip
# FP, each weight method at W2, taq-dit x 2 plans x 2 budgets, and static with RTN weights x 2
POINTS = 1 + len(weight_methods()) + 2 * 2 + 2


def test_sweep_resumes_after_a_kill(store_copy):
    out_dir = store_copy.parent / f"{store_copy.stem}-sweep"
    record_path = out_dir / "sweep.json"
    cmd = [sys.executable, "-m", "taq_pipeline", "sweep", "--store", str(store_copy), *TINY]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + HANG_GUARD_S
    before = {}
    while time.time() < deadline and proc.poll() is None:
        if record_path.exists():
            before = json.loads(record_path.read_text())["points"]
            if len(before) >= 3:
                break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(before) < POINTS, len(before)
    out = taq("sweep", "--store", store_copy, *TINY)
    assert out.returncode == 0, out.stderr
    finished = json.loads(record_path.read_text())["points"]
    assert len(finished) == POINTS
    done_line = next(line for line in out.stdout.splitlines() if "already done" in line)
    for name, row in before.items():
        assert name in done_line
        assert finished[name] == row  # not recomputed
    for row in finished.values():
        if row["avg_bits"] is not None:
            assert row["act_bits_measured"] == row["avg_bits"]  # 8 and 4 are met exactly
        assert 0 <= row["task"]["accuracy"] <= 1 and len(row["sample_mse"]) == 2
        assert row["psnr_p10"] <= row["psnr_mean"] and -1 <= row["ssim"] <= 1
    table = (out_dir / "sweep.md").read_text()
    points_table = table.split("\n## ")[0]  # the per-budget difference tables come later
    assert sum(line.startswith("| ") for line in points_table.splitlines()) == POINTS + 1
    for name, row in finished.items():  # every quantized point's numbers with their interval
        stats = point_intervals(row)
        assert set(stats) >= {"ssim", "accuracy"} | (
            {"psnr_db", "psnr_p10"} if row["mse"] else set()
        )
        for key, interval in stats.items():
            assert interval.low <= interval.value <= interval.high, (name, key)
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert stats["ssim"].describe(".4f") in line
        if "psnr_db" in stats:
            assert stats["psnr_db"].describe() in line
    assert "- AdaRound W2 vs RTN W2: " in table
    assert "- taq-dit time-aware A4 vs taq-dit static A4: " in table
    assert "- taq-dit static A4 vs taq-dit static A4, RTN weights: " in table
    for png in ("quality_vs_weight_bits", "quality_vs_activation_bits"):
        pixels = np.asarray(Image.open(out_dir / f"{png}.png").convert("L"), dtype=np.float32)
        assert pixels.std() > 5 and f"({png}.png)" in table
    stamp = record_path.stat().st_mtime_ns
    again = taq("sweep", "--store", store_copy, *TINY)
    assert again.returncode == 0, again.stderr
    assert f"{POINTS} of {POINTS} points already done" in again.stdout
    assert record_path.stat().st_mtime_ns == stamp


def test_bad_sweep_flags_are_one_line(tmp_path):
    out = taq("sweep", "--store", tmp_path / "none.zarr", "--plans", "dynamic")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--plans 'dynamic' is unknown" in lines[0], lines
    for fields, message in (
        ({"avg_bits": (3.0,)}, "--avg-bits must be in 4..8"),
        ({"weight_bits": (7,)}, "--weight-bits 7 is not supported"),
        ({"eval_samples": 1}, "--eval-samples must be at least 2"),
        ({"recipes": ("paper",)}, "--recipes 'paper' is unknown"),
    ):
        with pytest.raises(ValueError, match=message):
            SweepConfig(**fields)
