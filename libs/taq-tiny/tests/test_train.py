"""A short training run (CI smoke test): the loss falls and the weights load and sample."""

import numpy as np

from taq_model.presets import build_tiny_digits
from taq_tiny.train import TrainConfig, train


def test_short_training_lowers_the_loss_and_saves_loadable_weights(tmp_path):
    result = train(
        TrainConfig(steps=40, batch_size=32, warmup=5, output=str(tmp_path / "w.safetensors"))
    )
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.7 * first, (first, last)
    handle = build_tiny_digits(result.path)
    latents = handle.generate(["digit 1"], [0], num_steps=2)
    assert latents.shape == (1, 16, 16, 1) and np.isfinite(np.array(latents)).all()


def test_cli_entry_point(tmp_path, run_command):
    args = ("--steps", 2, "--batch-size", 8, "--warmup", 1, "--output", tmp_path / "w.safetensors")
    out = run_command("taq_tiny", "train-tiny-digits", *args)
    assert out.returncode == 0, out.stderr
    assert "trained 2 steps" in out.stdout and (tmp_path / "w.safetensors").exists()
