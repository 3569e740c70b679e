"""`taq-bench infer` (`python -m taq_infer.bench`): W4 vs FP32 time and memory, as ratios.

One run per preset, same prompt and seed for both models: FP32 sampling time, then the
same sampling with every quantizable linear packed to W4 by round-to-nearest (MLX's
`mx.quantize`, group 64; no store needed, so it runs at SD3 scale). Memory is measured with
MLX's counters (`mx.get_active_memory()` before and after materialising the arrays):

- quantized layers: packed codes + float16 scales/biases + bias, vs the same layers as
  float16 `nn.Linear`s (target <= 30 %),
- whole MMDiT after modulation caching (adaLN weights emptied, as DiffusionKit does while
  sampling): packed layers + the other weights kept in float16, vs the whole model in
  float16 (target <= 35 %).

On CPU the packed layers dequantize one layer at a time into a transient float32 buffer
and use the fp32 GEMM (target: W4 at least 0.8x the FP32 speed).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from dataclasses import dataclass

import mlx.core as mx
from mlx.utils import tree_flatten

from taq_infer import load_weight_set, rtn_weight_set, sampling_parameters
from taq_infer.metrics import latent_diff
from taq_model.presets import ModelHandle, load_preset
from taq_model.taxonomy import quantizable_layers
from taq_runtime.blas import blas_info

logger = logging.getLogger(__name__)

LAYER_TARGET, MODEL_TARGET, SPEED_TARGET = 0.30, 0.35, 0.80


@dataclass(frozen=True)
class InferBench:
    preset: str
    steps: int
    fp32_seconds: float
    w4_seconds: float
    layers_fp16: int
    layers_w4: int
    model_fp16: int
    model_w4: int
    diff: str
    counted_w4: tuple[int, int]  # the same W4 bytes summed from the arrays' nbytes

    @property
    def speed(self) -> float:
        return self.fp32_seconds / self.w4_seconds

    def lines(self) -> list[str]:
        mib = 2**20
        return [
            f"{self.preset} ({self.steps} step(s), CFG batch 2, same seed):",
            f"  time   FP32 {self.fp32_seconds:.3f} s  W4 packed {self.w4_seconds:.3f} s  "
            f"-> W4 speed {self.speed:.2f}x FP32 (target >= {SPEED_TARGET}x) "
            f"{_ok(self.speed >= SPEED_TARGET)}",
            f"  memory quantized layers  W4 {self.layers_w4 / mib:.1f} MiB vs float16 "
            f"{self.layers_fp16 / mib:.1f} MiB = {self.layers_w4 / self.layers_fp16:.1%} "
            f"(target <= {LAYER_TARGET:.0%}) "
            f"{_ok(self.layers_w4 <= LAYER_TARGET * self.layers_fp16)}",
            f"  memory whole MMDiT, adaLN dropped  W4 {self.model_w4 / mib:.1f} MiB vs float16 "
            f"{self.model_fp16 / mib:.1f} MiB = {self.model_w4 / self.model_fp16:.1%} "
            f"(target <= {MODEL_TARGET:.0%}) "
            f"{_ok(self.model_w4 <= MODEL_TARGET * self.model_fp16)}",
            f"  (W4 bytes summed from nbytes: layers {self.counted_w4[0] / mib:.1f} MiB, whole "
            f"{self.counted_w4[1] / mib:.1f} MiB)",
            f"  {self.diff}",
        ]


def _ok(passed: bool) -> str:
    return "ok" if passed else "MISSED"


def measured_bytes(make, arrays: list[mx.array]) -> int:
    """Bytes MLX allocates for `make(a)` of every (materialised) array: active-memory delta.

    `make` builds a new array (a cast, or a copy) so that exactly those buffers are
    allocated between the two readings of the counter.
    """
    gc.collect()
    mx.clear_cache()
    before = mx.get_active_memory()
    made = [make(a) for a in arrays]
    mx.eval(made)
    after = mx.get_active_memory()
    del made
    gc.collect()
    mx.clear_cache()
    return after - before


def _to_float16(a: mx.array) -> mx.array:
    return a.astype(mx.float16)


def _copy(a: mx.array) -> mx.array:
    return a + 0  # same dtype, new buffer


def counted_bytes(arrays) -> int:
    return sum(a.nbytes for a in arrays)


def _timed(fn, repeats: int = 1) -> tuple[float, mx.array]:
    """Best wall time of `repeats` runs, and the output."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        mx.eval(out)
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_preset(
    handle: ModelHandle, steps: int, seed: int = 0, warmup: bool = True, repeats: int = 1
) -> InferBench:
    prompt = handle.default_prompts[0]
    cfg = handle.default_cfg

    def sample(model=handle):
        return model.generate([prompt], [seed], steps, cfg)

    logger.info("%s: sampling FP32", handle.name)
    if warmup:
        mx.eval(sample())
    fp32_seconds, fp_latents = _timed(sample, repeats)

    weights = rtn_weight_set(handle)
    layer_names = set(weights.layers)
    paths = {r.path for r in quantizable_layers(handle.mmdit) if r.name in layer_names}
    fp_layers = [
        v for k, v in tree_flatten(handle.mmdit.parameters()) if k.rsplit(".", 1)[0] in paths
    ]
    fp_all = sampling_parameters(handle.mmdit)
    mx.eval(fp_all)
    layers_fp16 = measured_bytes(_to_float16, fp_layers)
    model_fp16 = measured_bytes(_to_float16, fp_all)
    del fp_layers, fp_all

    model = load_weight_set(handle, weights, scale_dtype=mx.float16, other_dtype=mx.float16)
    del weights
    packed = [v for layer in model.layers.values() for _, v in tree_flatten(layer.parameters())]
    w4_all = sampling_parameters(handle.mmdit)
    mx.eval(packed, w4_all)
    layers_w4 = measured_bytes(_copy, packed)
    model_w4 = measured_bytes(_copy, w4_all)
    counted = counted_bytes(packed), counted_bytes(w4_all)
    del packed, w4_all

    logger.info("%s: sampling W4", handle.name)
    if warmup:
        mx.eval(sample(model))
    w4_seconds, w4_latents = _timed(lambda: sample(model), repeats)
    return InferBench(
        handle.name,
        steps,
        fp32_seconds,
        w4_seconds,
        layers_fp16,
        layers_w4,
        model_fp16,
        model_w4,
        str(latent_diff(fp_latents, w4_latents)),
        counted,
    )


PRESET_STEPS = {"tiny-digits": 30, "tiny-digits-random": 30, "sd3-medium-random": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="taq-bench infer", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--presets",
        default="tiny-digits,sd3-medium-random",
        help="comma-separated; tiny-digits-random: tiny-digits' shape with random weights",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = "GPU" if mx.default_device() == mx.gpu else f"CPU ({blas_info().name} BLAS)"
    print(f"taq-bench infer on {device}; activation quantization off (weights only)")
    for name in args.presets.split(","):
        handle = tiny_digits_random() if name == "tiny-digits-random" else load_preset(name)
        steps = PRESET_STEPS.get(name, 30)
        small = name != "sd3-medium-random"
        result = bench_preset(handle, steps, args.seed, warmup=small, repeats=3 if small else 1)
        print("\n".join(result.lines()), flush=True)
        del handle
        gc.collect()
        mx.clear_cache()
    return 0


def tiny_digits_random():
    """tiny-digits' architecture (hidden 128, depth 4, 4 heads, 16x16x1) with random
    weights: the same speed and memory, for machines without the trained weights."""
    from taq_model.presets import build_random
    from taq_model.testing import tiny_config

    config = tiny_config(depth=4, hidden=128, heads=4, latent_channels=1)
    handle = build_random(config, (16, 16, 1), name="tiny-digits-random", num_tokens=4)
    handle.default_steps, handle.default_cfg = 30, 3.0
    return handle


if __name__ == "__main__":
    sys.exit(main())
