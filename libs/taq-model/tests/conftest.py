from taq_model.compat import import_diffusionkit
from taq_model.presets import build_random

import mlx.core as mx
import pytest


def tiny_config(depth: int = 2, hidden: int = 64, heads: int = 2):
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig

    return MMDiTConfig(
        num_heads=heads,
        depth_multimodal=depth,
        hidden_size_override=hidden,
        max_latent_resolution=16,
        vae_latent_dim=4,
        pooled_text_embed_dim=32,
        token_level_text_embed_dim=32,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )


def make_random_handle(seed: int = 1):
    return build_random(tiny_config(), (8, 8, 4), name="tiny-random", num_tokens=6, seed=seed)


@pytest.fixture(scope="session")
def random_handle():
    return make_random_handle(seed=1)


@pytest.fixture(scope="session")
def random_handle_factory():
    return make_random_handle
