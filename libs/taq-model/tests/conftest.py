from taq_model.testing import tiny_random_handle

import pytest


@pytest.fixture(scope="session")
def random_handle():
    return tiny_random_handle(seed=1)


@pytest.fixture(scope="session")
def random_handle_factory():
    return tiny_random_handle
