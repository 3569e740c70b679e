"""Block reconstruction with AdaRound (TaQ-DiT §3.2; Nagel et al. 2020; BRECQ).

For one transformer block: learn, for every quantizable linear, whether each weight rounds
down or up on its W4 grid, jointly with a per-layer activation scale, so that the block's
output under quantization matches its cached FP output on the calibration samples:

    loss = E_batch[ sum_features (block_q(x) - block_fp(x))^2 ] + lambda * sum_l R(V_l; B)

with the rounding regulariser R off during the first 20 % of iterations and its exponent B
annealed 20 -> 2 afterwards. Adam (lr 1e-3) trains the rounding logits V; a second Adam
with a cosine schedule (lr 4e-5) trains the activation scales. Everything runs in float32.
The train step is compiled; the next batch is gathered while the current step runs. While
training, the block's GELU is one `mx.compile` fuses (`gelu.py`, within 5e-7 of exact).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from taq_adaround.gelu import fused_gelu
from taq_adaround.layers import AdaRoundLinear, install_adaround, packed_layer, restore_linears
from taq_model.blocks import (
    MODULATION_KEY,
    install_modulation,
    restore_modulation,
    run_block,
    saved_modulation,
)
from taq_model.taxonomy import LayerRef, block_layers, block_streams, get_block
from taq_quant import RoundingSchedule, rounding_regularizer
from taq_run.weight_methods import WeightMethod
from taq_run.weights import BlockWeights, GridConfig
from taq_runtime.cli import at_least, progress


@dataclass(frozen=True)
class AdaRoundConfig(GridConfig):
    """AdaRound's flags (`taq-adaround adaround`, `taq run`); checked when built, so a bad
    flag is refused before any stage runs."""

    bits_a: int = field(
        default=8, metadata={"help": "static activation bits learned with the weights (0: none)"}
    )
    iters: int = field(default=1000, metadata={"help": "AdaRound iterations per block"})
    batch_size: int = field(default=16, metadata={"help": "AdaRound batch size (samples)"})
    micro_batch: int = field(
        default=0,
        metadata={
            "help": "AdaRound: samples per forward and backward pass, their gradients summed "
            "into the batch's (0: the whole batch at once; fewer hold less memory: an "
            "SD3-Medium block at batch 16 needs 4)",
            "record": "unless default",  # stores made before it existed keep their config
        },
    )
    lr: float = field(
        default=1e-3, metadata={"help": "AdaRound: learning rate of the rounding variables"}
    )
    lr_act: float = field(
        default=4e-5, metadata={"help": "AdaRound: learning rate of the activation scales"}
    )
    reg_weight: float = field(
        default=0.01, metadata={"help": "AdaRound: weight of the rounding regulariser"}
    )
    warmup: float = field(
        default=0.2, metadata={"help": "AdaRound: fraction of iterations without regulariser"}
    )
    beta_start: float = field(default=20.0, metadata={"help": "AdaRound: first exponent B"})
    beta_end: float = field(default=2.0, metadata={"help": "AdaRound: last exponent B"})
    bias_correction: bool = field(  # Adam's; MLX defaults to off, PyTorch (the reference) on
        default=False,
        metadata={"help": "AdaRound: Adam with bias correction (PyTorch's, the reference's)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the batches (+ block index)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(1, iters=self.iters, batch_size=self.batch_size)
        at_least(0, micro_batch=self.micro_batch)
        for name in ("lr", "lr_act", "reg_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name == "lr"):
                low = "> 0" if name == "lr" else ">= 0"
                raise ValueError(
                    f"--{name.replace('_', '-')} must be finite and {low}, got {value}"
                )
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"--warmup must be in [0, 1), got {self.warmup}")
        if not 0 < self.beta_end <= self.beta_start:
            raise ValueError(
                f"--beta-end must be > 0 and at most --beta-start ({self.beta_start}), "
                f"got {self.beta_end}"
            )


@dataclass
class BlockData:
    """A block's cached samples as float32 arrays (tokens without the singleton axis).

    A unified block's single stream is `concat(text_in, image_in)` along tokens."""

    image_in: np.ndarray  # (N, Li, D)
    text_in: np.ndarray  # (N, Lt, D)
    modulation: dict[str, np.ndarray]  # stream -> (N, M), in the block's stream order
    image_out: np.ndarray
    text_out: np.ndarray  # (N, 0, D) when the model discards the block's text output
    positional_encodings: mx.array | None = None  # RoPE models: the table every block gets

    def __len__(self) -> int:
        return self.image_in.shape[0]

    def batch(self, index: np.ndarray) -> tuple[mx.array, ...]:
        """(image_in, text_in, image_out, text_out, *modulation per stream, [rope])."""
        rope = () if self.positional_encodings is None else (self.positional_encodings,)
        return (
            mx.array(self.image_in[index]),
            mx.array(self.text_in[index]),
            mx.array(self.image_out[index]),
            mx.array(self.text_out[index]),
            *(mx.array(m[index]) for m in self.modulation.values()),
            *rope,
        )


@dataclass(frozen=True)
class BlockResult:
    layers: dict[str, AdaRoundLinear]
    refs: list[LayerRef]
    adaround_mse: float
    rtn_mse: float
    seconds: float
    losses: list[float]


def _set_modulation(block: nn.Module, streams: dict, batch: tuple[mx.array, ...]) -> None:
    """Place a `BlockData.batch`'s modulation where `run_block` puts it, with its shape."""
    modulation = batch[4 : 4 + len(streams)]
    shaped = {s: m[:, None, None, :] for s, m in zip(streams, modulation, strict=True)}
    install_modulation(block, MODULATION_KEY, shaped)


def replay_batch(block: nn.Module, streams: dict, batch: tuple[mx.array, ...]):
    """The block on a `BlockData.batch`: (image out, text out or None), tokens (N, L, D)."""
    image_in, text_in = batch[:2]
    modulation = batch[4 : 4 + len(streams)]
    rope = batch[4 + len(streams)] if len(batch) > 4 + len(streams) else None
    return run_block(block, image_in, text_in, dict(zip(streams, modulation, strict=True)), rope)


def _reconstruction(block, streams, batch, reduce: Callable) -> mx.array:
    image, text = replay_batch(block, streams, batch)
    loss = reduce(image - batch[2])
    if text is not None and batch[3].shape[1] > 0:
        loss = loss + reduce(text - batch[3])
    return loss


def _per_sample_sum(diff: mx.array) -> mx.array:
    return mx.square(diff).sum(axis=(1, 2)).mean()


def reconstruction_loss(block, streams, batch: tuple[mx.array, ...]) -> mx.array:
    """The training objective without the regulariser: the squared error of the block's
    outputs against the cached ones, summed per sample, averaged over the batch."""
    return _reconstruction(block, streams, batch, _per_sample_sum)


def _mean(diff: mx.array) -> mx.array:
    return mx.square(diff).mean()


def block_mse(block, streams, data: BlockData, batch_size: int = 64) -> float:
    """Output MSE (image + text) over every cached sample, in batches."""
    total = 0.0
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        loss = _reconstruction(block, streams, data.batch(index), _mean)
        total += loss.item() * len(index)
    return total / len(data)


@contextmanager
def stream_modulation(block: nn.Module) -> Iterator[None]:
    """Restore the block's modulation after `replay_batch` installed each batch's."""
    saved = saved_modulation(block)
    try:
        yield
    finally:
        restore_modulation(block, saved)


@contextmanager
def restoring(mmdit: nn.Module, refs: list[LayerRef], layers: dict) -> Iterator[None]:
    """Put the model's own linears back after `layers` replaced them."""
    try:
        yield
    finally:
        restore_linears(mmdit, refs, layers)


def _split(grads: dict, key: str) -> dict:
    return tree_unflatten([(k, v) for k, v in tree_flatten(grads) if k.endswith(key)])


def adaround_block(
    mmdit: nn.Module,
    block_name: str,
    data: BlockData,
    config: AdaRoundConfig,
    compile_step: bool = True,
    show_progress: bool = True,
) -> BlockResult:
    """Learn W4 rounding (+ activation scales) for one block; the model is restored after.

    Returns the trained AdaRound layers (detached from the model) and both MSEs.
    """
    start = time.perf_counter()
    block = get_block(mmdit, block_name)
    streams = block_streams(mmdit, block_name)
    refs = block_layers(mmdit, block_name)
    layers = install_adaround(mmdit, refs, config.weight_config, config.bits_a)
    with stream_modulation(block), restoring(mmdit, refs, layers):
        rng = np.random.RandomState(config.seed)
        for layer in layers.values():  # activation scales: min-max over a few batches
            layer.observe = True
        for _ in range(4):
            index = rng.randint(0, len(data), min(config.batch_size, len(data)))
            mx.eval(replay_batch(block, streams, data.batch(index)))
        for layer in layers.values():
            layer.observe = False
            layer.init_act_scale()
        set_mode(layers, "rtn")
        rtn_mse = block_mse(block, streams, data)
        set_mode(layers, "soft")
        with fused_gelu(block):  # the MSEs above and below use the model's own GELU
            losses = train_rounding(
                block, streams, layers, data, config, rng, compile_step, show_progress, block_name
            )
        set_mode(layers, "hard")
        adaround_mse = block_mse(block, streams, data)
    return BlockResult(layers, refs, adaround_mse, rtn_mse, time.perf_counter() - start, losses)


def set_mode(layers: dict[str, AdaRoundLinear], mode: str) -> None:
    for layer in layers.values():
        layer.mode = mode


def _optimizers(block, config: AdaRoundConfig) -> tuple[optim.Adam, optim.Adam]:
    """Adam for the rounding logits and for the activation scales, their state made now:
    a compiled step then sees the same state tree on every call and is traced once."""
    schedule = optim.cosine_decay(config.lr_act, config.iters)
    opt_v = optim.Adam(learning_rate=config.lr, bias_correction=config.bias_correction)
    opt_act = optim.Adam(learning_rate=schedule, bias_correction=config.bias_correction)
    trainable = block.trainable_parameters()
    opt_v.init(_split(trainable, "v"))
    opt_act.init(_split(trainable, "act_scale"))
    return opt_v, opt_act


def _objective(streams, layers, regularized: bool) -> Callable:
    """`(model, batch, beta, reg_weight, share) -> (loss, reconstruction)`: the batch's
    reconstruction error weighted by `share` (its part of a larger batch), plus the
    regulariser where `regularized`."""

    def loss_fn(model, batch, beta, reg_weight, share=1.0):
        rec = reconstruction_loss(model, streams, batch) * share
        if not regularized:
            return rec, rec
        reg = sum(rounding_regularizer(layer.v, beta) for layer in layers.values())
        return rec + reg_weight * reg, rec

    return loss_fn


def make_train_step(block, streams, layers, config: AdaRoundConfig, compile_step: bool):
    """One optimisation step; returns (step_fn, state) with `step_fn(batch, beta, reg_weight)`.

    `reg_weight=None` is the warm-up step: the regulariser is left out of the graph rather
    than weighted by 0 (the same update, without computing its value and gradient). With
    `config.micro_batch`, the step is `make_accumulating_step`'s.
    """
    if config.micro_batch:
        return make_accumulating_step(block, streams, layers, config, compile_step)
    opt_v, opt_act = _optimizers(block, config)
    state = [block.state, opt_v.state, opt_act.state]

    def make_step(regularized: bool):
        loss_and_grad = nn.value_and_grad(block, _objective(streams, layers, regularized))

        def step(batch, beta, reg_weight):
            (loss, rec), grads = loss_and_grad(block, batch, beta, reg_weight)
            opt_v.update(block, _split(grads, "v"))
            if config.bits_a:
                opt_act.update(block, _split(grads, "act_scale"))
            return loss, rec

        return mx.compile(step, inputs=state, outputs=state) if compile_step else step

    steps = {True: make_step(True), False: make_step(False)}

    def step_fn(batch, beta, reg_weight):
        return steps[reg_weight is not None](batch, beta, reg_weight)

    return step_fn, state


def micro_batches(batch: tuple[mx.array, ...], streams, size: int) -> list[tuple]:
    """A `BlockData.batch` cut into batches of at most `size` samples (RoPE's table whole)."""
    per_sample = 4 + len(streams)
    count = batch[0].shape[0]
    return [
        tuple(x[start : start + size] for x in batch[:per_sample]) + batch[per_sample:]
        for start in range(0, count, size)
    ]


def make_accumulating_step(block, streams, layers, config: AdaRoundConfig, compile_step: bool):
    """`make_train_step`'s update with the batch's gradient summed over micro-batches of
    `config.micro_batch` samples, each evaluated before the next: the activations of one
    micro-batch are held at a time, not the batch's (at SD3-Medium size, batch 16 whole
    needs ~16 GB on top of the model). The regulariser enters once, with the first."""
    opt_v, opt_act = _optimizers(block, config)
    state = [block.state, opt_v.state, opt_act.state]

    def make_gradient(regularized: bool):
        loss_and_grad = nn.value_and_grad(block, _objective(streams, layers, regularized))

        def gradient(batch, beta, reg_weight, share):
            (loss, rec), grads = loss_and_grad(block, batch, beta, reg_weight, share)
            return loss, rec, grads

        # the block's state is an output too: the block call installs the batch's modulation
        modules = [block.state]
        return mx.compile(gradient, inputs=modules, outputs=modules) if compile_step else gradient

    gradients = {True: make_gradient(True), False: make_gradient(False)}

    def update(grads):
        opt_v.update(block, _split(grads, "v"))
        if config.bits_a:
            opt_act.update(block, _split(grads, "act_scale"))

    update = mx.compile(update, inputs=state, outputs=state) if compile_step else update

    def step_fn(batch, beta, reg_weight):
        count = batch[0].shape[0]
        total = None
        for index, part in enumerate(micro_batches(batch, streams, config.micro_batch)):
            regularized = reg_weight is not None and index == 0
            share = mx.array(part[0].shape[0] / count, dtype=mx.float32)
            out = gradients[regularized](part, beta, reg_weight if regularized else None, share)
            total = out if total is None else tree_map(mx.add, total, out)
            mx.eval(total)  # this micro-batch's activations are freed before the next
        loss, rec, grads = total
        update(grads)
        return loss, rec

    return step_fn, state


def train_rounding(
    block, streams, layers, data, config, rng, compile_step=True, show_progress=True, name=""
) -> list[float]:
    schedule = RoundingSchedule(config.iters, config.warmup, config.beta_start, config.beta_end)
    batch_size = min(config.batch_size, len(data))
    next_batch = data.batch(rng.randint(0, len(data), batch_size))
    # The modulation is part of the block's state, an input of the compiled step: with the
    # (micro-)batch's shape from the start, the step is traced once rather than again after
    # step 1.
    first = micro_batches(next_batch, streams, config.micro_batch or batch_size)[0]
    _set_modulation(block, streams, first)
    step_fn, state = make_train_step(block, streams, layers, config, compile_step)
    losses: list[float] = []
    bar = progress(config.iters, f"adaround {name}", unit="it") if show_progress else None
    for it in range(config.iters):
        batch = next_batch
        beta = mx.array(schedule.beta(it), dtype=mx.float32)
        reg_weight = mx.array(config.reg_weight) if schedule.regularizer_on(it) else None
        loss, rec = step_fn(batch, beta, reg_weight)
        mx.async_eval(loss, rec, state)
        next_batch = data.batch(rng.randint(0, len(data), batch_size))  # while it runs
        if it % 50 == 0 or it == config.iters - 1:
            losses.append(rec.item())
            if bar is not None:
                bar.set_postfix(rec=f"{losses[-1]:.3g}", B=f"{schedule.beta(it):.1f}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    mx.eval(state)
    return losses


def adaround_weights(
    mmdit: nn.Module, block_name: str, data: BlockData, config: AdaRoundConfig
) -> BlockWeights:
    """The method's per-block entry (`taq_run.weight_methods`): the learned rounding with
    its static activation scales."""
    result = adaround_block(mmdit, block_name, data, config)
    layers = [
        packed_layer(
            ref,
            result.layers[ref.name].codes("adaround"),
            result.layers[ref.name].grid,
            result.layers[ref.name].act_scale.item(),
        )
        for ref in result.refs
    ]
    return BlockWeights(layers, result.adaround_mse, result.rtn_mse, result.seconds)


METHOD = WeightMethod(
    name="adaround",
    label="AdaRound",
    config=AdaRoundConfig,
    quantize_block=adaround_weights,
    summary="learn each weight's rounding block by block (AdaRound), with static activation scales",
    order=90,
    target_db=3.0,  # the weight track's target: +3 dB over RTN
    subcommand="optimize",
)
