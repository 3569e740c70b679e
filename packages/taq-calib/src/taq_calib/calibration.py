"""Generate calibration latents: x_t entering every (strided) step of real trajectories.

TaQ-DiT calibrates on the inputs the model really sees while sampling, at every timestep,
for the prompts it will serve. Image `i` uses prompt `prompts[i % len(prompts)]` and noise
seed `seed + i`; one image is one unit of the `calib` group (its contract: `taq_run.calib`),
written whole and then marked done, so a killed run resumes at the first missing image and
ends bit-identical. Under `mlx.launch` rank r does the images i with i % ranks == r
(`taq_run.writers`); an image depends on nothing but its prompt and seed, so the group is
the same bit for bit whatever the number of ranks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import mlx.core as mx
import numpy as np

from taq_io import StageGroup, Store
from taq_model.presets import ModelHandle
from taq_model.sampling import initial_noise, sample_euler, timesteps_for
from taq_run.calib import CalibConfig, CalibImage, create_calib_group, write_calib_image
from taq_run.writers import commit, create_group
from taq_runtime import ranks
from taq_runtime.cli import config_from_flags, progress

PRODUCER = f"taq-calib {version('taq-calib')}"


def calib_config(flags: object, handle: ModelHandle, prompts: Sequence[str]) -> CalibConfig:
    """`CalibConfig` from taq-calib's flags (an argparse namespace, or `taq run`'s config,
    named alike) for `handle` and `prompts`: a flag left unset (None) takes the preset's
    steps or CFG, or one image per prompt; flags `flags` lacks keep their defaults."""
    return config_from_flags(
        CalibConfig,
        flags,
        model=handle.name,
        prompts=tuple(prompts),
        num_images=flags.num_images or len(prompts),
        num_steps=flags.num_steps or handle.default_steps,
        cfg=handle.default_cfg if flags.cfg is None else flags.cfg,
    )


@dataclass(frozen=True)
class CalibResult:
    group: StageGroup
    images_written: int
    images_skipped: int
    seconds: float


def _open_group(handle: ModelHandle, store: Store, config: CalibConfig, overwrite: bool):
    negative = handle.encode([config.prompts[0]])  # any prompt: we keep the negative half
    sigmas = handle.sigmas(config.num_steps)
    return create_calib_group(
        store,
        config,
        producer=PRODUCER,
        latent_shape=handle.latent_shape,
        sigmas=np.array(sigmas, dtype=np.float32),
        timesteps=np.array(timesteps_for(sigmas), dtype=np.float32),
        negative_tokens=np.array(negative.negative_tokens[0], dtype=np.float32),
        negative_pooled=np.array(negative.negative_pooled[0], dtype=np.float32),
        overwrite=overwrite,
    )


def calibrate(
    handle: ModelHandle, store: Store, config: CalibConfig, *, overwrite: bool = False
) -> CalibResult:
    """Write (or finish) the `calib` group of `store` for `config`."""
    handle.validate_prompts(config.prompts)
    group = create_group(lambda o: _open_group(handle, store, config, o), overwrite)
    done = set(group.done_units().tolist())
    mine = [i for i in range(config.num_images) if ranks.owns(i)]
    todo = [i for i in mine if i not in done]
    sigmas = handle.sigmas(config.num_steps)
    stored = set(config.stored_steps)
    start = time.perf_counter()
    bar = progress(
        total=len(mine) * config.num_steps,
        desc="calib",
        unit="step",
        initial=(len(mine) - len(todo)) * config.num_steps,
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
            sampled = CalibImage(
                np.array(mx.stack(latents), dtype=np.float32),
                np.array(final[0], dtype=np.float32),
                np.array(conditioning.tokens[0], dtype=np.float32),
                np.array(conditioning.pooled[0], dtype=np.float32),
                prompt,
                config.seed_of(image),
            )
            write_calib_image(group, image, sampled)
    commit([group])
    return CalibResult(group, len(todo), len(mine) - len(todo), time.perf_counter() - start)
