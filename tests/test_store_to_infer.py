"""tiny-digits from calibration to packed W4 inference through a real store: the packed
model samples exactly like a reference holding the dequantized AdaRound weights."""

import numpy as np
import pytest
from mlx.utils import tree_unflatten

from taq_actstats.analyze import AnalyzeConfig, analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_adaround.blockio import CacheConfig, cache_block_io
from taq_adaround.optimize import optimize_blocks
from taq_adaround.reconstruct import AdaRoundConfig
from taq_calib import CalibConfig, calibrate
from taq_infer import load_quantized
from taq_infer.artifacts import read_weight_set
from taq_infer.packed import DequantizedLinear
from taq_infer.testing import relative_error
from taq_io import Store
from taq_model.presets import load_preset
from taq_model.taxonomy import quantizable_layers

STEPS = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    handle = load_preset("tiny-digits")
    store = Store.create(tmp_path_factory.mktemp("e2e") / "run.zarr", handle.identity)
    calibrate(handle, store, CalibConfig("tiny-digits", ("digit 3", "digit 8"), 2, STEPS, 3.0))
    cache_block_io(handle, store, CacheConfig())
    optimize_blocks(handle, store, AdaRoundConfig(iters=20, batch_size=4))
    return store


def sample(store, weights, act, reference):
    handle = load_preset("tiny-digits")
    model = load_quantized(handle, store, weights=weights, act=act)
    model.prepare(STEPS)
    if reference:
        refs = {r.name: r for r in quantizable_layers(handle.mmdit)}
        swaps = [(refs[n].path, DequantizedLinear.from_packed(p)) for n, p in model.layers.items()]
        handle.mmdit.update_modules(tree_unflatten(swaps))
    return model.generate(["digit 3", "digit 5"], [0, 1], STEPS, 3.0)


@pytest.mark.parametrize("act", ["none", "static"])
def test_packed_adaround_equals_dequantized_reference(store, act):
    packed = sample(store, "adaround", act, reference=False)
    reference = sample(store, "adaround", act, reference=True)
    assert relative_error(packed, reference) <= 1e-6


def test_rtn_and_adaround_differ(store):
    rtn = sample(store, "rtn", "none", reference=False)
    ada = sample(store, "adaround", "none", reference=False)
    assert relative_error(rtn, ada) > 1e-4


def test_time_aware_grids_are_capped_at_the_learned_static_range(store):
    handle = load_preset("tiny-digits")
    collect_stats(handle, store, CollectConfig())
    uncapped = analyze_stats(handle, store, AnalyzeConfig(static_cap=False)).group
    bits, wide = uncapped.read("bits"), uncapped.read("scale")
    assert "weights/adaround" not in uncapped.meta.inputs
    capped = analyze_stats(handle, store, AnalyzeConfig(), overwrite=True).group
    assert (
        capped.meta.inputs["weights/adaround"]
        == store.require_group("weights", "adaround").identity()
    )
    assert (capped.read("bits") == bits).all()  # the cap never changes a tier
    qmax = 2.0 ** (bits - 1) - 1
    static = read_weight_set(store, "adaround").static_activations
    learned = np.array([static[n].scale[0] * 127 for n in capped.read("layer_names")])
    grid = capped.read("scale") * qmax  # (step, layer) ranges
    assert (grid <= learned[None, :] * (1 + 1e-6)).all()
    assert (capped.read("scale") <= wide).all() and (capped.read("scale") < wide).any()
