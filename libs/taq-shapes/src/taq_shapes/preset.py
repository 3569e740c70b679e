"""The `tiny-shapes` preset's handle: conditioning, adaLN reload, latents -> images, and a
batched generate + adherence measurement of any handle that draws tiny-shapes scenes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from taq_model.presets import LabelConditionedHandle, ModelError, ModelHandle, file_id
from taq_model.sampling import initial_noise, sample_euler
from taq_shapes.evaluate import AdherenceReport, PromptScore, evaluate_adherence
from taq_shapes.grammar import prompt_labels, prompt_set
from taq_shapes.model import (
    LATENT_SHAPE,
    TINY_SHAPES_WEIGHTS,
    latents_to_images,
    load_tiny_shapes,
)

DEFAULT_STEPS = 20
DEFAULT_CFG = 3.0
DEFAULT_PROMPTS = 64  # drawn from the grammar; calibration and evaluation take them in turn


@dataclass
class TinyShapesHandle(LabelConditionedHandle):
    def labels(self, prompt: str) -> list[int]:
        return prompt_labels(prompt)  # PromptError is a ValueError naming the grammar

    def to_images(self, latents: mx.array) -> np.ndarray:
        return latents_to_images(np.array(latents, dtype=np.float32))


def build_tiny_shapes(weights_path: str | os.PathLike | None = None) -> TinyShapesHandle:
    path = Path(weights_path) if weights_path else TINY_SHAPES_WEIGHTS
    if not path.exists():
        raise ModelError(
            f"tiny-shapes weights not found at {path}: train them with "
            "`train-tiny-shapes --output PATH`"
        )
    mmdit, conditioner = load_tiny_shapes(path)
    return TinyShapesHandle(
        name="tiny-shapes",
        mmdit=mmdit,
        latent_shape=LATENT_SHAPE,
        default_steps=DEFAULT_STEPS,
        default_cfg=DEFAULT_CFG,
        shift=1.0,
        default_prompts=prompt_set(DEFAULT_PROMPTS, seed=0),
        weights_id=file_id(path),
        conditioner=conditioner,
        weights_path=path,
    )


def generate_batched(
    handle: ModelHandle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_steps: int | None = None,
    cfg: float | None = None,
    batch: int = 64,
) -> np.ndarray:
    """uint8 images of (prompt, seed) pairs, sampled `batch` prompts at a time."""
    num_steps = num_steps or handle.default_steps
    cfg = handle.default_cfg if cfg is None else cfg
    sigmas = handle.sigmas(num_steps)
    images = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        noise = mx.concatenate(
            [initial_noise(s, handle.latent_shape) for s in seeds[start : start + batch]]
        )
        latents = sample_euler(handle, handle.encode(chunk), noise, sigmas, cfg)
        images.append(handle.to_images(latents))
    return np.concatenate(images)


def measure_adherence(
    handle: ModelHandle,
    prompts: Sequence[str],
    seeds: Sequence[int],
    num_steps: int | None = None,
    cfg: float | None = None,
) -> tuple[AdherenceReport, list[PromptScore], np.ndarray]:
    images = generate_batched(handle, prompts, seeds, num_steps, cfg)
    report, scores = evaluate_adherence(prompts, images)
    return report, scores, images
