"""Train the `tiny-digits` MMDiT on scikit-learn's digits (rectified flow).

Loss: `taq_model.toy.rectified_flow_loss` (the model predicts `noise - x0` at
`x_t = (1 - sigma) x0 + sigma noise`), sigma logit-normal. Labels drop to the null class 10 %
of the time so classifier-free guidance works.

    taq-tiny train-tiny-digits --steps 450 --output tiny_digits.safetensors
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from taq_model.blocks import clear_modulation
from taq_model.compat import import_diffusionkit
from taq_model.digits import NULL_CLASS, DigitConditioner, tiny_digits_config
from taq_model.toy import rectified_flow_loss
from taq_runtime.cli import ArgumentParser, config_from_flags, progress, run_cli
from taq_tiny.data import load_digit_images

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 450
    batch_size: int = 128
    lr: float = 1e-3
    warmup: int = 50
    label_dropout: float = 0.1
    seed: int = 0
    output: str = "tiny_digits.safetensors"


@dataclass(frozen=True)
class TrainResult:
    path: Path
    losses: list[float]
    seconds: float


class TinyDigitsModel(nn.Module):
    def __init__(self):
        super().__init__()
        import_diffusionkit()
        from diffusionkit.mlx.mmdit import MMDiT

        self.mmdit = MMDiT(tiny_digits_config())
        self.conditioner = DigitConditioner()


def train(config: TrainConfig) -> TrainResult:
    images, labels = load_digit_images()
    images, labels = mx.array(images), mx.array(labels)
    mx.random.seed(config.seed)
    model = TinyDigitsModel()
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(1e-5, config.lr, config.warmup),
            optim.cosine_decay(config.lr, config.steps),
        ],
        [config.warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.0)
    loss_and_grad = nn.value_and_grad(model, rectified_flow_loss)
    rng = np.random.RandomState(config.seed)
    losses: list[float] = []
    start = time.perf_counter()
    batch = config.batch_size
    with progress(config.steps, "train tiny-digits", unit="step") as bar:
        for _ in range(config.steps):
            index = mx.array(rng.randint(0, images.shape[0], batch))
            dropped = mx.array(rng.rand(batch) < config.label_dropout)
            batch_labels = mx.where(dropped, NULL_CLASS, labels[index])
            sigmas = mx.sigmoid(mx.array(rng.randn(batch).astype(np.float32)))
            noise = mx.array(rng.randn(batch, 16, 16, 1).astype(np.float32))
            loss, grads = loss_and_grad(model, images[index], batch_labels, sigmas, noise)
            optimizer.update(model, grads)
            mx.eval(model.parameters(), optimizer.state, loss)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            bar.update(1)
    clear_modulation(model.mmdit)
    seconds = time.perf_counter() - start
    path = save_weights(model, config, losses, seconds)
    return TrainResult(path, losses, seconds)


def save_weights(model: TinyDigitsModel, config, losses: list[float], seconds: float) -> Path:
    """float16 on disk (half the size; loaded as float32), with the recipe as metadata."""
    weights = {
        f"{prefix}.{k}": v.astype(mx.float16)
        for prefix, module in (("mmdit", model.mmdit), ("conditioner", model.conditioner))
        for k, v in tree_flatten(module.parameters())
    }
    metadata = {
        "recipe": json.dumps({k: v for k, v in asdict(config).items() if k != "output"}),
        "final_loss": f"{np.mean(losses[-20:]):.5f}",
        "train_seconds": f"{seconds:.0f}",
    }
    path = Path(config.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path), weights, metadata=metadata)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="taq-tiny train-tiny-digits", description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)

    def run() -> int:
        result = train(config_from_flags(TrainConfig, args))
        print(
            f"trained {args.steps} steps in {result.seconds:.0f}s, final loss "
            f"{np.mean(result.losses[-20:]):.4f} -> {result.path}"
        )
        return 0

    return run_cli(run)
