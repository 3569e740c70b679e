"""The FLUX-like tiny model (MM + unified blocks, rotary positions) through every stage, with
the mm path's equivalence checks: every stage covers the unified layers, the packed model
samples like a reference holding the dequantized weights, and the exported checkpoint
reproduces the store's samples bit for bit."""

import numpy as np
import pytest
from PIL import Image

from taq_infer import cli as infer_cli
from taq_infer import load_quantized
from taq_infer.artifacts import read_weight_set
from taq_infer.checkpoint import load_checkpoint
from taq_infer.testing import relative_error
from taq_model.presets import load_preset
from taq_model.taxonomy import quantizable_layers
from taq_pipeline import cli as taq_cli

FLUX, FLUX_STEPS = "flux-schnell-tiny", 4  # the `flux_store` fixture's model and steps
PROMPTS, SEEDS = ["a red cube", "a blue ball"], [0, 1]


def generate(model) -> np.ndarray:
    return np.array(model.generate(PROMPTS, SEEDS, FLUX_STEPS, 0.0))


def test_every_stage_covers_the_unified_blocks(flux_store):
    store, compact, _ = flux_store
    layers = [r.name for r in quantizable_layers(load_preset(FLUX).mmdit)]
    unified = [name for name in layers if name.startswith("uni")]
    assert len(unified) == 12  # 2 blocks x 6 roles
    blockio = store.require_group("blockio", "uni1")
    assert blockio.read("unified_modulation").shape[1] > 0
    weights = store.require_group("weights", "adaround")
    assert weights.read("block_names").tolist() == ["mm0", "mm1", "uni0", "uni1"]
    assert weights.read("present")[2:, 2].all()
    rtn = store.require_group("weights", "rtn")
    assert (weights.read("fc1_weight")[2:, 2] != rtn.read("fc1_weight")[2:, 2]).any()
    stats = store.require_group("actstats")
    assert stats.read("layer_names").tolist() == layers
    absmax = stats.read("absmax")  # (image, layer, step)
    assert np.isfinite(absmax).all() and (absmax > 0).all()
    plan = store.require_group("quant_config")
    assert plan.read("layer_names").tolist() == layers
    assert set(np.unique(plan.read("bits"))) <= {4, 6, 8}
    assert np.isfinite(plan.read("scale")).all() and (plan.read("scale") > 0).all()
    assert compact.quantized_layers == len(layers)


def test_time_aware_grids_are_capped_at_the_unified_layers_learned_range(flux_store):
    store = flux_store[0]
    plan = store.require_group("quant_config")
    adaround = store.require_group("weights", "adaround")
    assert plan.meta.inputs["weights/adaround"] == adaround.identity()
    static = read_weight_set(store, "adaround").static_activations
    names = plan.read("layer_names").tolist()
    learned = np.array([static[n].scale[0] * 127 for n in names])
    grid = plan.read("scale") * (2.0 ** (plan.read("bits") - 1) - 1)  # (step, layer)
    assert (grid <= learned[None, :] * (1 + 1e-6)).all()
    assert any(n.startswith("uni") for n in names)


@pytest.mark.parametrize("act", ["none", "static"])
def test_packed_adaround_equals_dequantized_reference(flux_store, act, packed_sample):
    store = flux_store[0]
    packed = packed_sample(store, "adaround", act, False, PROMPTS, SEEDS, FLUX_STEPS, 0.0)
    reference = packed_sample(store, "adaround", act, True, PROMPTS, SEEDS, FLUX_STEPS, 0.0)
    assert relative_error(packed, reference) <= 1e-6
    fp = load_preset(FLUX).generate(PROMPTS, SEEDS, FLUX_STEPS, 0.0)
    assert relative_error(packed, fp) > 1e-5  # W4 acts: the bound above can fail


@pytest.mark.parametrize("act", ["timestep", "static", "none"])
def test_checkpoint_samples_bit_identical_to_store(flux_store, act):
    store, compact, exact = flux_store
    from_store = load_quantized(load_preset(FLUX), store, act=act, other_dtype="float32")
    assert np.array_equal(generate(from_store), generate(load_checkpoint(exact.output, act=act)))
    twin = load_quantized(
        load_preset(FLUX),
        store,
        act=act,
        scale_dtype="float16",
        other_dtype="float16",
        modulation_bits=4,
    )
    assert np.array_equal(generate(twin), generate(load_checkpoint(compact.output, act=act)))


def test_the_plan_is_checked_against_flux_schedule(flux_store):
    """Asking for the calibrated step count up front binds FLUX's own schedule (it used to be
    checked against SD3's and refused)."""
    store, compact, _ = flux_store
    for model in (
        load_quantized(load_preset(FLUX), store, num_steps=FLUX_STEPS),
        load_checkpoint(compact.output, num_steps=FLUX_STEPS),
    ):
        assert model.act == "timestep"
        assert model.prepare(FLUX_STEPS) == "timesteps match the schedule"


@pytest.fixture
def command(capsys):
    """A console entry point's `main` in this process, as `taq ...` / `taq-infer ...`."""

    def run(module, *args) -> tuple[int, str, str]:
        capsys.readouterr()
        code = module.main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_cli_export_and_checkpoint_png_equal_the_store_png(flux_store, tmp_path, command):
    store = flux_store[0]
    model = tmp_path / "exact.safetensors"
    code, out, err = command(
        taq_cli,
        "export",
        "--store",
        store.path,
        "--output",
        model,
        "--dtype",
        "float32",
        "--modulation-bits",
        "0",
    )
    assert code == 0, err
    assert "% of the float16 MMDiT" in out
    common = ("--prompt", "a red cube", "--steps", FLUX_STEPS, "--seed", 2)
    code, _, err = command(
        infer_cli, "--store", store.path, "--output", tmp_path / "a.png", *common
    )
    assert code == 0, err
    code, _, err = command(
        infer_cli, "--checkpoint", model, "--output", tmp_path / "b.png", *common
    )
    assert code == 0, err
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert np.asarray(Image.open(tmp_path / "a.png")).std() > 0  # a picture, not a blank
