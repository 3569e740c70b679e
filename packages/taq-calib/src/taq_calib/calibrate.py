"""Generate calibration latents: x_t entering every (strided) step of real trajectories.

TaQ-DiT calibrates on the inputs the model really sees while sampling, at every timestep,
for the prompts it will serve. Image `i` uses prompt `prompts[i % len(prompts)]` and noise
seed `seed + i`; one image is one unit of the `calib` group, written whole and then marked
done, so a killed run resumes at the first missing image and ends bit-identical.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version

from taq_model.cli_support import progress
from taq_model.presets import ModelHandle
from taq_model.sampling import initial_noise, sample_euler, timesteps_for

import mlx.core as mx
import numpy as np

from taq_io import StageGroup, Store

PRODUCER = f"taq-calib {version('taq-calib')}"


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
        if self.num_images < 1:
            raise ValueError(f"--num-images must be at least 1, got {self.num_images}")
        if self.num_steps < 1:
            raise ValueError(f"--num-steps must be at least 1, got {self.num_steps}")
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


@dataclass(frozen=True)
class CalibResult:
    group: StageGroup
    images_written: int
    images_skipped: int
    seconds: float


def _open_group(handle: ModelHandle, store: Store, config: CalibConfig, overwrite: bool):
    negative = handle.encode([config.prompts[0]])  # any prompt: we keep the negative half
    sigmas = handle.sigmas(config.num_steps)
    steps = np.array(config.stored_steps, dtype=np.int32)
    tokens, pooled = negative.negative_tokens[0], negative.negative_pooled[0]
    sizes = {
        "image": config.num_images,
        "step": len(steps),
        "step_all": config.num_steps + 1,
        "H": handle.latent_shape[0],
        "W": handle.latent_shape[1],
        "C": handle.latent_shape[2],
        "L": tokens.shape[0],
        "D": tokens.shape[1],
        "P": pooled.shape[0],
    }
    constants = {
        "sigmas": np.array(sigmas, dtype=np.float32),
        "timesteps": np.array(timesteps_for(sigmas), dtype=np.float32)[steps],
        "step_index": steps,
        "negative_tokens": np.array(tokens, dtype=np.float32),
        "negative_pooled": np.array(pooled, dtype=np.float32),
    }
    return store.create_group(
        "calib",
        producer=PRODUCER,
        config=config.to_json(),
        inputs={},
        sizes=sizes,
        constants=constants,
        overwrite=overwrite,
    )


def calibrate(
    handle: ModelHandle, store: Store, config: CalibConfig, *, overwrite: bool = False
) -> CalibResult:
    """Write (or finish) the `calib` group of `store` for `config`."""
    handle.validate_prompts(config.prompts)
    group = _open_group(handle, store, config, overwrite)
    done = set(group.done_units().tolist())
    todo = [i for i in range(config.num_images) if i not in done]
    sigmas = handle.sigmas(config.num_steps)
    stored = set(config.stored_steps)
    start = time.perf_counter()
    bar = progress(
        total=config.num_images * config.num_steps,
        desc="calib",
        unit="step",
        initial=len(done) * config.num_steps,
    )
    with bar:
        for image in todo:
            prompt = config.prompt_of(image)
            conditioning = handle.encode([prompt])
            latents: list[mx.array] = []

            def record(step: int, x: mx.array, latents=latents) -> None:
                if step in stored:
                    latents.append(x[0])
                bar.update(1)

            noise = initial_noise(config.seed_of(image), handle.latent_shape)
            final = sample_euler(handle, conditioning, noise, sigmas, config.cfg, on_step=record)
            group.write_unit(
                image,
                {
                    "latents": np.array(mx.stack(latents), dtype=np.float32),
                    "final_latents": np.array(final[0], dtype=np.float32),
                    "cond_tokens": np.array(conditioning.tokens[0], dtype=np.float32),
                    "cond_pooled": np.array(conditioning.pooled[0], dtype=np.float32),
                    "prompts": prompt,
                    "seeds": config.seed_of(image),
                },
            )
    group.mark_complete()
    return CalibResult(group, len(todo), len(done), time.perf_counter() - start)
