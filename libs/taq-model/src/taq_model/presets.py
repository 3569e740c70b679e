"""Model presets: one interface to build an MMDiT, encode prompts, sample and show results.

| preset              | what                                                          |
|---------------------|---------------------------------------------------------------|
| `tiny-digits`       | small MMDiT trained in this repo on scikit-learn's digits     |
| `sd3-medium-random` | SD3-2b MMDiT config, seeded random weights (speed/memory only) |
| `sd3-medium`        | real SD3-Medium from a local checkpoint or the HF cache       |
| `sd3.5-large`       | real SD3.5 Large (`--local-ckpt`; `families.py`)               |
| `flux-schnell`      | real FLUX.1-schnell (`--local-ckpt`; `families.py`)            |
| `*-tiny`            | those two families at toy size, random weights (tests)         |
| `*-wide`            | those two at their real width, 2 blocks of each kind, 512 px  |

Other installed packages add presets through the `taq.presets` entry-point group (name ->
a builder taking the weights path or None): `tiny-shapes` comes from taq-shapes that way,
because its data set and trainer live there and taq-model cannot import them.

Only construction and conditioning differ; sampling, hooks and artifacts are shared.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from taq_model.blocks import is_modulation_path, modulation_parameters
from taq_model.compat import import_diffusionkit
from taq_model.options import ModelOptions, OptionsError, merge, missing_t5_files, parse_spec
from taq_model.sampling import (
    Conditioning,
    StepCallback,
    flux_sigma_schedule,
    initial_noise,
    sample_euler,
    sigma_schedule,
)
from taq_runtime.cli import UsageError

DEFAULT_PRESET = "tiny-digits"


class ModelError(UsageError):
    """A model cannot be built or used as asked; the message says how to fix it."""


def config_dict(config, *, bare_dtypes: bool = False) -> dict:
    """A DiffusionKit config dataclass (`MMDiTConfig`) as JSON values: enums by name, dtypes
    as text. The model identity hashes the full dtype name (`mlx.core.float32`), so that no
    store's identity changes; checkpoints record the bare one (`bare_dtypes`: `float32`)."""
    out = {}
    for item in fields(config):
        key, value = item.name, getattr(config, item.name)
        if isinstance(value, Enum):
            value = value.name
        elif isinstance(value, mx.Dtype):
            value = str(value).removeprefix("mlx.core.") if bare_dtypes else str(value)
        out[key] = value
    return out


@dataclass
class ModelHandle(ABC):
    """A built preset: the MMDiT plus what every stage needs around it."""

    name: str
    mmdit: nn.Module
    latent_shape: tuple[int, int, int]  # (H, W, C)
    default_steps: int
    default_cfg: float
    shift: float
    default_prompts: list[str]
    weights_id: str  # identifies the weights (file hash or seed)
    schedule: str = "discrete-flow"  # sigma schedule: SD3's, or "flux" (FluxSampler's)

    @property
    def identity_config(self) -> dict:
        """What identifies this model: a store records its hash (`taq_run.model_identity`)
        and refuses another model."""
        payload = {
            "preset": self.name,
            "mmdit": config_dict(self.mmdit.config),
            "latent_shape": list(self.latent_shape),
            "shift": self.shift,
            "weights": self.weights_id,
        }
        if self.schedule != "discrete-flow":  # earlier stores' identities stay as they were
            payload["schedule"] = self.schedule
        return payload

    def sigmas(self, num_steps: int | None = None) -> mx.array:
        """The `num_steps + 1` sigmas this model samples along (DiffusionKit's schedule)."""
        num_steps = num_steps or self.default_steps
        if self.schedule == "flux":
            return flux_sigma_schedule(num_steps, self.shift)
        return sigma_schedule(num_steps, self.shift)

    @abstractmethod
    def encode(self, prompts: Sequence[str], negative: str = "") -> Conditioning:
        """Token-level and pooled conditioning of `prompts` (and the negative prompt)."""

    @abstractmethod
    def modulation_weights(self) -> list[tuple[str, mx.array]]:
        """The adaLN weights from their source (file or seed), as (path, array) pairs."""

    def reload_modulation_weights(self) -> None:
        """Put back the adaLN weights that modulation caching emptied."""
        self.mmdit.load_weights(self.modulation_weights(), strict=False)
        mx.eval(self.mmdit.parameters())

    @abstractmethod
    def to_images(self, latents: mx.array) -> np.ndarray:
        """Final latents (N, H, W, C) -> uint8 images (N, h, w, 1 or 3)."""

    def validate_prompts(self, prompts: Sequence[str]) -> None:
        if not prompts:
            raise ModelError("no prompts given: pass at least one prompt")
        for prompt in prompts:
            if not prompt.strip():
                raise ModelError("empty prompt: every prompt needs text")

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_steps: int | None = None,
        cfg: float | None = None,
        on_step: StepCallback | None = None,
    ) -> mx.array:
        """Final latents (N, H, W, C), one sampling run per (prompt, seed); `on_step(i, x_i)`
        sees each step's input (how quantized layers learn the current step)."""
        num_steps = num_steps or self.default_steps
        cfg = self.default_cfg if cfg is None else cfg
        sigmas = self.sigmas(num_steps)
        finals = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            conditioning = self.encode([prompt])
            noise = initial_noise(seed, self.latent_shape)
            finals.append(sample_euler(self, conditioning, noise, sigmas, cfg, on_step))
        return mx.concatenate(finals)


@dataclass
class LabelConditionedHandle(ModelHandle):
    """A trained toy preset: prompts parse to label indices, a learned conditioner embeds them,
    and the weights file holds the MMDiT (adaLN included) under `mmdit.`."""

    conditioner: nn.Module | None = None
    weights_path: Path | None = None

    def labels(self, prompt: str):
        """The conditioner's labels of one prompt; a ValueError naming the grammar otherwise."""
        raise NotImplementedError

    def validate_prompts(self, prompts: Sequence[str]) -> None:
        super().validate_prompts(prompts)
        for prompt in prompts:
            try:
                self.labels(prompt)
            except ValueError as err:
                raise ModelError(str(err)) from None

    def encode(self, prompts: Sequence[str], negative: str = "") -> Conditioning:
        self.validate_prompts(prompts)
        tokens, pooled = self.conditioner(mx.array([self.labels(p) for p in prompts]))
        neg_tokens, neg_pooled = self.conditioner(mx.array([self.labels(negative)]))
        return Conditioning(tokens, pooled, neg_tokens, neg_pooled)

    def modulation_weights(self) -> list[tuple[str, mx.array]]:
        weights = mx.load(str(self.weights_path))
        return [
            (k.removeprefix("mmdit."), v.astype(mx.float32))
            for k, v in weights.items()
            if k.startswith("mmdit.") and is_modulation_path(k)
        ]


@dataclass
class TinyDigitsHandle(LabelConditionedHandle):
    def labels(self, prompt: str) -> int:
        from taq_model.digits import parse_digit_prompt

        return parse_digit_prompt(prompt)

    def to_images(self, latents: mx.array) -> np.ndarray:
        pixels = (np.clip(np.array(latents, dtype=np.float32), -1, 1) + 1) * 127.5
        return pixels.round().astype(np.uint8)


def file_id(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def build_tiny_digits(weights_path: str | os.PathLike | None = None) -> TinyDigitsHandle:
    from taq_model import digits

    path = Path(weights_path) if weights_path else digits.TINY_DIGITS_WEIGHTS
    if not path.exists():
        raise ModelError(
            f"tiny-digits weights not found at {path}: train them with "
            "`taq-model train-tiny-digits --output PATH`"
        )
    mmdit, conditioner = digits.load_tiny_digits(path)
    return TinyDigitsHandle(
        name="tiny-digits",
        mmdit=mmdit,
        latent_shape=(16, 16, 1),
        default_steps=30,
        default_cfg=3.0,
        shift=1.0,
        default_prompts=list(digits.DIGIT_PROMPTS),
        weights_id=file_id(path),
        conditioner=conditioner,
        weights_path=path,
    )


SD3_TOKENS = 154  # 77 CLIP + 77 T5 tokens
SD3_PROMPTS = [
    "a photo of a cat sitting on a windowsill",
    "a red sports car on a mountain road at sunset",
    "a bowl of fruit on a wooden table, studio lighting",
    "an astronaut riding a horse, digital art",
]


def sd3_config():
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig

    return MMDiTConfig(
        depth_multimodal=24,
        num_heads=24,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )


def _seeded(seed: int, path: str) -> mx.array:
    digest = hashlib.sha256(f"{seed}:{path}".encode()).digest()
    return mx.random.key(int.from_bytes(digest[:4], "little"))


def _random_value(seed: int, path: str, shape: tuple[int, ...]) -> mx.array:
    """Per-parameter seeded init (matrices N(0, 0.02), vectors 0): regenerable one by one."""
    if len(shape) < 2:
        return mx.zeros(shape)
    return mx.random.normal(shape, key=_seeded(seed, path)) * 0.02


@dataclass
class RandomHandle(ModelHandle):
    """Any MMDiT config with seeded random weights and seeded pseudo-embeddings."""

    seed: int = 0
    num_tokens: int = SD3_TOKENS
    _adaln_shapes: list = field(default_factory=list, repr=False)

    def encode(self, prompts: Sequence[str], negative: str = "") -> Conditioning:
        """Seeded pseudo-embeddings per prompt: real shapes, no meaning."""
        self.validate_prompts(prompts)
        config = self.mmdit.config

        def embed(text: str) -> tuple[mx.array, mx.array]:
            key = _seeded(self.seed, "prompt:" + text)
            k1, k2 = mx.random.split(key)
            shape = (1, self.num_tokens, config.token_level_text_embed_dim)
            tokens = mx.random.normal(shape, key=k1)
            pooled = mx.random.normal((1, config.pooled_text_embed_dim), key=k2)
            return tokens, pooled

        pairs = [embed(p) for p in prompts]
        neg_tokens, neg_pooled = embed(negative)
        return Conditioning(
            mx.concatenate([t for t, _ in pairs]),
            mx.concatenate([p for _, p in pairs]),
            neg_tokens,
            neg_pooled,
        )

    def modulation_weights(self) -> list[tuple[str, mx.array]]:
        return [(path, _random_value(self.seed, path, shape)) for path, shape in self._adaln_shapes]

    def to_images(self, latents: mx.array) -> np.ndarray:
        """First three latent channels, min-max scaled (random weights: no image meaning)."""
        x = np.array(latents[..., :3], dtype=np.float32)
        lo, hi = x.min(), x.max()
        return ((x - lo) / max(hi - lo, 1e-8) * 255).round().astype(np.uint8)


def build_random(
    config,
    latent_shape: tuple[int, int, int],
    *,
    name: str = "random",
    num_tokens: int = SD3_TOKENS,
    seed: int = 0,
    shift: float = 3.0,
    steps: int = 28,
    cfg: float = 5.0,
    schedule: str = "discrete-flow",
) -> RandomHandle:
    """An MMDiT of any `MMDiTConfig` with seeded random weights (tests, benchmarks)."""
    import_diffusionkit()
    from diffusionkit.mlx.mmdit import MMDiT

    mmdit = MMDiT(config)
    params = tree_flatten(mmdit.parameters())
    mmdit.load_weights([(path, _random_value(seed, path, v.shape)) for path, v in params])
    mx.eval(mmdit.parameters())
    handle = RandomHandle(
        name=name,
        mmdit=mmdit,
        latent_shape=latent_shape,
        default_steps=steps,
        default_cfg=cfg,
        shift=shift,
        default_prompts=list(SD3_PROMPTS),
        weights_id=f"seed:{seed}",
        schedule=schedule,
        seed=seed,
        num_tokens=num_tokens,
    )
    handle._adaln_shapes = [(k, v.shape) for k, v in modulation_parameters(mmdit)]
    return handle


@dataclass
class Sd3Handle(ModelHandle):
    pipeline: object = None  # a DiffusionKit DiffusionPipeline with encoders and VAE

    def encode(self, prompts: Sequence[str], negative: str = "") -> Conditioning:
        self.validate_prompts(prompts)
        tokens, pooled = [], []
        neg = None
        for prompt in prompts:
            cond, pool = self.pipeline.encode_text(prompt, cfg_weight=2.0, negative_text=negative)
            tokens.append(cond[:1])
            pooled.append(pool[:1])
            neg = (cond[1:], pool[1:])
        return Conditioning(mx.concatenate(tokens), mx.concatenate(pooled), *neg)

    def modulation_weights(self) -> list[tuple[str, mx.array]]:
        return self.pipeline.load_mmdit(only_modulation_dict=True)

    def to_images(self, latents: mx.array) -> np.ndarray:
        latents = self.pipeline.latent_format.process_out(latents)
        images = self.pipeline.decode_latents_to_image(latents)
        return (np.array(images) * 255).round().astype(np.uint8)


SD3_HELP = (
    "sd3-medium needs the SD3-Medium weights, which are never downloaded at run time: "
    "pass --local-ckpt /path/to/sd3_medium.safetensors (DiffusionKit's MLX checkpoint "
    "argmaxinc/mlx-stable-diffusion-3-medium), with the CLIP text encoders in the Hugging "
    "Face cache (`huggingface-cli download argmaxinc/stable-diffusion` on a machine with "
    "network)"
)


def _check_t5() -> None:
    missing = missing_t5_files()
    if missing:
        raise ModelError(
            f"--t5 needs T5-XXL in the local Hugging Face cache, which lacks {', '.join(missing)}"
            " (nothing is downloaded at run time): fetch them on a machine with network "
            "(`huggingface-cli download argmaxinc/stable-diffusion t5/t5xxl.safetensors` and "
            "`huggingface-cli download google/t5-v1_1-xxl`), or pass --no-t5"
        )


def build_sd3(local_ckpt: str | None = None, options: ModelOptions | None = None) -> Sd3Handle:
    options = options or ModelOptions()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if local_ckpt and not Path(local_ckpt).exists():
        raise ModelError(f"checkpoint {local_ckpt} does not exist; {SD3_HELP}")
    if options.t5:
        _check_t5()
    dk = import_diffusionkit()
    try:
        pipeline = dk.DiffusionPipeline(
            shift=3.0, use_t5=options.t5, low_memory_mode=False, local_ckpt=local_ckpt
        )
    except Exception as err:  # any missing file surfaces as a hub/OS error
        raise ModelError(f"{SD3_HELP} ({type(err).__name__})") from None
    return Sd3Handle(
        name=options.spec("sd3-medium", SD3_PIXELS),
        mmdit=pipeline.mmdit,
        latent_shape=options.latent_shape(SD3_LATENTS),
        default_steps=28,
        default_cfg=5.0,
        shift=3.0,
        default_prompts=list(SD3_PROMPTS),
        weights_id=file_id(Path(local_ckpt)) if local_ckpt else "hf:sd3_medium",
        pipeline=pipeline,
    )


BUILTIN_PRESETS = (
    "tiny-digits",
    "sd3-medium-random",
    "sd3-medium",
    "sd3.5-large",
    "flux-schnell",
    "sd3.5-large-tiny",
    "flux-schnell-tiny",
    "sd3.5-large-wide",
    "flux-schnell-wide",
)
PRESET_ENTRY_POINTS = "taq.presets"


def plugin_presets() -> dict:
    """Presets other installed packages register (`taq.presets` entry points), by name."""
    return {ep.name: ep for ep in entry_points(group=PRESET_ENTRY_POINTS)}


PRESETS = BUILTIN_PRESETS + tuple(sorted(plugin_presets()))
SD3_LATENTS = (64, 64, 16)
SD3_PIXELS = (512, 512)


def load_preset(
    name: str = DEFAULT_PRESET,
    *,
    weights: str | None = None,
    local_ckpt: str | None = None,
    seed: int = 0,
    options: ModelOptions | None = None,
) -> ModelHandle:
    """Build a preset by name; unknown names raise `ModelError` listing the valid ones.

    `name` may carry SD3 options as stores record them (`sd3-medium@1024x768+t5`,
    `options.py`); `options` are the same from flags.
    """
    base, from_name = parse_spec(name)
    try:
        options = merge(name, from_name, options)
    except OptionsError as err:
        raise ModelError(str(err)) from None
    if base == "tiny-digits":
        if not options.is_default:
            raise ModelError(
                "tiny-digits has a fixed 16x16 latent and no T5: --t5, --height and --width "
                "apply to the sd3-medium presets"
            )
        return build_tiny_digits(weights)
    if base == "sd3-medium-random":
        if options.t5:
            raise ModelError(
                "sd3-medium-random has seeded pseudo-embeddings, no text encoders: --t5 "
                "applies to sd3-medium"
            )
        return build_random(
            sd3_config(),
            options.latent_shape(SD3_LATENTS),
            name=options.spec("sd3-medium-random", SD3_PIXELS),
            seed=seed,
        )
    if base == "sd3-medium":
        return build_sd3(local_ckpt, options)
    if base in ("sd3.5-large", "flux-schnell"):
        from taq_model.families import build_family

        return build_family(base, local_ckpt, options)
    if base in ("sd3.5-large-tiny", "flux-schnell-tiny"):
        from taq_model.families import TINY_SUFFIX, tiny_family_handle

        if not options.is_default:
            raise ModelError(
                f"{base} has a fixed 8x8x16 latent and no text encoders: drop "
                "--t5, --height and --width"
            )
        return tiny_family_handle(base.removesuffix(TINY_SUFFIX), seed=seed)
    if base in ("sd3.5-large-wide", "flux-schnell-wide"):
        from taq_model.families import WIDE_SUFFIX, wide_family_handle

        return wide_family_handle(base.removesuffix(WIDE_SUFFIX), options, seed=seed)
    plugin = plugin_presets().get(base)
    if plugin is not None:
        if not options.is_default:
            raise ModelError(
                f"{base} has a fixed latent and no T5: drop --t5, --height and --width"
            )
        return plugin.load()(weights)
    raise ModelError(f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}")


__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "ModelError",
    "ModelHandle",
    "ModelOptions",
    "load_preset",
]
