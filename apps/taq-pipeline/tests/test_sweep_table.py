"""The sweep's activation comparisons: an activation-only sweep is a valid config, and
`sweep.md` tables the default recipe minus the paper's and time-aware minus static at each
budget, with paired intervals, on images with known noise levels."""

from dataclasses import asdict

import numpy as np
import pytest

from taq_pipeline.sweep import SweepConfig, measure_point, sweep_points, write_sweep_report
from taq_pipeline.tasks import task_metrics
from taq_run.weight_methods import weight_methods
from taq_shapes.render import make_dataset

N = 16
NOISE = {
    "taq time-aware": 2.0,
    "taq static": 6.0,
    "taq-dit time-aware": 12.0,
    "taq-dit static": 12.0,
}


def test_activation_only_sweep_has_no_weight_points():
    config = SweepConfig(weight_bits=(), avg_bits=(8.0, 4.0))
    points = sweep_points(config, list(weight_methods().values()))
    assert [p.name for p in points if p.weight_bits is not None] == []
    assert {p.name for p in points} >= {"FP", "taq time-aware A4", "taq-dit static A8"}


def test_sweep_tables_the_paired_activation_differences(tmp_path):
    images, scenes = make_dataset(N, seed=5)
    prompts = [s.prompt for s in scenes]
    config = SweepConfig(weight_bits=(), avg_bits=(8.0, 4.0))
    points = [
        p
        for p in sweep_points(config, list(weight_methods().values()))
        if not p.name.endswith("RTN weights")
    ]
    rng = np.random.default_rng(0)
    record = {"eval": {"samples": N, "split": "heldout"}, "points": {}}
    for point in points:
        noise = 0.0 if point.recipe is None else NOISE[f"{point.recipe} {point.plan}"]
        drawn = np.clip(images + rng.normal(0, noise, images.shape), 0, 255).astype(np.uint8)
        row = measure_point("tiny-shapes", prompts, images, drawn, drawn)
        extra = {"act_bits_measured": point.avg_bits, "seconds": 1.0, "prepare_seconds": 0.0}
        record["points"][point.name] = {**asdict(point), **row, **extra}
    write_sweep_report(tmp_path, record, points, task_metrics("tiny-shapes"))
    lines = (tmp_path / "sweep.md").read_text().splitlines()
    head = lines.index(
        next(x for x in lines if x.startswith("### Activation methods") and "PSNR" in x)
    )
    assert lines[head + 2] == (
        "| budget | taq − taq-dit, time-aware | taq − taq-dit, static | "
        "time-aware − static, taq | time-aware − static, taq-dit |"
    )
    a8, a4 = lines[head + 4], lines[head + 5]
    assert a8.startswith("| A8 | **+") and a4.startswith("| A4 | **+")
    cells = [c.strip() for c in a4.split("|")[2:-1]]
    # 2 vs 12 grey levels of noise: ~15.6 dB; 2 vs 6: ~9.5 dB; equal noise: no clear sign
    assert float(cells[0].strip("*").split()[0]) == pytest.approx(15.6, abs=0.5)
    assert float(cells[2].strip("*").split()[0]) == pytest.approx(9.5, abs=0.5)
    assert not cells[3].startswith("**")
    assert any(x.startswith("### Activation methods") and "adherence" in x for x in lines)
