import os
import shutil
import subprocess
import sys

from taq_model.presets import load_preset

import pytest

from taq_calib import CalibConfig, calibrate
from taq_io import Store


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TAQ_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "taq_actstats", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def digits():
    return load_preset("tiny-digits")


@pytest.fixture(scope="session")
def calib_store(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "run.zarr"
    store = Store.create(path, digits.identity)
    config = CalibConfig("tiny-digits", ("digit 2", "digit 7"), num_images=3, num_steps=6, cfg=3.0)
    calibrate(digits, store, config)
    return path


@pytest.fixture
def store_copy(calib_store, tmp_path):
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
