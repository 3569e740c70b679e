"""`taq run` end to end at minimal settings: every variant in the report with finite numbers;
a rerun rewrites nothing; changed flags are refused; a SIGKILLed run finishes identically."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from taq_io.lock import LOCK_FILE
from taq_pipeline.testing import ENV, MINIMAL, taq
from taq_runtime.testing import HANG_GUARD_S

VARIANTS = [
    "FP",
    "RTN W4",
    "GPTQ W4",
    "AdaRound W4",
    "AdaRound W4A8 static",
    "AdaRound W4 + time-aware A4/A6/A8",
    "+ SmoothQuant",
]
METHODS = VARIANTS[1:-3]  # one weight-only variant, and one stage, per weight method


def report(store) -> dict:
    return json.loads((store.parent / f"{store.stem}-report" / "report.json").read_text())


def snapshot(*roots) -> dict:
    return {
        str(path): path.stat().st_mtime_ns
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and path.name != LOCK_FILE  # each writer records itself there
    }


def test_run_writes_a_report_with_every_variant(finished):
    store, out = finished
    assert "report: " in out.stdout.splitlines()[-1] and "report.md" in out.stdout
    data = report(store)
    assert [v["name"] for v in data["variants"]] == VARIANTS
    for variant in data["variants"][1:]:
        for key in ("mse", "psnr_db", "accuracy", "frechet", "weight_bytes", "seconds"):
            assert np.isfinite(variant[key]), (variant["name"], key)
    assert data["variants"][1]["weight_bytes"] < 0.2 * data["variants"][0]["weight_bytes"]
    assert data["eval"]["seeds"] == {
        "split": "heldout",
        "calibration": "0..1",
        "evaluation": "50000..50003",
    }
    for name in VARIANTS[1:]:
        psnr = data["intervals"]["variants"][name]["psnr_db"]
        assert psnr["low"] <= psnr["value"] <= psnr["high"], name
    claims = data["intervals"]["comparisons"]
    time_aware = "AdaRound W4 + time-aware A4/A6/A8"
    assert [(c["better"], c["worse"]) for c in claims] == [
        ("GPTQ W4", "RTN W4"),
        ("AdaRound W4", "RTN W4"),
        (time_aware, "AdaRound W4A8 static"),
        ("+ SmoothQuant", time_aware),
    ]
    assert all(c["met"] == (c["difference"]["low"] > c["margin"]) for c in claims)
    methods = data["weight_methods"]
    assert [m["label"] for m in methods] == [v.removesuffix(" W4") for v in METHODS]
    for method in methods:
        assert list(method["blocks"]) == ["mm0", "mm1", "mm2", "mm3"]
        assert 0 < method["mse"] and method["seconds"] > 0
    md = (store.parent / "run-report" / "report.md").read_text()
    assert md.index("| variant |") < md.index("## Weight methods")
    for method in methods:  # a row per method
        assert f"| {method['label']} | W4 | " in md
    assert "simulated" in md and "real" in md
    assert "95 % interval" in md and "AdaRound W4 vs RTN W4: " in md
    for png in ("samples", "block_mse", "quality_vs_bits", "tiers"):
        assert (store.parent / "run-report" / f"{png}.png").stat().st_size > 1000
    for png in ("snapshot", "temporal", "heatmap", "variability"):
        assert (store.parent / "run-report" / "actstats" / f"{png}.png").stat().st_size > 1000
        assert f"(actstats/{png}.png)" in md
    temporal = json.loads((store.parent / "run-report" / "temporal.json").read_text())
    assert set(temporal["always"]) == {"A4", "A6", "A8"}
    fc2 = [n for n in temporal["shift"]]
    assert fc2 and all(n.endswith("mlp.fc2") for n in fc2)
    one_tier = sum(len(v) for v in temporal["always"].values())
    assert one_tier + len(temporal["switchers"]) == temporal["layers"]
    assert f"{len(temporal['switchers'])} of {temporal['layers']} layers switch" in md


def test_rerun_rewrites_nothing_and_changed_flags_are_refused(finished):
    store, _ = finished
    reports = store.parent / "run-report"
    before = snapshot(store, reports)
    again = taq("run", "--store", store, *MINIMAL)
    assert again.returncode == 0, again.stderr
    stages = 4 + len(METHODS)  # calib, cache, collect, analyze and each weight method
    assert again.stdout.count("already complete, skipped") == stages
    assert "report: up to date" in again.stdout
    assert snapshot(store, reports) == before
    changed = taq("run", "--store", store, *MINIMAL, "--iters", "21")
    assert changed.returncode == 2
    (line,) = changed.stderr.strip().splitlines()
    assert "weights adaround" in line and "iters=20 (now 21)" in line and "--overwrite" in line
    assert snapshot(store, reports) == before


# Killed during evaluation, and in the last weight stage once the cheaper methods are done;
# a kill during optimize is also test_object_store's (the same run on s3://, to these
# numbers), test_ranks' (a rank, local store) and taq-adaround's own.
@pytest.mark.parametrize(
    "marker",
    ["run-report/eval.json", "weights/adaround/zarr.json"],
    ids=["during-evaluate", "during-adaround"],
)
def test_killed_run_finishes_with_the_same_numbers(finished, tmp_path, marker):
    killed = tmp_path / "run.zarr"
    cmd = [sys.executable, "-m", "taq_pipeline", "run", "--store", str(killed), *MINIMAL]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched = (killed if marker.startswith("weights") else tmp_path) / marker
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not watched.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = taq("run", "--store", killed, *MINIMAL)
    assert resumed.returncode == 0, resumed.stderr
    assert "already complete, skipped" in resumed.stdout  # it resumed, not restarted
    got, want = report(killed)["variants"], report(finished[0])["variants"]
    for a, b in zip(got, want, strict=True):
        assert a["name"] == b["name"]
        for key in ("mse", "psnr_db", "accuracy", "frechet", "weight_bytes", "act_bits"):
            assert a[key] == b[key], (a["name"], key)
    # the stages finished before the kill keep the time of the run that computed them
    timings = report(killed)["timings"]
    assert list(timings)[:2] == ["calib", "blockio cache"]
    assert set(timings) == set(report(finished[0])["timings"])
    for stage in ("calib", "blockio cache"):
        assert timings[stage]["outcome"] == "computed" and timings[stage]["seconds"] > 0, stage


@pytest.mark.parametrize(
    "args, message",
    [
        (("--iters", "0"), "--iters must be at least 1, got 0"),
        (("--range-margin", "0.5"), "--range-margin 0.5 clips the calibration range: use >= 1"),
        (("--rule", "paper"), "--rule 'paper' is unknown: pick one of sqnr, absolute"),
    ],
    ids=["iters", "range-margin", "rule"],
)
def test_bad_flag_is_one_line(tmp_path, args, message):
    out = taq("run", "--store", tmp_path / "never.zarr", *args)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "never.zarr").exists()


def test_recipe_and_budget_pass_through_to_analyze(store_copy):
    """`taq run --recipe/--avg-bits/--plan` build taq-actstats' own config: a changed recipe
    makes only the analyze stage stale; with --overwrite only it is recomputed, as
    `taq-actstats analyze --recipe taq-dit --avg-bits 6 --plan static` would record it."""
    from taq_io import Store
    from taq_run.quant_config import AnalyzeConfig, analyze_config_of, require_quant_config

    paper = ("--recipe", "taq-dit", "--avg-bits", "6", "--plan", "static")
    refused = taq("run", "--store", store_copy, *MINIMAL, *paper)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "actstats analyze" in line and "stale" in line and "--overwrite" in line
    out = taq("run", "--store", store_copy, *MINIMAL, *paper, "--overwrite")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already complete, skipped") == 3 + len(METHODS)
    group = require_quant_config(Store.open(store_copy, mode="r"))
    want = AnalyzeConfig.for_recipe("taq-dit", avg_bits=6.0, plan="static")
    assert analyze_config_of(group) == want
    bits = group.read("bits")  # (step, layer)
    assert bits.mean() <= 6.0 and (bits == bits[0]).all()  # static: one width per layer
    md = (store_copy.parent / "run-report" / "report.md").read_text()
    assert "Recipe `taq-dit`" in md and "average-bit budget of 6 bits (static plan)" in md
