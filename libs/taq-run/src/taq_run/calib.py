"""The `calib` group's contract, in one place: its config, writer and readers.

One unit per calibration image: x_t entering every stored step (`latents`), the final
latent, the prompt's conditioning, prompt and seed; constants hold the sigma schedule, the
stored steps' timesteps and the negative (CFG) conditioning. taq-calib samples the
trajectories and writes them through `create_calib_group` / `calib_unit`; every later stage
reads them through `require_calib`, `calib_config_of`, `calib_conditioning` and
`calib_latents`
(`taq_run.runs.forward_calibration` replays them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import mlx.core as mx
import numpy as np

from taq_io import StageGroup, Store
from taq_model.sampling import Conditioning
from taq_runtime.cli import at_least

OWNED_GROUP = "calib"  # this module writes and reads the group (one owner per group)


@dataclass(frozen=True)
class CalibConfig:
    """What defines a calibration set (hashed into the group; flags mirror the fields)."""

    model: str
    prompts: tuple[str, ...]
    num_images: int
    num_steps: int
    cfg: float
    seed: int = 0
    stride: int = 1
    version: int = field(default=1)

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("no prompts: give at least one prompt")
        at_least(1, num_images=self.num_images, num_steps=self.num_steps)
        if not 1 <= self.stride <= self.num_steps:
            raise ValueError(f"--stride must be in 1..{self.num_steps}, got {self.stride}")
        if not math.isfinite(self.cfg) or self.cfg < 0:
            raise ValueError(f"--cfg must be a finite number >= 0 (0: no guidance), got {self.cfg}")
        if not 0 <= self.seed < 2**32 - self.num_images:
            raise ValueError(f"--seed must be in 0..{2**32 - 1 - self.num_images}, got {self.seed}")

    @property
    def stored_steps(self) -> list[int]:
        return list(range(0, self.num_steps, self.stride))

    def prompt_of(self, image: int) -> str:
        return self.prompts[image % len(self.prompts)]

    def seed_of(self, image: int) -> int:
        return self.seed + image

    def to_json(self) -> dict:
        return {**asdict(self), "prompts": list(self.prompts)}


def create_calib_group(
    store: Store,
    config: CalibConfig,
    *,
    producer: str,
    latent_shape: tuple[int, int, int],
    sigmas: np.ndarray,
    timesteps: np.ndarray,
    negative_tokens: np.ndarray,
    negative_pooled: np.ndarray,
    overwrite: bool = False,
) -> StageGroup:
    """Allocate (or reopen, to resume) the group; `sigmas` and `timesteps` of every step."""
    steps = np.array(config.stored_steps, dtype=np.int32)
    sizes = {
        "image": config.num_images,
        "step": len(steps),
        "step_all": config.num_steps + 1,
        "H": latent_shape[0],
        "W": latent_shape[1],
        "C": latent_shape[2],
        "L": negative_tokens.shape[0],
        "D": negative_tokens.shape[1],
        "P": negative_pooled.shape[0],
    }
    constants = {
        "sigmas": sigmas,
        "timesteps": timesteps[steps],
        "step_index": steps,
        "negative_tokens": negative_tokens,
        "negative_pooled": negative_pooled,
    }
    return store.create_group(
        OWNED_GROUP,
        producer=producer,
        config=config.to_json(),
        inputs={},
        sizes=sizes,
        constants=constants,
        overwrite=overwrite,
    )


def calib_unit(
    latents: np.ndarray,
    final: np.ndarray,
    tokens: np.ndarray,
    pooled: np.ndarray,
    prompt: str,
    seed: int,
) -> dict:
    """One image's unit: `latents` (stored step, H, W, C), its final latent and conditioning."""
    return {
        "latents": latents,
        "final_latents": final,
        "cond_tokens": tokens,
        "cond_pooled": pooled,
        "prompts": prompt,
        "seeds": seed,
    }


def require_calib(store: Store, **kwargs) -> StageGroup:
    """The complete, up-to-date `calib` group to read (`Store.require_group`'s refusals)."""
    return store.require_group(OWNED_GROUP, **kwargs)


def calib_config_of(calib: StageGroup) -> CalibConfig:
    """The `CalibConfig` a `calib` group was made with (what it records)."""
    recorded = calib.meta.config
    known = {f.name for f in fields(CalibConfig)}
    given = {k: v for k, v in recorded.items() if k in known}
    return CalibConfig(**{**given, "prompts": tuple(recorded["prompts"])})


def calib_conditioning(calib: StageGroup, image: int) -> Conditioning:
    """The conditioning image `image` was generated with (batch of 1 plus the negative)."""
    unit = calib.read_unit(image)
    return Conditioning(
        tokens=mx.array(unit["cond_tokens"])[None],
        pooled=mx.array(unit["cond_pooled"])[None],
        negative_tokens=mx.array(calib.read("negative_tokens"))[None],
        negative_pooled=mx.array(calib.read("negative_pooled"))[None],
    )


def calib_latents(calib: StageGroup, image: int) -> np.ndarray:
    """x_t of image `image` at every stored step, (step, H, W, C)."""
    return calib.read_unit(image)["latents"]
