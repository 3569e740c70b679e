"""`taq-bench adaround`: AdaRound train-step throughput, compiled vs eager, and the compiled
step's CPU time against a plain compiled forward + backward of the same block, in one run.

One MM block with AdaRound layers on every quantizable linear, random inputs and
modulation of the real shapes: tiny-digits (hidden 128, 64 image + 4 text tokens) and an
SD3-Medium block (hidden 1536, 24 heads, 1024 image + 154 text tokens). The same step
function (taq-adaround's `make_train_step`, with the fused GELU as `taq-adaround optimize`
trains) runs eagerly and under `mx.compile`. The plain step is the block as the model has
it (float weights, its own GELU): the loss's gradient in every weight, compiled, no
optimizer. Their CPU-time ratio is what AdaRound's rounding, fake quantization, regulariser
and Adam cost on top of the block itself (CPU time: a shared machine's load cancels out).
"""

from __future__ import annotations

import dataclasses
import resource
import time
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_adaround.gelu import fused_gelu
from taq_adaround.layers import install_adaround
from taq_adaround.reconstruct import (
    AdaRoundConfig,
    BlockData,
    make_train_step,
    reconstruction_loss,
)
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
    micro_batch: int = 0  # AdaRound's --micro-batch (0: the whole batch in one pass)


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
    step_cpu_ms: float  # the compiled AdaRound step, user + system CPU
    plain_cpu_ms: float  # a compiled forward + backward of the float block
    micro_batch: int = 0
    step_peak_gb: float = 0.0  # MLX's peak memory while the compiled step ran

    @property
    def ratio(self) -> float:
        return self.compiled_its / self.eager_its

    @property
    def cpu_ratio(self) -> float:
        return self.step_cpu_ms / self.plain_cpu_ms

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "cpu_ratio": self.cpu_ratio}


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


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _block(shape: Shape):
    config = tiny_config(depth=2, hidden=shape.hidden, heads=shape.heads)
    config.max_latent_resolution = 4  # the block does not see it; keeps the model small
    handle = build_random(config, (4, 4, 4), name="bench", num_tokens=shape.text_tokens)
    mmdit = handle.mmdit
    data = _random_data(shape, 6 * shape.hidden, np.random.RandomState(0))
    return mmdit, get_block(mmdit, "mm0"), block_streams(mmdit, "mm0"), data


def _time(step, state, iters: int) -> tuple[float, float]:
    """(iterations per second, CPU seconds per iteration) after one warm-up call."""
    mx.reset_peak_memory()
    mx.eval(step(), state)  # warm-up (and compilation)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(iters):
        mx.eval(step(), state)
    return iters / (time.perf_counter() - start), (_cpu_seconds() - cpu) / iters


def measure(shape: Shape, compile_step: bool) -> tuple[float, float]:
    """(iterations per second, CPU seconds per iteration) of the train step on one block."""
    mmdit, block, streams, data = _block(shape)
    refs = block_layers(mmdit, "mm0")
    settings = AdaRoundConfig(
        iters=shape.iters, batch_size=shape.batch, micro_batch=shape.micro_batch
    )
    layers = install_adaround(mmdit, refs, settings.weight_config, settings.bits_a)
    for layer in layers.values():
        layer.act_scale = mx.array(0.05)
    batch = data.batch(np.arange(shape.batch))
    beta, reg = mx.array(10.0), mx.array(0.01)
    with fused_gelu(block):
        step, state = make_train_step(block, streams, layers, settings, compile_step)
        return _time(lambda: step(batch, beta, reg), state, shape.iters)


def measure_plain(shape: Shape) -> float:
    """CPU seconds per compiled forward + backward of the float block (every weight's
    gradient of the same loss)."""
    _, block, streams, data = _block(shape)
    batch = data.batch(np.arange(shape.batch))
    loss_and_grad = nn.value_and_grad(block, lambda b, x: reconstruction_loss(b, streams, x))
    step = mx.compile(lambda x: loss_and_grad(block, x), inputs=block.state, outputs=block.state)
    return _time(lambda: step(batch), block.state, shape.iters)[1]


def bench_adaround(
    shapes: list[str], batch: int | None = None, iters: int | None = None, micro_batch: int = 0
) -> list[StepRate]:
    """Each shape's step rate, eager and compiled; `batch` / `iters` replace the shape's."""
    results = []
    for name in shapes:
        shape = dataclasses.replace(
            SHAPES[name],
            batch=batch or SHAPES[name].batch,
            iters=iters or SHAPES[name].iters,
            micro_batch=micro_batch,
        )
        eager, _ = measure(shape, compile_step=False)
        compiled, step_cpu = measure(shape, compile_step=True)
        peak = mx.get_peak_memory() / 1e9
        plain_cpu = measure_plain(shape)
        results.append(
            StepRate(
                name,
                shape.batch,
                eager,
                compiled,
                1e3 * step_cpu,
                1e3 * plain_cpu,
                micro_batch,
                peak,
            )  # fmt: skip
        )
    return results


def lines(results: list[StepRate]) -> list[str]:
    out = [
        f"{'block shape':<14}{'batch':>6}{'eager it/s':>12}{'compiled it/s':>15}{'ratio':>8}"
        f"{'step CPU ms':>13}{'fwd+bwd CPU ms':>16}{'ratio':>8}{'micro':>7}{'step peak GB':>14}"
    ]
    for r in results:
        out.append(
            f"{r.shape:<14}{r.batch:>6}{r.eager_its:>12.2f}{r.compiled_its:>15.2f}{r.ratio:>7.2f}x"
            f"{r.step_cpu_ms:>13.1f}{r.plain_cpu_ms:>16.1f}{r.cpu_ratio:>7.2f}x"
            f"{r.micro_batch or r.batch:>7}{r.step_peak_gb:>14.2f}"
        )
    return out
