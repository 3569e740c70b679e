import shutil
from functools import partial

import pytest

from taq_runtime.testing import run_command

run_cli = partial(run_command, "taq_adaround")


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def cached_store(calib_store, tmp_path_factory):
    """A copy of the shared calib store (taq-calib's pytest plugin) with blockio for every
    block."""
    path = tmp_path_factory.mktemp("cached") / "run.zarr"
    shutil.copytree(calib_store, path)
    out = run_cli("cache", "--store", path, "--stride", "2")
    assert out.returncode == 0, out.stderr
    return path
