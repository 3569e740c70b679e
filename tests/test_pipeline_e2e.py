"""`taq run` end to end at minimal settings; rerun skips; killed runs finish identically."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

MINIMAL = ("--num-images", "2", "--num-steps", "4", "--iters", "20", "--eval-samples", "4")
VARIANTS = [
    "FP",
    "RTN W4",
    "AdaRound W4",
    "AdaRound W4A8 static",
    "AdaRound W4 + time-aware A4/A6/A8",
    "+ SmoothQuant",
]


def taq(*args, **kwargs):
    env = {**os.environ, "TAQ_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "taq_pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, **kwargs)


def report(store) -> dict:
    return json.loads((store.parent / f"{store.stem}-report" / "report.json").read_text())


def test_run_writes_a_report_with_every_variant_then_skips(tmp_path):
    store = tmp_path / "run.zarr"
    first = taq("run", "--store", store, *MINIMAL)
    assert first.returncode == 0, first.stderr
    assert "report" in first.stdout.splitlines()[-1]
    data = report(store)
    assert [v["name"] for v in data["variants"]] == VARIANTS
    for variant in data["variants"][1:]:
        for key in ("mse", "psnr_db", "accuracy", "frechet", "weight_bytes", "seconds"):
            assert np.isfinite(variant[key]), (variant["name"], key)
    assert data["variants"][1]["weight_bytes"] < 0.2 * data["variants"][0]["weight_bytes"]
    md = (store.parent / "run-report" / "report.md").read_text()
    assert md.index("| variant |") < md.index("## AdaRound vs RTN per block")
    assert "simulated" in md
    second = taq("run", "--store", store, *MINIMAL)
    assert second.returncode == 0
    assert "== " not in second.stdout and "up to date" in second.stdout


def test_killed_run_finishes_with_the_same_numbers(tmp_path):
    reference = tmp_path / "ref.zarr"
    assert taq("run", "--store", reference, *MINIMAL).returncode == 0
    killed = tmp_path / "killed.zarr"
    env = {**os.environ, "TAQ_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "taq_pipeline", "run", "--store", str(killed), *MINIMAL]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "weights").exists():
        time.sleep(0.1)  # kill during adaround optimize
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = taq("run", "--store", killed, *MINIMAL)
    assert resumed.returncode == 0, resumed.stderr
    got, want = report(killed)["variants"], report(reference)["variants"]
    for a, b in zip(got, want, strict=True):
        assert a["name"] == b["name"]
        for key in ("mse", "psnr_db", "accuracy", "frechet", "weight_bytes", "act_bits"):
            assert a[key] == b[key], (a["name"], key)


def test_bad_flag_is_one_line():
    out = taq("run", "--store", "/tmp/never.zarr", "--iters", "0")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: --iters must be at least 1"]
