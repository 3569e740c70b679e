import shutil
import time
from pathlib import Path

import pytest

from taq_actstats.analyze import AnalyzeConfig, analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_adaround.blockio import CacheConfig, cache_block_io
from taq_adaround.optimize import optimize_blocks
from taq_adaround.reconstruct import AdaRoundConfig
from taq_calib import CalibConfig, calibrate
from taq_infer.checkpoint import ExportConfig, export_checkpoint
from taq_io import Store
from taq_model.presets import load_preset
from taq_pipeline.testing import MINIMAL, taq

FLUX = "flux-schnell-tiny"
FLUX_STEPS = 4  # FLUX.1-schnell's own: no CFG


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


@pytest.fixture(scope="session")
def flux_store(tmp_path_factory):
    """The FLUX-like tiny model (2 MM + 2 unified blocks, RoPE) through calib -> cache ->
    optimize -> collect -> analyze -> export, minimal: its store and two exports (the default,
    and a lossless float32 one with float adaLN)."""
    handle = load_preset(FLUX)
    root = tmp_path_factory.mktemp("flux")
    store = Store.create(root / "run.zarr", handle.identity)
    calibrate(handle, store, CalibConfig(FLUX, ("a cat", "a dog"), 2, FLUX_STEPS, 0.0))
    cache_block_io(handle, store, CacheConfig())
    optimize_blocks(handle, store, AdaRoundConfig(iters=10, batch_size=4, bits_a=8))
    collect_stats(handle, store, CollectConfig())
    analyze_stats(handle, store, AnalyzeConfig())
    compact = export_checkpoint(ExportConfig(str(store.path), str(root / "model.safetensors")))
    exact = ExportConfig(str(store.path), str(root / "exact.safetensors"), dtype="float32")
    exact = export_checkpoint(ExportConfig(**{**exact.__dict__, "modulation_bits": 0}))
    return store, compact, exact
