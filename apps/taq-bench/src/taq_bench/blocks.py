"""`taq-bench blocks`: one block of each real model at its real shape, W4 vs FP32, one run.

For an SD3-Medium MM block (512x512 px: 1024 image + 154 text tokens), an SD3.5 Large MM
block and a FLUX.1-schnell MM and unified block (1024x1024 px: 4096 image tokens, 154 / 256
text tokens; FLUX with its rotary positional encodings), built from DiffusionKit's configs
with random weights, batch 1 (one image; CFG doubles SD3's batch when sampling):

- forward time of the float32 block, then of the same block with every quantizable linear
  packed to W4 by round-to-nearest (MLX's `mx.quantize`, group 64, float16 scales) in
  taq-infer's `PackedLinear` (on CPU: dequantize into a transient float32 buffer + fp32 GEMM);
- resident bytes measured with MLX's memory counter: the quantizable linears W4 vs float16,
  and the whole block while sampling (adaLN emptied by modulation caching, as DiffusionKit
  does; its other weights in float16) W4 vs float16;
- a projection of the whole MMDiT from those measured block bytes: block bytes x block count
  plus the MMDiT's other parameters in float16 (from shapes). SD3's last MM block lacks the
  text stream's post-attention layers, so SD3 projections count slightly too much.

`--image-tokens N` (a square) shrinks the image sequence for a quick run; the default is
the shapes above.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict, dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from taq_infer.bench import measured_bytes
from taq_infer.packed import PackedLinear
from taq_model.blocks import (
    cache_block_modulation,
    forward_block,
    is_modulation_path,
    rope_table,
    sub_blocks,
)
from taq_model.compat import import_diffusionkit
from taq_model.families import family_config
from taq_model.presets import sd3_config
from taq_model.taxonomy import STREAM_ATTR, get_module, sub_block_roles

BLOCK_PREFIXES = ("multimodal_transformer_blocks", "unified_transformer_blocks")


class BlocksError(ValueError):
    """Bad `taq-bench blocks` arguments; the message names the fix."""


@dataclass(frozen=True)
class BlockShape:
    name: str
    model: str  # sd3-medium | sd3.5-large | flux-schnell
    kind: str  # mm | uni
    pixels: int
    text_tokens: int

    @property
    def image_tokens(self) -> int:
        return (self.pixels // 16) ** 2  # VAE /8, patch 2


SHAPES = {
    s.name: s
    for s in (
        BlockShape("sd3-medium-mm", "sd3-medium", "mm", 512, 154),
        BlockShape("sd3.5-large-mm", "sd3.5-large", "mm", 1024, 154),
        BlockShape("flux-mm", "flux-schnell", "mm", 1024, 256),
        BlockShape("flux-uni", "flux-schnell", "uni", 1024, 256),
    )
}


def model_config(model: str):
    return sd3_config() if model == "sd3-medium" else family_config(model)


@dataclass(frozen=True)
class BlockResult:
    shape: str
    model: str
    kind: str
    image_tokens: int
    text_tokens: int
    hidden: int
    fp32_seconds: float
    w4_seconds: float
    linears_fp16: int
    linears_w4: int
    block_fp16: int
    block_w4: int
    relative_error: float  # |W4 - FP32| / |FP32| over the block's image output

    @property
    def speed(self) -> float:
        return self.fp32_seconds / self.w4_seconds

    def as_dict(self) -> dict:
        return {**asdict(self), "speed": self.speed}


@dataclass(frozen=True)
class Projection:
    model: str
    blocks: str
    w4_bytes: int
    fp16_bytes: int

    @property
    def ratio(self) -> float:
        return self.w4_bytes / self.fp16_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def _linear_paths(block: nn.Module) -> list[str]:
    """The taxonomy's quantizable linears of one block, as paths inside the block."""
    paths = []
    for stream, sub in sub_blocks(block).items():
        paths += [f"{STREAM_ATTR[stream]}.{role}" for role in sub_block_roles(sub)]
    return paths


def _sampling_arrays(block: nn.Module) -> list[mx.array]:
    return [v for k, v in tree_flatten(block.parameters()) if not is_modulation_path(k)]


def _inputs(config, shape: BlockShape, image_tokens: int, kind: str, seed: int):
    side = math.isqrt(image_tokens)
    keys = mx.random.split(mx.random.key(seed), 3)
    hidden = config.hidden_size
    image = mx.random.normal((1, image_tokens, 1, hidden), key=keys[0])
    text = mx.random.normal((1, shape.text_tokens, 1, hidden), key=keys[1])
    modulation = mx.random.normal((1, 1, 1, hidden), key=keys[2])
    rope = rope_table(config, shape.text_tokens, (side, side))
    inputs = (image, text) if kind == "mm" else (mx.concatenate([text, image], axis=1),)
    mx.eval(inputs, modulation, rope)
    return inputs, modulation, rope


def _build_block(config, kind: str, modulation: mx.array, timestep: mx.array, seed: int):
    """The block with random weights and its modulation cached for `timestep` (adaLN
    emptied afterwards, as DiffusionKit's modulation caching does)."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MultiModalTransformerBlock, UnifiedTransformerBlock

    mx.random.seed(seed)
    block = MultiModalTransformerBlock(config) if kind == "mm" else UnifiedTransformerBlock(config)
    mx.eval(block.parameters())
    cache_block_modulation(block, modulation, timestep)
    return block


def _timed_forward(block, inputs, timestep, rope) -> tuple[float, mx.array]:
    start = time.perf_counter()
    out = forward_block(block, inputs, timestep, rope)
    out = out[0] if isinstance(out, tuple) else out
    mx.eval(out)
    return time.perf_counter() - start, out


def _warm_up(block, config, shape: BlockShape, kind: str, timestep) -> None:
    """Compile and allocate once at 16 image tokens (kernels depend on weight shapes)."""
    inputs, _, rope = _inputs(config, shape, 16, kind, seed=99)
    _timed_forward(block, inputs, timestep, rope)


def _pack(block: nn.Module, paths: list[str]) -> list[PackedLinear]:
    packed = [PackedLinear.from_linear(get_module(block, p), scale_dtype=mx.float16) for p in paths]
    block.update_modules(tree_unflatten(list(zip(paths, packed, strict=True))))
    others = [
        (k, v.astype(mx.float16))
        for k, v in tree_flatten(block.parameters())
        if not is_modulation_path(k)
        and mx.issubdtype(v.dtype, mx.floating)
        and k.rsplit(".", 1)[0] not in paths
    ]
    block.load_weights(others, strict=False)
    mx.eval(block.parameters())
    return packed


def bench_block(
    shape: BlockShape, image_tokens: int | None = None, seed: int = 0, config=None
) -> BlockResult:
    """Measure `shape`'s block; `config` replaces its model's DiffusionKit config (tests)."""
    config = config or model_config(shape.model)
    image_tokens = image_tokens or shape.image_tokens
    timestep = mx.array([500.0])
    inputs, modulation, rope = _inputs(config, shape, image_tokens, shape.kind, seed)
    block = _build_block(config, shape.kind, modulation, timestep, seed)
    paths = _linear_paths(block)

    linears = [v for p in paths for _, v in tree_flatten(get_module(block, p).parameters())]
    linears_fp16 = measured_bytes(lambda a: a.astype(mx.float16), linears)
    block_fp16 = measured_bytes(lambda a: a.astype(mx.float16), _sampling_arrays(block))
    del linears

    _warm_up(block, config, shape, shape.kind, timestep)
    fp32_seconds, fp_out = _timed_forward(block, inputs, timestep, rope)

    packed = _pack(block, paths)
    packed_arrays = [v for layer in packed for _, v in tree_flatten(layer.parameters())]
    linears_w4 = measured_bytes(lambda a: a + 0, packed_arrays)
    block_w4 = measured_bytes(lambda a: a + 0, _sampling_arrays(block))
    del packed, packed_arrays

    _warm_up(block, config, shape, shape.kind, timestep)
    w4_seconds, w4_out = _timed_forward(block, inputs, timestep, rope)
    error = (mx.linalg.norm(w4_out - fp_out) / mx.linalg.norm(fp_out)).item()
    result = BlockResult(
        shape.name,
        shape.model,
        shape.kind,
        image_tokens,
        shape.text_tokens,
        config.hidden_size,
        fp32_seconds,
        w4_seconds,
        linears_fp16,
        linears_w4,
        block_fp16,
        block_w4,
        error,
    )
    del block, inputs, fp_out, w4_out
    gc.collect()
    mx.clear_cache()
    return result


def _other_fp16_bytes(config) -> int:
    """The MMDiT's parameters outside its blocks (adaLN aside), in float16, from shapes."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MMDiT

    return sum(
        v.size * 2
        for k, v in tree_flatten(MMDiT(config).parameters())
        if not k.startswith(BLOCK_PREFIXES) and not is_modulation_path(k)
    )


def project_models(results: list[BlockResult], configs: dict | None = None) -> list[Projection]:
    """Whole-MMDiT bytes implied by the measured blocks: a projection, not a measurement.

    `configs` (model -> config) replaces the models' DiffusionKit configs (tests)."""
    by_model: dict[str, dict[str, BlockResult]] = {}
    for r in results:
        by_model.setdefault(r.model, {})[r.kind] = r
    projections = []
    for model, kinds in by_model.items():
        config = (configs or {}).get(model) or model_config(model)
        counts = {"mm": config.depth_multimodal, "uni": config.depth_unified}
        if any(counts[k] and k not in kinds for k in counts):
            continue  # a block kind of this model was not measured
        other = _other_fp16_bytes(config)
        w4 = other + sum(counts[k] * r.block_w4 for k, r in kinds.items())
        fp16 = other + sum(counts[k] * r.block_fp16 for k, r in kinds.items())
        label = " + ".join(f"{counts[k]} {k}" for k in ("mm", "uni") if counts[k])
        projections.append(Projection(model, label, w4, fp16))
    return projections


def parse_shapes(text: str) -> list[BlockShape]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SHAPES]
    if unknown or not names:
        raise BlocksError(
            f"unknown block shape(s) {', '.join(unknown) or '(none)'}: choose from "
            f"{', '.join(SHAPES)}"
        )
    return [SHAPES[n] for n in names]


def check_image_tokens(tokens: int | None) -> None:
    if tokens is not None and (tokens < 4 or math.isqrt(tokens) ** 2 != tokens):
        raise BlocksError(
            f"--image-tokens {tokens} is not a square of at least 4 (the latent grid is "
            "square): use e.g. 256 or 1024"
        )


def header() -> str:
    return (
        f"{'block':<16}{'tokens img+txt':>15}{'FP32 s':>9}{'W4 s':>8}{'W4 speed':>10}"
        f"{'linears W4/fp16 MiB':>24}{'block W4/fp16 MiB':>24}{'rel err':>9}"
    )


def row(r: BlockResult) -> str:
    mib = 2**20
    return (
        f"{r.shape:<16}{f'{r.image_tokens}+{r.text_tokens}':>15}{r.fp32_seconds:>9.2f}"
        f"{r.w4_seconds:>8.2f}{r.speed:>9.2f}x"
        f"{f'{r.linears_w4 / mib:.1f}/{r.linears_fp16 / mib:.1f}':>16}"
        f"{r.linears_w4 / r.linears_fp16:>7.1%} "
        f"{f'{r.block_w4 / mib:.1f}/{r.block_fp16 / mib:.1f}':>16}"
        f"{r.block_w4 / r.block_fp16:>7.1%} {r.relative_error:>8.4f}"
    )


def projection_lines(projections: list[Projection]) -> list[str]:
    if not projections:
        return []
    out = [
        "projection (not measured): whole MMDiT while sampling = measured block bytes x "
        "block count + other parameters in float16"
    ]
    for p in projections:
        out.append(
            f"  {p.model:<14}{p.blocks:<16} W4 {p.w4_bytes / 1e9:6.2f} GB  float16 "
            f"{p.fp16_bytes / 1e9:6.2f} GB  = {p.ratio:.1%}"
        )
    return out
