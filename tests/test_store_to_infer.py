"""tiny-digits from calibration to packed W4 inference through a real store: the packed
model samples exactly like a reference holding the dequantized AdaRound weights."""

import numpy as np
import pytest

from taq_actstats.analyze import AnalyzeConfig, analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_infer.artifacts import read_weight_set
from taq_infer.testing import relative_error
from taq_model.presets import load_preset

STEPS = 4


SAMPLES = (["digit 3", "digit 5"], [0, 1], STEPS, 3.0)  # prompts, seeds, steps, cfg


@pytest.fixture(scope="module")
def store(build_store):
    return build_store("tiny-digits", ("digit 3", "digit 8"), STEPS, 3.0, 20, activations=False)


@pytest.mark.parametrize("act", ["none", "static"])
def test_packed_adaround_equals_dequantized_reference(store, act, packed_sample):
    packed = packed_sample(store, "adaround", act, False, *SAMPLES)
    reference = packed_sample(store, "adaround", act, True, *SAMPLES)
    assert relative_error(packed, reference) <= 1e-6


def test_rtn_and_adaround_differ(store, packed_sample):
    rtn = packed_sample(store, "rtn", "none", False, *SAMPLES)
    ada = packed_sample(store, "adaround", "none", False, *SAMPLES)
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
