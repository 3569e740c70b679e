"""A short training run (CI smoke test): the loss falls and the weights load and sample."""

import os
import subprocess
import sys

from taq_model.presets import build_tiny_digits
from taq_model.train_tiny_digits import TrainConfig, train

import numpy as np


def test_short_training_lowers_the_loss_and_saves_loadable_weights(tmp_path):
    result = train(
        TrainConfig(steps=40, batch_size=32, warmup=5, output=str(tmp_path / "w.safetensors"))
    )
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first, (first, last)
    handle = build_tiny_digits(result.path)
    latents = handle.generate(["digit 1"], [0], num_steps=2)
    assert latents.shape == (1, 16, 16, 1) and np.isfinite(np.array(latents)).all()


def test_cli_entry_point(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "taq_model",
            "train-tiny-digits",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--warmup",
            "1",
            "--output",
            str(tmp_path / "w.safetensors"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TAQ_NO_PROGRESS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "trained 2 steps" in out.stdout and (tmp_path / "w.safetensors").exists()
