"""SD3 conditioning and image size, and how a store remembers them.

SD3 was trained with T5-XXL token embeddings next to CLIP's; without T5 DiffusionKit feeds
zeros in their place. `--t5` turns it on (its files must be in the local Hugging Face cache:
nothing is downloaded at run time). `--height/--width` set the image size in pixels: SD3's
VAE downsamples by 8 and the MMDiT patches latents by 2, so both must be multiples of 16,
and its learned positional table covers at most 192 latents (1536 pixels) a side.

A model built with options is a different model for every stage after it (other
calibration data, other shapes), so the options are part of the preset's name that a store
and a checkpoint record: `sd3-medium@1024x768+t5`. Every stage rebuilds the model from that
name; the plain name means the preset's defaults (and keeps earlier stores' identities).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PIXEL_MULTIPLE = 16
MAX_PIXELS = 1536
_SPEC = re.compile(r"(?P<name>[a-z0-9.-]+)(@(?P<height>\d+)x(?P<width>\d+))?(?P<t5>\+t5)?")

T5_FILES = (
    ("argmaxinc/stable-diffusion", "t5/t5xxl.safetensors"),
    ("google/t5-v1_1-xxl", "config.json"),
    ("google/t5-v1_1-xxl", "spiece.model"),
    ("google/t5-v1_1-xxl", "tokenizer_config.json"),
)


class OptionsError(ValueError):
    """Options a preset cannot take; the message names the fix."""


@dataclass(frozen=True)
class ModelOptions:
    """`--t5/--no-t5`, `--height`, `--width` (pixels; None: the preset's)."""

    t5: bool = False
    height: int | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--height", self.height), ("--width", self.width)):
            if value is None:
                continue
            if value < PIXEL_MULTIPLE or value % PIXEL_MULTIPLE:
                raise OptionsError(
                    f"{flag} {value} is not a multiple of {PIXEL_MULTIPLE} pixels (SD3's VAE "
                    f"downsamples by 8, the MMDiT patches by 2): use e.g. "
                    f"{max(PIXEL_MULTIPLE, round(value / PIXEL_MULTIPLE) * PIXEL_MULTIPLE)}"
                )
            if value > MAX_PIXELS:
                raise OptionsError(
                    f"{flag} {value} exceeds {MAX_PIXELS} pixels, the largest SD3's "
                    "positional table covers"
                )

    @property
    def is_default(self) -> bool:
        return self == ModelOptions()

    def latent_shape(self, default: tuple[int, int, int]) -> tuple[int, int, int]:
        """(H, W, C) of latents at these pixel sizes (8x downsampling)."""
        height, width, channels = default
        return (
            height if self.height is None else self.height // 8,
            width if self.width is None else self.width // 8,
            channels,
        )

    def spec(self, name: str, default_pixels: tuple[int, int]) -> str:
        """The preset name with these options, as stores and checkpoints record it."""
        size = (self.height or default_pixels[0], self.width or default_pixels[1])
        suffix = "" if size == default_pixels else f"@{size[0]}x{size[1]}"
        return name + suffix + ("+t5" if self.t5 else "")


def parse_spec(spec: str) -> tuple[str, ModelOptions]:
    """`sd3-medium@1024x768+t5` -> ("sd3-medium", ModelOptions(True, 1024, 768))."""
    match = _SPEC.fullmatch(spec)
    if match is None:
        return spec, ModelOptions()
    height, width = match["height"], match["width"]
    options = ModelOptions(
        t5=bool(match["t5"]),
        height=int(height) if height else None,
        width=int(width) if width else None,
    )
    return match["name"], options


def merge(name: str, spec_options: ModelOptions, flags: ModelOptions | None) -> ModelOptions:
    """Options from a preset name (`...@HxW+t5`) or from flags, not contradicting ones."""
    if flags is None or flags.is_default:
        return spec_options
    if not spec_options.is_default and spec_options != flags:
        raise OptionsError(
            f"the preset name {name!r} and the flags ask for different options ({spec_options} "
            f"vs {flags}): give them once"
        )
    return flags


def missing_t5_files() -> list[str]:
    """The T5 files (repo/file) absent from the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    missing = []
    for repo, filename in T5_FILES:
        found = try_to_load_from_cache(repo, filename)
        if not isinstance(found, str):
            missing.append(f"{repo}/{filename}")
    return missing
