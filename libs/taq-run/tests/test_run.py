"""taq-run: the calib contract round trip (what its owner writes, `forward_calibration`
replays exactly as the sampler ran), a store of another model refused, and the weights
owner's config and record."""

import mlx.core as mx
import numpy as np
import pytest

from taq_io import ModelIdentity, ModelMismatchError, Store
from taq_model.sampling import initial_noise, sample_euler, timesteps_for
from taq_run.calib import CalibConfig, calib_unit, create_calib_group, require_calib
from taq_run.quant_config import AnalyzeConfig
from taq_run.runs import forward_calibration, model_identity, refuse_other_model
from taq_run.weights import GridConfig, recorded_config

STEPS, CFG = 4, 3.0


def write_calib(handle, store: Store, prompts: tuple[str, ...]) -> CalibConfig:
    """Sample `prompts` (seeds 0, 1, ...) and store every step's input through the owner."""
    config = CalibConfig(handle.name, prompts, len(prompts), STEPS, CFG)
    sigmas = handle.sigmas(STEPS)
    negative = handle.encode([prompts[0]])
    group = create_calib_group(
        store,
        config,
        producer="test",
        latent_shape=handle.latent_shape,
        sigmas=np.array(sigmas, np.float32),
        timesteps=np.array(timesteps_for(sigmas), np.float32),
        negative_tokens=np.array(negative.negative_tokens[0], np.float32),
        negative_pooled=np.array(negative.negative_pooled[0], np.float32),
    )
    for image, prompt in enumerate(prompts):
        conditioning, seen = handle.encode([prompt]), []

        def record(_: int, x: mx.array, seen: list = seen) -> None:
            seen.append(x[0])

        noise = initial_noise(config.seed_of(image), handle.latent_shape)
        final = sample_euler(handle, conditioning, noise, sigmas, CFG, on_step=record)
        unit = calib_unit(
            np.array(mx.stack(seen), np.float32),
            np.array(final[0], np.float32),
            np.array(conditioning.tokens[0], np.float32),
            np.array(conditioning.pooled[0], np.float32),
            prompt,
            config.seed_of(image),
        )
        group.write_unit(image, unit)
    group.mark_complete()
    return config


def test_replay_through_the_owner_reproduces_the_sampled_trajectory(random_handle, tmp_path):
    store = Store.create(tmp_path / "run.zarr", model_identity(random_handle))
    write_calib(random_handle, store, ("a cat", "a dog"))
    calib = require_calib(store)
    latents, sigmas = calib.read("latents"), calib.read("sigmas")
    for fwd in forward_calibration(random_handle, calib, images=[1, 0], steps=range(STEPS)):
        x, sigma = mx.array(latents[fwd.image, fwd.step])[None], mx.array(sigmas[fwd.step])
        cond, uncond = (mx.concatenate([x] * 2) - fwd.output * sigma).split(2)
        d = (x - (uncond + CFG * (cond - uncond))) / sigma
        x_next = np.array((x + d * (mx.array(sigmas[fwd.step + 1]) - sigma))[0])
        last = fwd.step + 1 == STEPS
        expected = calib.read("final_latents") if last else latents[:, fwd.step + 1]
        np.testing.assert_array_equal(x_next, expected[fwd.image])


def test_a_store_of_another_preset_is_refused_before_a_model_is_built(tmp_path):
    Store.create(tmp_path / "run.zarr", ModelIdentity("tiny-digits", "0123456789abcdef"))
    with pytest.raises(ModelMismatchError, match="is for model tiny-digits"):
        refuse_other_model(tmp_path / "run.zarr", "sd3-medium-random")


def test_weights_record_their_method_config_blocks_and_format():
    config = GridConfig(bits_w=3, scale_method="minmax")
    record = recorded_config(config, ("mm0", "mm1"), "rtn")
    assert record["bits_w"] == 3 and record["blocks"] == ["mm0", "mm1"]
    assert record["scale_method"] == "minmax" and record["bits_a"] == 0
    assert record["method"] == "rtn" and record["format"] == "mlx_affine"


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"scale_method": "max"}, "--scale-method 'max' is unknown"),
        ({"bits_a": 9}, "--bits-a must be 0"),
        ({"bits_w": 1}, "bits"),
    ],
)
def test_grid_config_refuses_bad_flags_by_name(flags, message):
    with pytest.raises(ValueError, match=message):
        GridConfig(**flags)


def test_the_activation_plan_describes_its_recipe_ranges_and_plan():
    assert AnalyzeConfig.for_recipe("taq").describe() == (
        "recipe taq (least-error clip per tier, capped at AdaRound's learned range), "
        "plan time-aware, tiers by rule sqnr (23 dB)"
    )
    paper = AnalyzeConfig.for_recipe("taq-dit", avg_bits=5.0, plan="static")
    assert (
        paper.describe()
        == "recipe taq-dit (AvgMinMax ranges), plan static, tiers by average-bit budget 5"
    )
    widest = AnalyzeConfig.for_recipe("taq", range_method="max", gelu_shift=False)
    assert "grids over 1.5 x the calibration maximum" in widest.describe()
    assert "no post-GELU shift" in widest.describe()
