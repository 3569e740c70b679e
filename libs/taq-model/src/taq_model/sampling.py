"""Euler sampling with classifier-free guidance, step for step as DiffusionKit does it.

`diffusionkit.mlx.sample_euler` is the reference: Karras' Euler step on the ODE
`d = (x - denoised) / sigma`, `x = x + d * (sigma_next - sigma)`, with
`denoised = x - model(x) * sigma` (rectified flow), `timestep = sigma * 1000`, CFG as
`uncond + w * (cond - uncond)` over a batch doubled as [cond, uncond], and the sigma
schedule of `DiffusionPipeline.get_sigmas`. We keep the same operations in the same order
so trajectories agree to float32 rounding, and add what calibration needs: a batch of
prompts, a callback per step, and the adaLN reload after modulation caching.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlx.core as mx
import numpy as np

from taq_model.blocks import cache_modulation, clear_modulation

if TYPE_CHECKING:
    from taq_model.presets import ModelHandle

StepCallback = Callable[[int, mx.array], None]


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of N prompts plus the negative (empty) prompt used by CFG."""

    tokens: mx.array  # (N, L, D) token-level embeddings
    pooled: mx.array  # (N, P) pooled embedding
    negative_tokens: mx.array  # (1, L, D)
    negative_pooled: mx.array  # (1, P)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def model_batch(self, cfg: float) -> tuple[mx.array, mx.array]:
        """Tokens and pooled vectors for the MMDiT batch: [cond..., uncond...] when CFG is on."""
        if cfg <= 0:
            return self.tokens, self.pooled
        n = len(self)
        tokens = mx.concatenate([self.tokens, mx.repeat(self.negative_tokens, n, axis=0)])
        pooled = mx.concatenate([self.pooled, mx.repeat(self.negative_pooled, n, axis=0)])
        return tokens, pooled


def sigma_schedule(num_steps: int, shift: float = 1.0) -> mx.array:
    """`num_steps + 1` sigmas from sigma_max to sigma_min, then 0 (as `get_sigmas`)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    sigmas_all = _discrete_sigmas(shift)
    start = (sigmas_all[-1] * 1000).item()
    end = (sigmas_all[0] * 1000).item()
    timesteps = mx.linspace(start, end, num_steps)
    schedule = [_sigma_mx(timesteps[i], shift) for i in range(num_steps)]
    return mx.array(schedule + [0.0])


def flux_sigma_schedule(num_steps: int, shift: float = 1.0) -> mx.array:
    """FLUX's `num_steps + 1` sigmas (`get_sigmas` with DiffusionKit's `FluxSampler`): the
    discrete range starts at timestep 0, so the linspace itself ends at sigma 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    start = (_sigma_mx(mx.array(1000.0), shift) * 1000).item()
    end = (_sigma_mx(mx.array(0.0), shift) * 1000).item()
    timesteps = mx.linspace(start, end, num_steps + 1)
    return mx.array([_sigma_mx(timesteps[i], shift) for i in range(num_steps + 1)])


def _discrete_sigmas(shift: float) -> mx.array:
    return _sigma_mx(mx.arange(1, 1001, 1), shift)


def _sigma_mx(timestep: mx.array, shift: float) -> mx.array:
    t = timestep / 1000.0
    return t if shift == 1.0 else shift * t / (1 + (shift - 1) * t)


def timesteps_for(sigmas: mx.array) -> mx.array:
    return (sigmas * 1000).astype(mx.float32)


def initial_noise(seed: int, latent_shape: tuple[int, int, int]) -> mx.array:
    """Seeded Gaussian noise (1, H, W, C), drawn as DiffusionKit's `get_noise` does."""
    height, width, channels = latent_shape
    rng = np.random.RandomState(seed)
    noise = rng.randn(1, channels, height, width)
    return mx.array(noise).transpose(0, 2, 3, 1).astype(mx.float32)


@contextmanager
def cached_modulation(handle: ModelHandle, pooled: mx.array, timesteps: mx.array):
    """Cache every block's adaLN outputs for `pooled` x `timesteps`; restore adaLN after.

    Caching empties the adaLN weights, and the cache depends on the pooled embedding, so
    the weights must come back before the next prompt.
    """
    cache_modulation(handle.mmdit, pooled, timesteps)
    try:
        yield
    finally:
        handle.reload_modulation_weights()
        clear_modulation(handle.mmdit)


def model_output(
    handle: ModelHandle, x: mx.array, timestep: mx.array, tokens: mx.array, cfg: float
) -> tuple[mx.array, mx.array]:
    """The MMDiT's input and output for latents `x` at `timestep`, the batch doubled as
    [cond, uncond] when CFG is on (`tokens` from `Conditioning.model_batch`); modulation
    must be cached for `timestep` (`cached_modulation`)."""
    x_in = x if cfg <= 0 else mx.concatenate([x] * 2, axis=0)
    out = handle.mmdit(
        latent_image_embeddings=x_in,
        token_level_text_embeddings=mx.expand_dims(tokens, 2),
        timestep=mx.broadcast_to(timestep, [len(x_in)]),
    )
    return x_in, out


def denoise(
    handle: ModelHandle,
    x: mx.array,
    timestep: mx.array,
    sigma_i: mx.array,
    tokens: mx.array,
    cfg: float,
) -> mx.array:
    """One guided denoiser call (DiffusionKit's `CFGDenoiser.__call__`)."""
    x_in, out = model_output(handle, x, timestep, tokens, cfg)
    sig = sigma_i.reshape(sigma_i.shape[:1] + (1,) * (out.ndim - 1))
    denoised = x_in - out * sig
    if cfg <= 0:
        return denoised
    cond, uncond = denoised.split(2)
    return uncond + cfg * (cond - uncond)


def sample_euler(
    handle: ModelHandle,
    conditioning: Conditioning,
    noise: mx.array,
    sigmas: mx.array,
    cfg: float,
    on_step: StepCallback | None = None,
) -> mx.array:
    """Integrate from `noise` (N, H, W, C) along `sigmas`; `on_step(i, x_i)` sees each input."""
    tokens, pooled = conditioning.model_batch(cfg)
    timesteps = timesteps_for(sigmas)
    if sigmas[0].item() != 1.0:
        raise ValueError("sampling must start at sigma 1 (full denoise)")
    x = noise  # DiffusionKit's noise_scaling at sigma 1: 1 * noise + 0 * empty latent
    with cached_modulation(handle, pooled, timesteps):
        for i in range(len(sigmas) - 1):
            if on_step is not None:
                on_step(i, x)
            denoised = denoise(handle, x, timesteps[i], sigmas[i], tokens, cfg)
            d = (x - denoised) / sigmas[i][None, None, None, None]
            x = x + d * (sigmas[i + 1] - sigmas[i])
            mx.eval(x)
    return x
