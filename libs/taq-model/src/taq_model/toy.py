"""The toy MMDiTs trained in this repo (tiny-digits here, tiny-shapes in taq-shapes): their
DiffusionKit config, their weight file's layout and the loss they are trained with.

A toy model is a small float32 DiffusionKit MMDiT plus a learned conditioner (labels ->
context tokens and pooled vector), saved in one safetensors file under `mmdit.*` and
`conditioner.*`. Training is rectified flow: the model predicts `noise - x0` at
`x_t = (1 - sigma) x0 + sigma noise`, timestep = sigma * 1000 (SD3's recipe, which
DiffusionKit's sampler inverts with `denoised = x_t - sigma * output`). Modulation is computed
inside the loss, per sample, and placed under one key of each block's `_modulation_params`
(blocks only use the timestep passed to the forward as that key);
`cache_modulation_params` would empty the adaLN weights.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from taq_model.compat import import_diffusionkit

MODULATION_KEY = 0.0


def toy_mmdit_config(
    latent_shape: tuple[int, int, int],
    token_width: int,
    pooled_width: int,
    hidden: int = 128,
    depth: int = 4,
    heads: int = 4,
):
    """A float32 MMDiT config for square (H, W, C) latents."""
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig

    return MMDiTConfig(
        num_heads=heads,
        depth_multimodal=depth,
        hidden_size_override=hidden,
        max_latent_resolution=latent_shape[0],
        vae_latent_dim=latent_shape[2],
        pooled_text_embed_dim=pooled_width,
        token_level_text_embed_dim=token_width,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )


def load_toy_weights(weights: dict[str, mx.array], mmdit: nn.Module, conditioner: nn.Module):
    """Load `mmdit.*` and `conditioner.*` of `weights` (as float32); return both modules."""
    for prefix, module in (("mmdit.", mmdit), ("conditioner.", conditioner)):
        items = [
            (k.removeprefix(prefix), v.astype(mx.float32))
            for k, v in weights.items()
            if k.startswith(prefix)
        ]
        module.load_weights(items)
    mx.eval(mmdit.parameters(), conditioner.parameters())
    return mmdit, conditioner


def set_per_sample_modulation(mmdit: nn.Module, pooled: mx.array, timesteps: mx.array) -> None:
    """Every sub-block's adaLN output for per-sample (pooled, timestep), under one key."""
    embedding = mmdit.y_embedder(pooled)[:, None, None, :] + mmdit.t_embedder(timesteps)
    for block in mmdit.multimodal_transformer_blocks:
        for sub in (block.image_transformer_block, block.text_transformer_block):
            sub._modulation_params = {MODULATION_KEY: sub.adaLN_modulation(embedding)}
    final = mmdit.final_layer
    final._modulation_params = {MODULATION_KEY: final.adaLN_modulation(embedding)}


def rectified_flow_loss(model, x0, labels, sigmas, noise):
    """`model` holds `.mmdit` and `.conditioner`; the mean squared error of the predicted
    velocity `noise - x0` at `x_t`."""
    tokens, pooled = model.conditioner(labels)
    set_per_sample_modulation(model.mmdit, pooled, sigmas * 1000)
    s = sigmas[:, None, None, None]
    x_t = (1 - s) * x0 + s * noise
    key = mx.full((x0.shape[0],), MODULATION_KEY)
    output = model.mmdit(x_t, tokens[:, :, None, :], key)
    return mx.mean((output - (noise - x0)) ** 2)
