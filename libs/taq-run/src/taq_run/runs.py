"""A run = a taq store plus the model it belongs to; and replaying its calibration steps.

Every stage after `taq-calib` opens the store, rebuilds the store's model preset, checks
the model identity, and runs calibration latents through the FP model with the
conditioning and modulation they were generated with. That is written once, here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import mlx.core as mx

from taq_io import ModelIdentity, ModelMismatchError, StageGroup, Store, config_hash
from taq_model.options import parse_spec
from taq_model.presets import ModelHandle, load_preset
from taq_model.sampling import cached_modulation, model_output
from taq_run.calib import calib_conditioning, calib_config_of, calib_timesteps, read_calib_image
from taq_run.writers import open_store


def model_identity(handle: ModelHandle) -> ModelIdentity:
    """The identity a store records for `handle`'s model: its preset and the hash of what
    identifies it (`ModelHandle.identity_config`)."""
    return ModelIdentity(handle.name, config_hash(handle.identity_config, spaced=True))


def refuse_other_model(path: str | Path, model: str) -> None:
    """Refuse a store made for another preset, from its root record alone: before the model
    is built (building sd3-medium-random takes minutes). Options (`@1024x768+t5`) are
    checked later, by the built model's identity."""
    recorded = Store.recorded_model(path)
    if recorded is not None and parse_spec(recorded.preset)[0] != parse_spec(model)[0]:
        raise ModelMismatchError(
            f"{path} is for model {recorded}, you asked for {model}: use another --store"
        )


def open_run(
    path: str | Path,
    *,
    mode: Literal["r", "r+"] = "r+",
    local_ckpt: str | None = None,
    weights: str | None = None,
) -> tuple[Store, ModelHandle]:
    """Open an existing store and build its model preset; refuse a model that differs.
    Under `mlx.launch`, `r+` opens it on every rank under rank 0's lock (`writers`)."""
    store = open_store(lambda: Store.open(path, mode=mode)) if mode == "r+" else Store.open(path)
    handle = load_preset(store.model.preset, local_ckpt=local_ckpt, weights=weights)
    if model_identity(handle) != store.model:
        raise ModelMismatchError(
            f"{path} was made with {store.model}, but this taq builds {model_identity(handle)}"
            " (weights or config changed): re-run from `taq-calib` into a new --store"
        )
    return store, handle


@dataclass(frozen=True)
class CalibForward:
    image: int
    step: int  # index into the calib group's stored steps
    timestep: float
    output: mx.array  # the MMDiT's output for the (CFG-doubled) batch, not yet evaluated


def forward_calibration(
    handle: ModelHandle,
    calib: StageGroup,
    images: Sequence[int],
    steps: Sequence[int],
) -> Iterator[CalibForward]:
    """Run the model on the calib latents of `images` x `steps`, as during sampling.

    The batch is doubled for CFG ([cond, uncond]) exactly as the sampler does, and the
    modulation is cached per image (it depends on the prompt) and dropped after. The
    caller evaluates each output (e.g. together with what its hooks recorded).
    """
    cfg = float(calib_config_of(calib).cfg)
    all_timesteps = calib_timesteps(calib)
    for image in images:
        latents = read_calib_image(calib, image).latents
        conditioning = calib_conditioning(calib, image)
        tokens, pooled = conditioning.model_batch(cfg)
        timesteps = mx.array(all_timesteps[list(steps)])
        with cached_modulation(handle, pooled, timesteps):
            for i, step in enumerate(steps):
                x = mx.array(latents[step])[None]
                _, output = model_output(handle, x, timesteps[i], tokens, cfg)
                yield CalibForward(image, step, float(all_timesteps[step]), output)
