"""Short training runs of a toy-size tiny-shapes model: the loss falls, the weights load and
sample, and a run stopped and resumed ends bit-identical to an uninterrupted one."""

import json
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from taq_shapes import cli
from taq_shapes.preset import build_tiny_shapes, generate_batched
from taq_shapes.train import ResumeError, TrainConfig, train

TOY = {"hidden": 32, "depth": 1, "heads": 1, "batch_size": 8, "warmup": 2}


def test_short_training_lowers_the_loss_and_saves_loadable_weights(tmp_path):
    config = TrainConfig(steps=30, lr=3e-3, output=str(tmp_path / "w.safetensors"), **TOY)
    result = train(config)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first, (first, last)
    handle = build_tiny_shapes(result.path)
    images = generate_batched(
        handle, ["a small red circle", "a red ring above a blue cross"], [0, 1], 2
    )
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert handle.mmdit.config.hidden_size == 32  # the size came from the file's recipe


def test_stopped_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(TrainConfig(steps=6, output=str(tmp_path / "a.safetensors"), **TOY))
    stopped = TrainConfig(steps=6, stop_at=3, output=str(tmp_path / "b.safetensors"), **TOY)
    train(stopped)
    resumed = train(TrainConfig(steps=6, resume=True, output=stopped.output, **TOY))
    assert resumed.losses == whole.losses
    a, b = mx.load(str(whole.path)), mx.load(str(resumed.path))
    assert a.keys() == b.keys()
    assert all(mx.array_equal(a[k], b[k]).item() for k in a)


def test_cli_entry_points(tmp_path, capsys):
    output = tmp_path / "w.safetensors"
    flags = ["--steps", "2", "--warmup", "1", "--batch-size", "4", "--hidden", "32"]
    out = subprocess.run(
        [sys.executable, "-m", "taq_shapes.train", *flags, "--depth", "1", "--output", str(output)],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "trained 2 of 2 steps" in out.stdout and output.exists()
    grid = tmp_path / "grid.png"
    flags = ["--weights", str(output), "--samples", "3", "--steps", "2", "--grid", str(grid)]
    assert cli.main(["adherence", *flags]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 3 and 0 <= report["adherence"] <= 1 and grid.exists()
    assert cli.main(["adherence", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "train-tiny-shapes" in capsys.readouterr().err


def test_resuming_with_another_recipe_is_refused(tmp_path):
    output = str(tmp_path / "w.safetensors")
    train(TrainConfig(steps=4, stop_at=2, output=output, **TOY))
    with pytest.raises(ResumeError, match=f"lr {TrainConfig().lr} -> 0.002"):
        train(TrainConfig(steps=4, lr=2e-3, resume=True, output=output, **TOY))
