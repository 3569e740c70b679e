import mlx.core as mx
import pytest


@pytest.fixture
def weight() -> mx.array:
    """A (48, 256) float32 weight with per-row scale spread and a few outliers."""
    key = mx.random.key(0)
    k1, k2 = mx.random.split(key)
    w = mx.random.normal((48, 256), key=k1) * mx.linspace(0.01, 0.2, 48)[:, None]
    return w + 0.5 * (mx.random.uniform(shape=w.shape, key=k2) > 0.995)
