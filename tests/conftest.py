import shutil
from pathlib import Path

import pytest
from mlx.utils import tree_unflatten

from taq_actstats.analyze import AnalyzeConfig, analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_adaround.blockio import CacheConfig, cache_block_io
from taq_adaround.optimize import quantize_blocks
from taq_adaround.reconstruct import AdaRoundConfig
from taq_calib import CalibConfig, calibrate
from taq_infer import load_quantized
from taq_infer.checkpoint import ExportConfig, export_checkpoint
from taq_infer.packed import DequantizedLinear
from taq_io import Store
from taq_model.presets import load_preset
from taq_model.taxonomy import quantizable_layers
from taq_pipeline.testing import MINIMAL, taq
from taq_run.runs import model_identity
from taq_run.weight_methods import weight_methods
from taq_run.weights import GridConfig

FLUX = "flux-schnell-tiny"
FLUX_STEPS = 4  # FLUX.1-schnell's own: no CFG


@pytest.fixture(scope="session")
def finished(tmp_path_factory):
    """One uninterrupted minimal `taq run` (store + report), built once per session: the
    reference of the kill tests and the source every store-integrity test copies."""
    store = tmp_path_factory.mktemp("ref") / "run.zarr"
    out = taq("run", "--store", store, *MINIMAL)
    assert out.returncode == 0, out.stderr
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
def build_store(tmp_path_factory):
    """`build(preset, prompts, steps, cfg, iters=10, activations=True)`: a minimal store of
    `preset` (2 calibration images) through calib -> cache -> optimize, and collect -> analyze
    with `activations`, in a fresh folder."""

    def build(preset, prompts, steps, cfg, iters=10, activations=True) -> Store:
        handle = load_preset(preset)
        store = Store.create(tmp_path_factory.mktemp(preset) / "run.zarr", model_identity(handle))
        calibrate(handle, store, CalibConfig(preset, tuple(prompts), 2, steps, cfg))
        cache_block_io(handle, store, CacheConfig())
        methods = weight_methods()
        quantize_blocks(handle, store, methods["rtn"], GridConfig())
        adaround = AdaRoundConfig(iters=iters, batch_size=4, bits_a=8)
        quantize_blocks(handle, store, methods["adaround"], adaround)
        if activations:
            collect_stats(handle, store, CollectConfig())
            analyze_stats(handle, store, AnalyzeConfig())
        return store

    return build


def export_pair(store: Store) -> tuple:
    """The store's default (compact) export and a lossless one (float32, float adaLN), next
    to the store."""
    root = Path(store.path).parent
    compact = export_checkpoint(ExportConfig(str(store.path), str(root / "model.safetensors")))
    exact = ExportConfig(str(store.path), str(root / "exact.safetensors"), dtype="float32")
    exact = export_checkpoint(ExportConfig(**{**exact.__dict__, "modulation_bits": 0}))
    return compact, exact


@pytest.fixture(scope="session")
def exports():
    """`export_pair(store)`: the default export and a lossless one, next to the store."""
    return export_pair


@pytest.fixture(scope="session")
def packed_sample():
    """`sample(store, weights, act, reference, prompts, seeds, steps, cfg)`: final latents of
    the store's packed model, or (`reference`) of one whose packed layers are swapped for
    their dequantized float twins."""

    def sample(store, weights, act, reference, prompts, seeds, steps, cfg):
        handle = load_preset(store.model.preset)
        model = load_quantized(handle, store, weights=weights, act=act)
        model.prepare(steps)
        if reference:
            refs = {r.name: r for r in quantizable_layers(handle.mmdit)}
            swaps = [
                (refs[n].path, DequantizedLinear.from_packed(p)) for n, p in model.layers.items()
            ]
            handle.mmdit.update_modules(tree_unflatten(swaps))
        return model.generate(prompts, seeds, steps, cfg)

    return sample


@pytest.fixture(scope="session")
def flux_store(build_store):
    """The FLUX-like tiny model (2 MM + 2 unified blocks, RoPE) through calib -> cache ->
    optimize -> collect -> analyze -> export, minimal: its store and two exports (the default,
    and a lossless float32 one with float adaLN)."""
    store = build_store(FLUX, ("a cat", "a dog"), FLUX_STEPS, 0.0)
    return (store, *export_pair(store))
