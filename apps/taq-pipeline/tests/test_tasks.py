"""Each preset's task metrics, and the sweep's table and plots with tiny-shapes' adherence,
on images the tiny-shapes renderer draws (no trained weights needed): ground truth scores,
broken images do not, and every metric gets its interval and its column."""

from dataclasses import asdict

import numpy as np
import pytest

from taq_pipeline.sweep import Point, measure_point, point_intervals, write_sweep_report
from taq_pipeline.tasks import SHAPE_ATTRIBUTES, task_metrics, task_scores
from taq_shapes.grammar import parse_prompt
from taq_shapes.render import make_dataset

N = 24


@pytest.fixture(scope="module")
def scenes():
    images, scenes = make_dataset(N, seed=5)
    return images, [s.prompt for s in scenes]


def test_each_preset_names_its_task_metrics():
    assert task_metrics("tiny-digits") == ("accuracy",)
    assert task_metrics("tiny-shapes") == ("adherence", *SHAPE_ATTRIBUTES)
    assert task_metrics("sd3-medium@1024x768+t5") == ()
    assert task_scores("sd3-medium-random", ["a cat"], np.zeros(1), np.zeros(1)) == {}


def test_shapes_scores_are_per_sample_and_applicable_only(scenes):
    images, prompts = scenes
    scores = task_scores("tiny-shapes", prompts, images, images)
    assert np.mean(scores["adherence"]) >= 0.95
    pairs = [parse_prompt(p).relation is not None for p in prompts]
    assert any(pairs) and not all(pairs)
    for is_pair, size, position in zip(pairs, scores["size"], scores["position"], strict=True):
        assert (size is None) == is_pair and (position is None) == (not is_pair)


def test_sweep_reports_adherence_beside_fidelity(scenes, tmp_path):
    images, prompts = scenes
    broken = images.copy()
    broken[: N // 2] = 255 - broken[: N // 2]  # half the images in the wrong colours
    points = [Point("FP", None, None), Point("RTN W4", "w4.zarr", {}, 4, "RTN")]
    record = {"eval": {"samples": N, "split": "heldout"}, "points": {}}
    for point, drawn in zip(points, (images, broken), strict=True):
        row = measure_point("tiny-shapes", prompts, images, drawn, drawn)
        extra = {"act_bits_measured": None, "seconds": 1.0, "prepare_seconds": 0.0}
        record["points"][point.name] = {**asdict(point), **row, **extra}
    fp, quantized = record["points"]["FP"], record["points"]["RTN W4"]
    assert fp["mse"] == 0 and fp["ssim"] == pytest.approx(1.0)
    assert quantized["task"]["adherence"] <= fp["task"]["adherence"] - 0.4
    stats = point_intervals(quantized)
    assert set(stats) == {"psnr_db", "psnr_p10", "ssim", "adherence", *SHAPE_ATTRIBUTES}
    assert stats["adherence"].low < stats["adherence"].high
    write_sweep_report(tmp_path, record, points, task_metrics("tiny-shapes"))
    table = (tmp_path / "sweep.md").read_text()
    assert "| prompt adherence | count | colour | shape | size | position |" in table
    line = next(line for line in table.splitlines() if line.startswith("| RTN W4 |"))
    assert stats["adherence"].describe(".3f") in line and stats["psnr_db"].describe() in line
    for png in ("quality_vs_weight_bits", "quality_vs_activation_bits"):
        assert (tmp_path / f"{png}.png").stat().st_size > 1000
