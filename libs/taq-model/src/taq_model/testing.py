"""Small real models and DiffusionKit references, for the tests of every taq member.

A tiny MMDiT (DiffusionKit's own class, random weights) runs a forward pass in
milliseconds on CPU; `diffusionkit_trajectory` runs DiffusionKit's `sample_euler` itself,
the reference every sampler and replay in taq must match.
"""

from __future__ import annotations

from types import SimpleNamespace

import mlx.core as mx
import numpy as np

from taq_model.compat import import_diffusionkit
from taq_model.presets import ModelHandle, RandomHandle, build_random


def tiny_config(
    depth: int = 2,
    hidden: int = 64,
    heads: int = 2,
    latent_channels: int = 4,
    depth_unified: int = 0,
):
    """A toy SD3-style `MMDiTConfig` (float32 throughout); `depth_unified` adds unified
    blocks after the `depth` multimodal ones."""
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig

    return MMDiTConfig(
        num_heads=heads,
        depth_multimodal=depth,
        depth_unified=depth_unified,
        hidden_size_override=hidden,
        max_latent_resolution=16,
        vae_latent_dim=latent_channels,
        pooled_text_embed_dim=32,
        token_level_text_embed_dim=32,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )


def tiny_random_handle(seed: int = 1, depth: int = 2, hidden: int = 64) -> RandomHandle:
    """A 2-block MMDiT on 8x8x4 latents with 6 text tokens, seeded random weights."""
    config = tiny_config(depth=depth, hidden=hidden)
    return build_random(config, (8, 8, 4), name="tiny-random", num_tokens=6, seed=seed)


def tiny_flux_config(depth_multimodal: int = 1, depth_unified: int = 2, hidden: int = 64):
    """FLUX.1's block kinds and positional encodings at toy size: MM blocks then unified
    blocks, rotary embeddings (head dim 32 = 8 + 12 + 12), QK RMSNorm, reshape patchify."""
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig, PositionalEncoding

    return MMDiTConfig(
        num_heads=2,
        depth_multimodal=depth_multimodal,
        depth_unified=depth_unified,
        hidden_size_override=hidden,
        pos_embed_type=PositionalEncoding.PreSDPARope,
        rope_axes_dim=(8, 12, 12),
        use_qk_norm=True,
        patchify_via_reshape=True,
        max_latent_resolution=16,
        vae_latent_dim=4,
        pooled_text_embed_dim=32,
        token_level_text_embed_dim=32,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )


def tiny_flux_handle(seed: int = 1) -> RandomHandle:
    """A FLUX-like MMDiT (1 MM + 2 unified blocks, RoPE) on 8x8x4 latents, 6 text tokens."""
    config = tiny_flux_config()
    return build_random(config, (8, 8, 4), name="tiny-flux", num_tokens=6, seed=seed)


def diffusionkit_trajectory(
    handle: ModelHandle, prompt: str, seed: int, num_steps: int, cfg: float
) -> tuple[np.ndarray, np.ndarray]:
    """x_t entering every step of DiffusionKit's own `sample_euler`, and the final latent."""
    dk = import_diffusionkit()
    from diffusionkit.mlx.sampler import FluxSampler, ModelSamplingDiscreteFlow

    sampler_type = FluxSampler if handle.schedule == "flux" else ModelSamplingDiscreteFlow
    pipe = SimpleNamespace(
        mmdit=handle.mmdit,
        sampler=sampler_type(shift=handle.shift),
        activation_dtype=mx.float32,
        load_mmdit=lambda only_modulation_dict=True: handle.modulation_weights(),
    )
    seen = []

    class Recording(dk.CFGDenoiser):
        def __call__(self, x_t, *args, **kwargs):
            seen.append(np.array(x_t[0]))
            return super().__call__(x_t, *args, **kwargs)

    bare = dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)
    sigmas = bare.get_sigmas(pipe.sampler, num_steps)
    noise = bare.get_noise(seed, mx.zeros((1, *handle.latent_shape)))
    tokens, pooled = handle.encode([prompt]).model_batch(cfg)
    extra = {"conditioning": tokens, "cfg_weight": cfg, "pooled_conditioning": pooled}
    final, _ = dk.sample_euler(Recording(pipe), noise, sigmas, extra_args=extra)
    return np.stack(seen), np.array(final[0])
