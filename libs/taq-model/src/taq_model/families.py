"""Real-weight presets of DiffusionKit's larger families: SD3.5 Large and FLUX.1-schnell.

| preset         | config         | blocks             | positions     | tokens x width, pooled |
|----------------|----------------|--------------------|---------------|------------------------|
| `sd3.5-large`  | `SD3_8b`       | 38 mm, QK RMSNorm  | learned table | 154 x 4096, 2048       |
| `flux-schnell` | `FLUX_SCHNELL` | 19 mm + 38 unified | RoPE          | 256 x 4096 (T5), 768   |

Weights come only from `--local-ckpt` or the local Hugging Face cache; nothing is downloaded
at run time, and a missing file is refused naming the file to fetch. Both models are far
larger than SD3-Medium (8.1 B and 11.9 B MMDiT parameters: 32.6 GB and 47.6 GB in float32,
the precision every taq stage computes in on CPU), so a run whose float32 MMDiT exceeds
this machine's memory is refused before anything is read.

`family_config` is the float32 DiffusionKit config a preset builds; `tiny_family_config`
keeps its block kinds, positional encodings, QK-norm and conditioning shapes at toy width,
so tests run the same sampling path (`build_family_random`) on CPU in seconds;
`wide_family_config` keeps the real width with two blocks of each kind, so a benchmark runs
every stage at the real block size on a machine that cannot hold the whole model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from taq_model.compat import import_diffusionkit
from taq_model.options import ModelOptions, missing_t5_files
from taq_model.presets import (
    SD3_PROMPTS,
    SD3_TOKENS,
    Conditioning,
    ModelError,
    RandomHandle,
    Sd3Handle,
    build_random,
    file_id,
)

CLIP_L_FILES = (
    "clip_l/config.json",
    "clip_l/model.fp16.safetensors",
    "tokenizer_l/vocab.json",
    "tokenizer_l/merges.txt",
)
CLIP_G_FILES = (
    "clip_g/config.json",
    "clip_g/model.fp16.safetensors",
    "tokenizer_g/vocab.json",
    "tokenizer_g/merges.txt",
)
ENCODER_REPO = "argmaxinc/stable-diffusion"


@dataclass(frozen=True)
class Family:
    """What a real-weight preset needs beyond its DiffusionKit config."""

    preset: str
    config_name: str  # attribute of diffusionkit.mlx.config
    repo: str  # DiffusionKit's model version = Hugging Face repo of the MMDiT file
    checkpoint: str  # the MMDiT file in that repo (what --local-ckpt points at)
    pixels: tuple[int, int]
    num_tokens: int  # token-level conditioning length
    default_steps: int
    default_cfg: float
    shift: float
    schedule: str  # "discrete-flow" (SD3) | "flux" (DiffusionKit's FluxSampler)
    always_t5: bool  # FLUX conditions on T5 only
    cache_files: tuple[tuple[str, str], ...]  # (repo, file) read from the HF cache

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.pixels[0] // 8, self.pixels[1] // 8, 16)


FAMILIES = {
    "sd3.5-large": Family(
        preset="sd3.5-large",
        config_name="SD3_8b",
        repo="argmaxinc/mlx-stable-diffusion-3.5-large",
        checkpoint="sd3.5_large.safetensors",
        pixels=(1024, 1024),
        num_tokens=SD3_TOKENS,
        default_steps=28,
        default_cfg=3.5,
        shift=3.0,
        schedule="discrete-flow",
        always_t5=False,
        cache_files=(
            ("argmaxinc/mlx-stable-diffusion-3.5-large", "config.json"),
            *((ENCODER_REPO, f) for f in CLIP_L_FILES + CLIP_G_FILES),
        ),
    ),
    "flux-schnell": Family(
        preset="flux-schnell",
        config_name="FLUX_SCHNELL",
        repo="argmaxinc/mlx-FLUX.1-schnell",
        checkpoint="flux-schnell.safetensors",
        pixels=(1024, 1024),
        num_tokens=256,
        default_steps=4,
        default_cfg=0.0,
        shift=1.0,
        schedule="flux",
        always_t5=True,
        cache_files=(
            ("argmaxinc/mlx-FLUX.1-schnell", "config.json"),
            ("argmaxinc/mlx-FLUX.1-schnell", "ae.safetensors"),
            *((ENCODER_REPO, f) for f in CLIP_L_FILES),
        ),
    ),
}


def family_config(name: str, **overrides):
    """DiffusionKit's config of `name` in float32 (taq computes in float32 on CPU)."""
    import_diffusionkit()
    from diffusionkit.mlx import config as dk_config

    base = getattr(dk_config, FAMILIES[name].config_name)
    return dataclasses.replace(
        base, dtype=mx.float32, float16_dtype=mx.float32, low_memory_mode=False, **overrides
    )


def tiny_family_config(name: str):
    """`name`'s block kinds, positional encodings, QK-norm and conditioning widths at toy
    size: 2 blocks of each kind, hidden 64, 2 heads (RoPE axes 8 + 12 + 12 = head dim 32)."""
    config = family_config(name)
    rope = (8, 12, 12) if config.rope_axes_dim else None
    return dataclasses.replace(
        config,
        num_heads=2,
        depth_multimodal=2,
        depth_unified=2 if config.depth_unified else 0,
        hidden_size_override=64,
        rope_axes_dim=rope,
        upcast_multimodal_blocks=None,
        upcast_unified_blocks=None,
        max_latent_resolution=16,
    )


WIDE_SUFFIX = "-wide"
WIDE_PIXELS = (512, 512)  # 1024 image tokens: a block costs what it does at SD3-Medium's size
WIDE_DEPTH = 2  # blocks of each kind the family has


def wide_family_config(name: str):
    """`name`'s real config (width, heads, QK-norm, RoPE, conditioning widths) with only
    `WIDE_DEPTH` blocks of each kind: every stage at the real block size, in a few GB."""
    config = family_config(name)
    return dataclasses.replace(
        config,
        depth_multimodal=WIDE_DEPTH,
        depth_unified=WIDE_DEPTH if config.depth_unified else 0,
        hidden_size_override=config.hidden_size,  # DiffusionKit derives it from the depth
        upcast_multimodal_blocks=None,
        upcast_unified_blocks=None,
    )


def wide_family_handle(
    name: str, options: ModelOptions | None = None, seed: int = 0
) -> RandomHandle:
    """`wide_family_config(name)` with seeded random weights at `options`' pixels (default
    512x512); the presets `sd3.5-large-wide` and `flux-schnell-wide`."""
    options = options or ModelOptions()
    if options.t5:
        raise ModelError(f"{name}{WIDE_SUFFIX} has seeded pseudo-embeddings: drop --t5")
    latents = (WIDE_PIXELS[0] // 8, WIDE_PIXELS[1] // 8, 16)
    preset = options.spec(name + WIDE_SUFFIX, WIDE_PIXELS)
    config = wide_family_config(name)
    return build_family_random(name, config, options.latent_shape(latents), seed, preset)


def build_family_random(
    name: str,
    config,
    latent_shape: tuple[int, int, int],
    seed: int = 0,
    preset: str | None = None,
):
    """A `RandomHandle` of `config` sampled as `name` is: its steps, CFG, shift, schedule and
    conditioning length (tests at toy size, benchmarks at real size)."""
    family = FAMILIES[name]
    return build_random(
        config,
        latent_shape,
        name=preset or f"{name}-random",
        num_tokens=family.num_tokens,
        seed=seed,
        shift=family.shift,
        steps=family.default_steps,
        cfg=family.default_cfg,
        schedule=family.schedule,
    )


TINY_SUFFIX = "-tiny"


def tiny_family_handle(name: str, seed: int = 1) -> RandomHandle:
    """`tiny_family_config(name)` with seeded random weights on 8x8x16 latents; also the
    presets `sd3.5-large-tiny` and `flux-schnell-tiny`, so every stage can rebuild it."""
    config = tiny_family_config(name)
    return build_family_random(name, config, (8, 8, 16), seed, preset=name + TINY_SUFFIX)


def float32_bytes(config) -> int:
    """Bytes of the MMDiT's parameters in float32, from shapes (MLX builds them lazily)."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MMDiT

    return sum(value.size for _, value in tree_flatten(MMDiT(config).parameters())) * 4


CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory() -> int:
    """This machine's memory, or the container's limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_fits(family: Family, available: int | None = None) -> None:
    """Refuse a whole-model run whose float32 MMDiT alone exceeds this machine's memory."""
    needed = float32_bytes(family_config(family.preset))
    available = physical_memory() if available is None else available
    if needed > available:
        raise ModelError(
            f"{family.preset}'s MMDiT alone needs {needed / 1e9:.1f} GB in float32 "
            f"({needed // 4 / 1e9:.1f} B parameters), more than this machine's "
            f"{available / 2**30:.1f} GiB of memory: run it on a machine with more memory "
            "(`taq-bench blocks` measures its blocks here)"
        )


def _fetch_hint(repo: str, files: Sequence[str]) -> str:
    return f"`huggingface-cli download {repo} {' '.join(files)}`"


def find_checkpoint(family: Family, local_ckpt: str | None) -> Path:
    """`--local-ckpt`, else the MMDiT file in the local Hugging Face cache; never a download."""
    from huggingface_hub import try_to_load_from_cache

    wanted = f"{family.repo}/{family.checkpoint}"
    fetch = (
        f"fetch it on a machine with network ({_fetch_hint(family.repo, [family.checkpoint])}) "
        "and pass --local-ckpt PATH"
    )
    if local_ckpt:
        path = Path(local_ckpt)
        if not path.is_file():
            raise ModelError(
                f"checkpoint {local_ckpt} does not exist; {family.preset} needs {wanted}: {fetch}"
            )
        return path
    cached = try_to_load_from_cache(family.repo, family.checkpoint)
    if not isinstance(cached, str):
        raise ModelError(
            f"{family.preset} needs its weights {wanted}, which are never downloaded at run "
            f"time and are not in the local Hugging Face cache: {fetch}"
        )
    return Path(cached)


def _check_cache(family: Family, t5: bool) -> None:
    from huggingface_hub import try_to_load_from_cache

    missing = [
        f"{repo}/{name}"
        for repo, name in family.cache_files
        if not isinstance(try_to_load_from_cache(repo, name), str)
    ]
    if t5:
        missing += missing_t5_files()
    if missing:
        raise ModelError(
            f"{family.preset} reads its text encoders and configs from the local Hugging Face "
            f"cache, which lacks {', '.join(missing)} (nothing is downloaded at run time): "
            "fetch them on a machine with network (`huggingface-cli download REPO FILE`)"
        )


@dataclass
class FluxHandle(Sd3Handle):
    """FLUX.1 through DiffusionKit's FluxPipeline: T5 tokens, CLIP-L pooled, no negative."""

    def encode(self, prompts: Sequence[str], negative: str = "") -> Conditioning:
        self.validate_prompts(prompts)
        pairs = [self.pipeline.encode_text(p, cfg_weight=0.0) for p in prompts]
        neg_tokens, neg_pooled = self.pipeline.encode_text(negative, cfg_weight=0.0)
        return Conditioning(
            mx.concatenate([t for t, _ in pairs]),
            mx.concatenate([p for _, p in pairs]),
            neg_tokens,
            neg_pooled,
        )


def _flux_pipeline(dk, checkpoint: Path):
    """FluxPipeline with the MMDiT from `checkpoint` and the VAE from the cache: DiffusionKit's
    own `local_ckpt` would also read the VAE from the MMDiT file, which lacks it."""
    from diffusionkit.mlx import model_io

    class LocalFlux(dk.FluxPipeline):
        def load_mmdit(self, only_modulation_dict=False):
            model_io.LOCAl_SD3_CKPT = str(checkpoint)
            try:
                return super().load_mmdit(only_modulation_dict)
            finally:
                model_io.LOCAl_SD3_CKPT = None

    return LocalFlux(shift=1.0, low_memory_mode=False, local_ckpt=None)


def build_family(
    name: str,
    local_ckpt: str | None = None,
    options: ModelOptions | None = None,
    available_memory: int | None = None,
) -> Sd3Handle:
    """A real-weight preset: checkpoint found, memory checked, encoders present, then built."""
    family = FAMILIES[name]
    options = options or ModelOptions()
    if family.always_t5:
        options = dataclasses.replace(options, t5=False)  # always on: not part of the name
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    checkpoint = find_checkpoint(family, local_ckpt)
    check_fits(family, available_memory)
    _check_cache(family, t5=family.always_t5 or options.t5)
    dk = import_diffusionkit()
    try:
        if family.schedule == "flux":
            pipeline, handle_type = _flux_pipeline(dk, checkpoint), FluxHandle
        else:
            pipeline = dk.DiffusionPipeline(
                shift=family.shift,
                use_t5=options.t5,
                model_version=family.repo,
                low_memory_mode=False,
                local_ckpt=str(checkpoint),
            )
            handle_type = Sd3Handle
    except Exception as err:  # any unreadable file surfaces as a hub/OS/load error
        raise ModelError(
            f"{family.preset} could not load {checkpoint} ({type(err).__name__}: {err}); "
            f"it must be DiffusionKit's MLX checkpoint {family.repo}/{family.checkpoint}"
        ) from None
    return handle_type(
        name=options.spec(family.preset, family.pixels),
        mmdit=pipeline.mmdit,
        latent_shape=options.latent_shape(family.latent_shape),
        default_steps=family.default_steps,
        default_cfg=family.default_cfg,
        shift=family.shift,
        default_prompts=list(SD3_PROMPTS),
        weights_id=file_id(checkpoint),
        schedule=family.schedule,
        pipeline=pipeline,
    )


__all__ = [
    "FAMILIES",
    "Family",
    "build_family",
    "build_family_random",
    "check_fits",
    "family_config",
    "float32_bytes",
    "tiny_family_config",
    "tiny_family_handle",
    "TINY_SUFFIX",
    "wide_family_config",
    "wide_family_handle",
    "WIDE_SUFFIX",
]
