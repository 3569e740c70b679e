"""SD3.5 Large and FLUX.1-schnell: refusals of the real presets (no weights here), and their
code path on tiny random configs of the same family against DiffusionKit's own sampler."""

import subprocess
import sys

import numpy as np
import pytest

from taq_model.compat import import_diffusionkit
from taq_model.families import (
    FAMILIES,
    check_fits,
    family_config,
    float32_bytes,
    physical_memory,
    tiny_family_handle,
    wide_family_config,
)
from taq_model.options import ModelOptions, parse_spec
from taq_model.presets import ModelError, load_preset
from taq_model.sampling import flux_sigma_schedule
from taq_model.taxonomy import block_names, quantizable_layers
from taq_model.testing import diffusionkit_trajectory

REAL = ["sd3.5-large", "flux-schnell"]


@pytest.mark.parametrize("steps", [1, 4, 9])
@pytest.mark.parametrize("shift", [1.0, 3.0], ids=["shift1", "shift3"])
def test_flux_schedule_matches_diffusionkit(steps, shift):
    dk = import_diffusionkit()
    from diffusionkit.mlx.sampler import FluxSampler

    bare = dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)
    ref = bare.get_sigmas(FluxSampler(shift=shift), steps)
    ours = flux_sigma_schedule(steps, shift)
    assert ours.shape == (steps + 1,) and ours[-1].item() == 0.0
    np.testing.assert_array_equal(np.array(ours), np.array(ref))


@pytest.mark.parametrize("name", REAL)
def test_missing_checkpoint_names_the_file_to_fetch(name, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache
    family = FAMILIES[name]
    with pytest.raises(ModelError, match=f"{family.repo}/{family.checkpoint}.*--local-ckpt"):
        load_preset(name)
    with pytest.raises(ModelError, match="does not exist.*huggingface-cli download"):
        load_preset(name, local_ckpt=str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize("name", REAL)
def test_whole_model_that_does_not_fit_is_refused_before_reading(name, tmp_path):
    needed = float32_bytes(family_config(name))
    assert needed > 30e9  # 8.1 B / 11.9 B parameters
    with pytest.raises(ModelError, match=r"needs \d+\.\d GB in float32.*more memory"):
        check_fits(FAMILIES[name], available=24 * 2**30)
    check_fits(FAMILIES[name], available=needed)  # enough memory: no refusal


@pytest.mark.skipif(physical_memory() > 30e9, reason="this machine could hold SD3.5 Large")
def test_cli_refuses_a_model_larger_than_this_machine(tmp_path):
    ckpt = tmp_path / "sd3.5_large.safetensors"
    ckpt.write_bytes(b"not read: refused before")
    out = subprocess.run(
        [sys.executable, "-m", "taq_model", "sample", "--model", "sd3.5-large"]
        + ["--local-ckpt", str(ckpt), "--output", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "sd3.5-large's MMDiT alone needs 32.6 GB in float32" in line


def test_options_round_trip_through_the_dotted_name():
    name, options = parse_spec("sd3.5-large@512x768+t5")
    assert name == "sd3.5-large" and options == ModelOptions(True, 512, 768)
    assert options.spec(name, FAMILIES[name].pixels) == "sd3.5-large@512x768+t5"
    assert options.latent_shape(FAMILIES[name].latent_shape) == (64, 96, 16)


@pytest.mark.parametrize(
    "name, blocks, tokens, pooled",
    [
        ("sd3.5-large", ["mm0", "mm1"], 154, 2048),
        ("flux-schnell", ["mm0", "mm1", "uni0", "uni1"], 256, 768),
    ],
)
def test_tiny_family_has_the_real_block_kinds_and_conditioning(name, blocks, tokens, pooled):
    handle = tiny_family_handle(name)
    real = family_config(name)
    config = handle.mmdit.config
    assert block_names(handle.mmdit) == blocks
    for key in ("pos_embed_type", "use_qk_norm", "patchify_via_reshape", "vae_latent_dim"):
        assert getattr(config, key) == getattr(real, key), key
    assert bool(config.depth_unified) == bool(real.depth_unified)
    c = handle.encode(["a cat"])
    assert c.tokens.shape == (1, tokens, real.token_level_text_embed_dim)
    assert c.pooled.shape == (1, pooled) == (1, real.pooled_text_embed_dim)
    names = [ref.name for ref in quantizable_layers(handle.mmdit)]
    assert ("uni1.unified.mlp.fc2" in names) == (name == "flux-schnell")
    # a unified model's last MM block keeps its text post-attention layers
    assert ("mm1.text.mlp.fc2" in names) == (name == "flux-schnell")


@pytest.mark.parametrize("name", REAL)
def test_tiny_family_samples_as_diffusionkit_does(name):
    handle = tiny_family_handle(name)
    family = FAMILIES[name]
    assert (handle.default_steps, handle.default_cfg) == (family.default_steps, family.default_cfg)
    ours = np.array(handle.generate(["a cat"], [3])[0])
    _, ref = diffusionkit_trajectory(handle, "a cat", 3, family.default_steps, family.default_cfg)
    assert np.isfinite(ours).all() and np.abs(ours).max() > 0
    assert np.abs(ours - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_flux_identity_records_its_schedule():
    flux, sd35 = tiny_family_handle("flux-schnell"), tiny_family_handle("sd3.5-large")
    assert flux.schedule == "flux" and sd35.schedule == "discrete-flow"
    assert flux.sigmas(4).shape == (5,) and sd35.sigmas(4).shape == (5,)
    assert flux.identity_config["schedule"] == "flux"
    assert "schedule" not in sd35.identity_config  # earlier stores keep their identity


@pytest.mark.parametrize("name", REAL)
def test_tiny_family_is_a_preset_stages_can_rebuild(name):
    handle = load_preset(name + "-tiny")
    again = load_preset(handle.name)
    assert handle.name == name + "-tiny"
    assert again.identity_config == handle.identity_config
    with pytest.raises(ModelError, match="fixed 8x8x16 latent"):
        load_preset(name + "-tiny", options=ModelOptions(height=256))


@pytest.mark.parametrize("name", REAL)
def test_wide_config_keeps_the_real_block_with_two_of_each_kind(name):
    real, wide = family_config(name), wide_family_config(name)
    for field in ("hidden_size", "num_heads", "use_qk_norm", "rope_axes_dim", "patch_size"):
        assert getattr(wide, field) == getattr(real, field), field
    assert wide.depth_multimodal == 2
    assert wide.depth_unified == (2 if real.depth_unified else 0)
    # two of each kind: under 5 GB in float32, where the real model is 32-48 GB
    assert float32_bytes(wide) < 5e9 < 30e9 < float32_bytes(real)


@pytest.mark.parametrize("name", REAL)
def test_wide_preset_refuses_t5_before_building(name):
    with pytest.raises(ModelError, match="drop --t5"):
        load_preset(f"{name}-wide", options=ModelOptions(t5=True))
