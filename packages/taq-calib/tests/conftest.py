import os
import subprocess
import sys

from taq_model.testing import tiny_random_handle

import pytest


@pytest.fixture(scope="session")
def random_handle():
    return tiny_random_handle(seed=1)


def run_calib(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAQ_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taq_calib", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )


@pytest.fixture
def calib_cli():
    return run_calib
