"""The `calib` group's contract, in one place: its config, writer and readers.

One unit per calibration image: x_t entering every stored step (`latents`), the final
latent, the prompt's conditioning, prompt and seed; constants hold the sigma schedule, the
stored steps' timesteps and the negative (CFG) conditioning. taq-calib samples the
trajectories and writes them through `create_calib_group` / `write_calib_image`; every
later stage reads them through `require_calib` and the decoders below (`calib_config_of`,
`read_calib_image`, `calib_conditioning`, `calib_timesteps`, `calib_seeds`);
`taq_run.runs.forward_calibration` replays them.
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


@dataclass(frozen=True)
class CalibImage:
    """One calibration image, the group's unit: its trajectory and what made it."""

    latents: np.ndarray  # x_t entering each stored step, (step, H, W, C)
    final: np.ndarray  # x_0 after the last step, (H, W, C)
    tokens: np.ndarray  # the prompt's conditioning tokens, (L, D)
    pooled: np.ndarray  # its pooled embedding, (P,)
    prompt: str
    seed: int


UNIT_ARRAYS = {  # CalibImage's field -> the group's array
    "latents": "latents",
    "final": "final_latents",
    "tokens": "cond_tokens",
    "pooled": "cond_pooled",
    "prompt": "prompts",
    "seed": "seeds",
}


def write_calib_image(calib: StageGroup, index: int, image: CalibImage) -> None:
    """Encode `image` as unit `index` of the group and mark it done."""
    calib.write_unit(index, {array: getattr(image, name) for name, array in UNIT_ARRAYS.items()})


def require_calib(store: Store, **kwargs) -> StageGroup:
    """The complete, up-to-date `calib` group to read (`Store.require_group`'s refusals)."""
    return store.require_group(OWNED_GROUP, **kwargs)


def calib_config_of(calib: StageGroup) -> CalibConfig:
    """The `CalibConfig` a `calib` group was made with (what it records)."""
    recorded = calib.meta.config
    known = {f.name for f in fields(CalibConfig)}
    given = {k: v for k, v in recorded.items() if k in known}
    return CalibConfig(**{**given, "prompts": tuple(recorded["prompts"])})


def read_calib_image(calib: StageGroup, index: int) -> CalibImage:
    """Calibration image `index`, its arrays checked against each other and the stored steps."""
    arrays = calib.read_arrays([*UNIT_ARRAYS.values(), "timesteps"], [index])
    values = {name: arrays[array][0] for name, array in UNIT_ARRAYS.items()}
    return CalibImage(**{**values, "prompt": str(values["prompt"]), "seed": int(values["seed"])})


def calib_conditioning(calib: StageGroup, image: int) -> Conditioning:
    """The conditioning image `image` was generated with (batch of 1 plus the negative)."""
    names = ("cond_tokens", "cond_pooled", "negative_tokens", "negative_pooled")
    tokens, pooled, negative_tokens, negative_pooled = calib.read_arrays(names, [image]).values()
    return Conditioning(
        tokens=mx.array(tokens[0])[None],
        pooled=mx.array(pooled[0])[None],
        negative_tokens=mx.array(negative_tokens)[None],
        negative_pooled=mx.array(negative_pooled)[None],
    )


def calib_timesteps(calib: StageGroup) -> np.ndarray:
    """The timestep (sigma x 1000) of each stored step, (step,)."""
    return calib.read("timesteps")


def calib_seeds(calib: StageGroup) -> list[int]:
    """The noise seed of each calibration image."""
    return [int(seed) for seed in calib.read("seeds")]
