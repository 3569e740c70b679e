"""Train the `tiny-shapes` MMDiT on procedurally drawn scenes (rectified flow).

The loss and the per-sample modulation are tiny-digits' (`taq_model.toy`):
predict `noise - x0` at `x_t = (1 - sigma) x0 + sigma noise`, sigma logit-normal. What
differs: each step draws a fresh batch of scenes from a generator seeded by (seed, step), so a
run is deterministic and resumes exactly; the step is compiled (`mx.compile`); an exponential
moving average of the weights (its decay ramped up from 0.1, `ema_decay`) is what gets
shipped; and the run writes a checkpoint
(`<output>.ckpt/`: weights, EMA, optimiser state, losses) every `checkpoint_every` steps,
which `--resume` continues from.

    train-tiny-shapes --output tiny_shapes.safetensors [--resume] [--stop-at N]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from taq_model.blocks import clear_modulation
from taq_model.compat import import_diffusionkit
from taq_model.toy import rectified_flow_loss
from taq_runtime.cli import add_version_flag, run_cli
from taq_shapes.grammar import NULL_LABELS, random_scene
from taq_shapes.model import ShapesConditioner, images_to_latents, tiny_shapes_config
from taq_shapes.render import render_scene

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    batch_size: int = 32
    lr: float = 6e-4
    warmup: int = 200
    ema: float = 0.998
    label_dropout: float = 0.1
    hidden: int = 256
    depth: int = 4
    heads: int = 4
    seed: int = 0
    checkpoint_every: int = 250
    stop_at: int = 0  # stop after this step (with a checkpoint), to go on with --resume
    output: str = "tiny_shapes.safetensors"
    resume: bool = False


@dataclass(frozen=True)
class TrainResult:
    path: Path
    losses: list[float]
    seconds: float  # this invocation's (a resumed run counts from its resume)


class TinyShapesModel(nn.Module):
    def __init__(self, config: TrainConfig):
        super().__init__()
        import_diffusionkit()
        from diffusionkit.mlx.mmdit import MMDiT

        self.mmdit = MMDiT(tiny_shapes_config(config.hidden, config.depth, config.heads))
        self.conditioner = ShapesConditioner()


def training_batch(config: TrainConfig, step: int) -> tuple[np.ndarray, ...]:
    """Step `step`'s scenes, labels (null with `label_dropout`), sigmas and noise."""
    rng = np.random.default_rng([config.seed, step])
    scenes = [random_scene(rng) for _ in range(config.batch_size)]
    images = np.stack([render_scene(scene, rng) for scene in scenes])
    labels = np.array(
        [
            NULL_LABELS if rng.random() < config.label_dropout else scene.labels()
            for scene in scenes
        ],
        np.int32,
    )
    sigmas = 1 / (1 + np.exp(-rng.standard_normal(config.batch_size)))
    noise = rng.standard_normal((config.batch_size, 16, 16, 12))
    return (
        images_to_latents(images),
        labels,
        sigmas.astype(np.float32),
        noise.astype(np.float32),
    )


class ResumeError(ValueError):
    """A checkpoint made with another recipe; the message names what differs."""


# What a resumed run may change: how long it runs and where it writes. A longer `steps`
# extends a finished run (its cosine schedule then continues from a higher learning rate).
RESUMABLE_CHANGES = ("steps", "stop_at", "resume", "output", "checkpoint_every")


def ema_decay(target: float, step: int) -> float:
    """The EMA's decay at `step`: ramps up to `target` so early averages are not dominated by
    the random initial weights (0.998**1000 would still leave them 13 % of the average)."""
    return min(target, (1 + step) / (10 + step))


def _checkpoint_dir(config: TrainConfig) -> Path:
    return Path(config.output).with_suffix(".ckpt")


def _save_checkpoint(model, ema, optimizer, step: int, losses: list[float], config) -> None:
    folder = _checkpoint_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(folder / "model.safetensors"), dict(tree_flatten(model.parameters())))
    save_weights(ema, config, losses, 0.0, folder / "ema.safetensors", mx.float32)
    mx.save_safetensors(str(folder / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    state = {"step": step, "losses": losses, "config": asdict(config)}
    (folder / "state.json.tmp").write_text(json.dumps(state))
    (folder / "state.json.tmp").replace(folder / "state.json")  # the commit mark, last


def _load_checkpoint(model, optimizer, config) -> tuple[int, list[float], dict | None]:
    folder = _checkpoint_dir(config)
    if not config.resume or not (folder / "state.json").exists():
        return 0, [], None
    state = json.loads((folder / "state.json").read_text())
    differs = [
        f"{key} {state['config'].get(key)!r} -> {value!r}"
        for key, value in asdict(config).items()
        if key not in RESUMABLE_CHANGES and state["config"].get(key) != value
    ]
    if differs:
        raise ResumeError(
            f"the checkpoint in {folder} was trained with another recipe ({', '.join(differs)}): "
            "resume with its flags, or drop --resume and pass another --output"
        )
    model.load_weights(list(mx.load(str(folder / "model.safetensors")).items()))
    optimizer.state = tree_unflatten(list(mx.load(str(folder / "optimizer.safetensors")).items()))
    ema = tree_unflatten(list(mx.load(str(folder / "ema.safetensors")).items()))
    logger.warning("resuming from step %d", state["step"])
    return state["step"], state["losses"], ema


def train(config: TrainConfig) -> TrainResult:
    mx.random.seed(config.seed)
    model = TinyShapesModel(config)
    schedule = optim.join_schedules(
        [
            optim.linear_schedule(1e-5, config.lr, config.warmup),
            optim.cosine_decay(config.lr, config.steps - config.warmup),
        ],
        [config.warmup],
    )
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.0)
    optimizer.init(model.trainable_parameters())
    start_step, losses, ema = _load_checkpoint(model, optimizer, config)
    if ema is None:
        ema = tree_map(lambda v: mx.array(v), model.parameters())
    loss_and_grad = nn.value_and_grad(model, rectified_flow_loss)
    state = [model.state, optimizer.state]

    @mx.compile
    def ema_update(average, current, decay):
        return tree_map(lambda a, c: decay * a + (1 - decay) * c, average, current)

    def step_fn(x0, labels, sigmas, noise):
        loss, grads = loss_and_grad(model, x0, labels, sigmas, noise)
        optimizer.update(model, grads)
        return loss

    step_fn = mx.compile(step_fn, inputs=state, outputs=state)
    start = time.perf_counter()
    end = min(config.stop_at or config.steps, config.steps)
    for step in range(start_step, end):
        batch = [mx.array(a) for a in training_batch(config, step)]
        loss = step_fn(*batch)
        ema = ema_update(ema, model.parameters(), mx.array(ema_decay(config.ema, step)))
        mx.eval(state, ema, loss)
        losses.append(loss.item())
        done = step + 1
        if done % 25 == 0:
            rate = (time.perf_counter() - start) / (done - start_step)
            logger.warning(
                "step %d/%d loss %.4f (mean of 25) %.2f s/step lr %.2e",
                done,
                config.steps,
                np.mean(losses[-25:]),
                rate,
                schedule(mx.array(done)).item(),
            )
        if done % config.checkpoint_every == 0 or done == end:
            _save_checkpoint(model, ema, optimizer, done, losses, config)
    clear_modulation(model.mmdit)
    seconds = time.perf_counter() - start
    return TrainResult(save_weights(ema, config, losses, seconds), losses, seconds)


def save_weights(
    params: dict,
    config: TrainConfig,
    losses: list[float],
    seconds: float,
    path: Path | None = None,
    dtype: mx.Dtype = mx.float16,
) -> Path:
    """The EMA weights (float16 by default, loaded as float32), the recipe as metadata."""
    weights = {k: v.astype(dtype) for k, v in tree_flatten(params)}
    recipe = {k: v for k, v in asdict(config).items() if k not in ("output", "resume", "stop_at")}
    metadata = {
        "recipe": json.dumps(recipe),
        "steps_done": str(len(losses)),
        "final_loss": f"{np.mean(losses[-100:]):.5f}",
        "train_seconds": f"{seconds:.0f}",
    }
    path = Path(path or config.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(path), weights, metadata=metadata)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train-tiny-shapes", description=__doc__.split("\n")[0])
    add_version_flag(parser, "taq-shapes")
    for name, value in asdict(TrainConfig()).items():
        flag = f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(value), default=value)
    args = parser.parse_args(argv)

    def run() -> int:
        result = train(TrainConfig(**vars(args)))
        print(
            f"trained {len(result.losses)} of {args.steps} steps in {result.seconds:.0f}s, "
            f"loss {np.mean(result.losses[-100:]):.4f} (mean of the last 100) -> {result.path}"
        )
        return 0

    return run_cli(run, user_errors=(ResumeError,))


if __name__ == "__main__":
    sys.exit(main())
