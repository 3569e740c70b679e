import shutil
from functools import partial

import pytest

from taq_runtime.testing import run_command

run_cli = partial(run_command, "taq_actstats")


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture
def store_copy(calib_store, tmp_path):
    """A writable copy of the shared calib store (from taq-calib's pytest plugin)."""
    path = tmp_path / "run.zarr"
    shutil.copytree(calib_store, path)
    return path


@pytest.fixture(scope="session")
def collected_store(calib_store, tmp_path_factory):
    """The calib store with actstats collected once (copy it before analyzing)."""
    path = tmp_path_factory.mktemp("collected") / "run.zarr"
    shutil.copytree(calib_store, path)
    out = run_cli("collect", "--store", path)
    assert out.returncode == 0, out.stderr
    return path


@pytest.fixture
def collected_copy(collected_store, tmp_path):
    path = tmp_path / "collected.zarr"
    shutil.copytree(collected_store, path)
    return path
