"""pytest plugin (entry point `pytest11`): the model fixtures every taq member's tests share.

Nothing is imported at module level beyond pytest: pytest may load this before
`taq_runtime.pytest_plugin` has loaded the optimised BLAS, so MLX is imported only inside
the fixtures.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def random_handle():
    """A 2-block MMDiT with seeded random weights (`taq_model.testing.tiny_random_handle`)."""
    from taq_model.testing import tiny_random_handle

    return tiny_random_handle(seed=1)


@pytest.fixture(scope="session")
def random_handle_factory():
    from taq_model.testing import tiny_random_handle

    return tiny_random_handle


@pytest.fixture(scope="session")
def digits():
    """The shipped tiny-digits preset."""
    from taq_model.presets import load_preset

    return load_preset("tiny-digits")
