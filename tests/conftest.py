import shutil
import time
from pathlib import Path

from taq_model.testing import tiny_random_handle

import pytest

from taq_pipeline.testing import MINIMAL, taq


@pytest.fixture(scope="session")
def random_handle():
    return tiny_random_handle(seed=1)


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One uninterrupted minimal `taq run` (store + report), built once per session: the
    reference of the kill tests and the source every store-integrity test copies."""
    store = tmp_path_factory.mktemp("ref") / "run.zarr"
    start = time.perf_counter()
    out = taq("run", "--store", store, *MINIMAL)
    assert out.returncode == 0, out.stderr
    assert time.perf_counter() - start < 180
    return store, out


@pytest.fixture
def store_copy(finished, tmp_path) -> Path:
    """A private copy of the finished store (and its report directory) to damage."""
    source = finished[0]
    path = tmp_path / "run.zarr"
    shutil.copytree(source, path)
    report = source.parent / f"{source.stem}-report"
    shutil.copytree(report, tmp_path / f"{path.stem}-report")
    return path
