import pytest

from taq_model.compat import import_diffusionkit
from taq_model.presets import build_random

import mlx.core as mx


@pytest.fixture(scope="session")
def random_handle():
    import_diffusionkit()
    from diffusionkit.mlx.config import MMDiTConfig

    config = MMDiTConfig(
        num_heads=2,
        depth_multimodal=2,
        hidden_size_override=64,
        max_latent_resolution=16,
        vae_latent_dim=4,
        pooled_text_embed_dim=32,
        token_level_text_embed_dim=32,
        dtype=mx.float32,
        float16_dtype=mx.float32,
        low_memory_mode=False,
    )
    return build_random(config, (8, 8, 4), name="tiny-random", num_tokens=6, seed=1)
