"""Fixtures: tiny real MMDiTs; the MLX kernel choice reset around every test."""

import mlx.core as mx
import pytest

from taq_infer import PackedLinear
from taq_model.testing import tiny_random_handle


@pytest.fixture
def tiny():
    return tiny_random_handle(seed=3)


@pytest.fixture(autouse=True)
def _default_kernel():
    PackedLinear.kernel = "auto"
    yield
    PackedLinear.kernel = "auto"
    mx.clear_cache()
