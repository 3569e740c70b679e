from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import pytest

from taq_model.testing import tiny_config

TIMESTEPS = (1000.0, 500.0)


@dataclass
class TinyRun:
    """A tiny MMDiT with cached modulation and inputs for one forward pass per timestep."""

    mmdit: nn.Module
    latent: mx.array  # (B, H, W, C)
    tokens: mx.array  # (B, L, 1, D)
    timesteps: tuple[float, ...] = TIMESTEPS

    def forward(self, timestep: float) -> mx.array:
        batch = self.latent.shape[0]
        return self.mmdit(self.latent, self.tokens, mx.broadcast_to(mx.array(timestep), (batch,)))


def make_run(batch: int = 1, depth_unified: int = 0, seed: int = 0) -> TinyRun:
    config = tiny_config(latent_channels=1, depth_unified=depth_unified)  # stubs torch first
    from diffusionkit.mlx.mmdit import MMDiT

    mx.random.seed(seed)
    mmdit = MMDiT(config)
    key = mx.random.key(seed + 1)
    k1, k2, k3 = mx.random.split(key, 3)
    pooled = mx.random.normal((batch, 32), key=k1)
    mmdit.cache_modulation_params(pooled, mx.array(TIMESTEPS))
    latent = mx.random.normal((batch, 8, 8, 1), key=k2)
    tokens = mx.random.normal((batch, 5, 1, 32), key=k3)
    return TinyRun(mmdit, latent, tokens)


@pytest.fixture
def run_factory():
    return make_run


@pytest.fixture
def run() -> TinyRun:
    return make_run()


@pytest.fixture
def cfg_run() -> TinyRun:
    """A classifier-free-guidance batch: conditional and unconditional halves."""
    return make_run(batch=2)
