"""`taq-bench adaround`: AdaRound train-step throughput, compiled vs eager, in one run.

One MM block with AdaRound layers on every quantizable linear, random inputs and
modulation of the real shapes: tiny-digits (hidden 128, 64 image + 4 text tokens) and an
SD3-Medium block (hidden 1536, 24 heads, 1024 image + 154 text tokens). The same step
function (taq-adaround's `make_train_step`) runs eagerly and under `mx.compile`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import mlx.core as mx
import numpy as np

from taq_adaround.layers import install_adaround
from taq_adaround.reconstruct import AdaRoundConfig, BlockData, make_train_step
from taq_model.presets import build_random
from taq_model.taxonomy import block_layers, block_streams, get_block
from taq_model.testing import tiny_config


@dataclass(frozen=True)
class Shape:
    name: str
    hidden: int
    heads: int
    image_tokens: int
    text_tokens: int
    batch: int
    iters: int


SHAPES = {
    "tiny-digits": Shape("tiny-digits", 128, 4, 64, 4, 32, 30),
    "sd3-medium": Shape("sd3-medium", 1536, 24, 1024, 154, 2, 3),
}


@dataclass(frozen=True)
class StepRate:
    shape: str
    batch: int
    eager_its: float
    compiled_its: float

    @property
    def ratio(self) -> float:
        return self.compiled_its / self.eager_its

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def _random_data(shape: Shape, modulation: int, rng: np.random.RandomState) -> BlockData:
    def normal(*dims):
        return rng.randn(*dims).astype(np.float32)

    n, d = shape.batch, shape.hidden
    return BlockData(
        normal(n, shape.image_tokens, d),
        normal(n, shape.text_tokens, d),
        {"image": 0.1 * normal(n, modulation), "text": 0.1 * normal(n, modulation)},
        normal(n, shape.image_tokens, d),
        normal(n, shape.text_tokens, d),
    )


def measure(shape: Shape, compile_step: bool) -> float:
    """Iterations per second of the train step on one block of `shape`."""
    config = tiny_config(depth=2, hidden=shape.hidden, heads=shape.heads)
    config.max_latent_resolution = 4  # the block does not see it; keeps the model small
    handle = build_random(config, (4, 4, 4), name="bench", num_tokens=shape.text_tokens)
    mmdit = handle.mmdit
    refs = block_layers(mmdit, "mm0")
    settings = AdaRoundConfig(iters=shape.iters, batch_size=shape.batch)
    layers = install_adaround(mmdit, refs, settings.weight_config, settings.bits_a)
    block, streams = get_block(mmdit, "mm0"), block_streams(mmdit, "mm0")
    data = _random_data(shape, 6 * shape.hidden, np.random.RandomState(0))
    for layer in layers.values():
        layer.act_scale = mx.array(0.05)
    step, state = make_train_step(block, streams, layers, settings, compile_step)
    batch = data.batch(np.arange(shape.batch))
    beta, reg = mx.array(10.0), mx.array(0.01)
    mx.eval(step(batch, beta, reg), state)  # warm-up (and compilation)
    start = time.perf_counter()
    for _ in range(shape.iters):
        mx.eval(step(batch, beta, reg), state)
    return shape.iters / (time.perf_counter() - start)


def bench_adaround(shapes: list[str]) -> list[StepRate]:
    results = []
    for name in shapes:
        shape = SHAPES[name]
        eager = measure(shape, compile_step=False)
        compiled = measure(shape, compile_step=True)
        results.append(StepRate(name, shape.batch, eager, compiled))
    return results


def lines(results: list[StepRate]) -> list[str]:
    out = [f"{'block shape':<14}{'batch':>6}{'eager it/s':>12}{'compiled it/s':>15}{'ratio':>8}"]
    for r in results:
        out.append(
            f"{r.shape:<14}{r.batch:>6}{r.eager_its:>12.2f}{r.compiled_its:>15.2f}{r.ratio:>7.2f}x"
        )
    return out
