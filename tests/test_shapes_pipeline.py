"""tiny-shapes through `taq run` at minimal settings: the preset comes from taq-shapes' entry
point with its shipped weights, and the report carries prompt adherence per variant with its
per-attribute accuracies, SSIM and worst-case PSNR vs FP, and a colour grid with the prompts."""

import json

import numpy as np

from taq_model.presets import PRESETS, load_preset
from taq_pipeline.tasks import task_metrics
from taq_pipeline.testing import MINIMAL, taq

ATTRIBUTES = ["count", "colour", "shape", "size", "position"]


def test_tiny_shapes_is_a_preset_from_its_entry_point():
    assert "tiny-shapes" in PRESETS
    handle = load_preset("tiny-shapes")
    assert task_metrics("tiny-shapes") == ("adherence", *ATTRIBUTES)
    assert handle.latent_shape == (16, 16, 12)


def test_taq_run_reports_prompt_adherence_per_variant(tmp_path):
    store = tmp_path / "shapes.zarr"
    out = taq("run", "--store", store, "--model", "tiny-shapes", *MINIMAL)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "shapes-report"
    evaluation = json.loads((folder / "eval.json").read_text())
    assert evaluation["task_metric"] == "prompt adherence"
    assert len(evaluation["prompts"]) == 4 and len(set(evaluation["prompts"])) == 4
    for name, variant in evaluation["variants"].items():
        assert variant["accuracy"] == np.mean(variant["correct"]), name
        assert list(variant["attributes"]) == ATTRIBUTES, name
        assert -1 <= variant["ssim"] <= 1 and np.isfinite(variant["psnr_p10_db"]), name
        assert np.array(variant["images"]).shape == (4, 32, 32, 3), name
    assert evaluation["variants"]["FP"]["ssim"] == 1.0
    md = (folder / "report.md").read_text()
    assert "| variant | PSNR vs FP (dB) | MSE vs FP | prompt adherence |" in md
    assert "| variant | SSIM vs FP | worst-case PSNR (10th pct., dB) | count | colour |" in md
    assert "no learned judge" in md
    assert (folder / "samples.png").stat().st_size > 1000
