"""taq-run: the calib contract round trip (what its owner writes, its decoders and
`forward_calibration` read back exactly as the sampler ran), the quant_config owner's plan
round trip, a store of another model refused, and the weights owner's config and record."""

import mlx.core as mx
import numpy as np
import pytest

from taq_io import ModelIdentity, ModelMismatchError, Store
from taq_model.sampling import initial_noise, sample_euler, timesteps_for
from taq_run.calib import (
    CalibConfig,
    CalibImage,
    calib_conditioning,
    calib_seeds,
    calib_timesteps,
    create_calib_group,
    read_calib_image,
    require_calib,
    write_calib_image,
)
from taq_run.quant_config import (
    AnalyzeConfig,
    create_quant_config_group,
    read_quant_plan,
    read_tiers,
    require_quant_config,
)
from taq_run.runs import forward_calibration, model_identity, refuse_other_model
from taq_run.weights import GridConfig, recorded_config

STEPS, CFG = 4, 3.0


def write_calib(handle, store: Store, prompts: tuple[str, ...]) -> list[CalibImage]:
    """Sample `prompts` (seeds 0, 1, ...) and store every step's input through the owner;
    the images written."""
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
    written = []
    for image, prompt in enumerate(prompts):
        conditioning, seen = handle.encode([prompt]), []

        def record(_: int, x: mx.array, seen: list = seen) -> None:
            seen.append(x[0])

        noise = initial_noise(config.seed_of(image), handle.latent_shape)
        final = sample_euler(handle, conditioning, noise, sigmas, CFG, on_step=record)
        sampled = CalibImage(
            np.array(mx.stack(seen), np.float32),
            np.array(final[0], np.float32),
            np.array(conditioning.tokens[0], np.float32),
            np.array(conditioning.pooled[0], np.float32),
            prompt,
            config.seed_of(image),
        )
        write_calib_image(group, image, sampled)
        written.append(sampled)
    group.mark_complete()
    return written


def test_the_calib_owner_decodes_each_image_as_it_was_encoded(random_handle, tmp_path):
    store = Store.create(tmp_path / "run.zarr", model_identity(random_handle))
    written = write_calib(random_handle, store, ("a cat", "a dog"))
    calib = require_calib(store)
    for index, sampled in enumerate(written):
        image = read_calib_image(calib, index)
        assert (image.prompt, image.seed) == (sampled.prompt, sampled.seed)
        for name in ("latents", "final", "tokens", "pooled"):
            np.testing.assert_array_equal(getattr(image, name), getattr(sampled, name))
        conditioning = calib_conditioning(calib, index)
        np.testing.assert_array_equal(np.array(conditioning.tokens[0]), sampled.tokens)
        np.testing.assert_array_equal(np.array(conditioning.pooled[0]), sampled.pooled)
    assert calib_seeds(calib) == [0, 1]
    sigmas = random_handle.sigmas(STEPS)
    np.testing.assert_array_equal(
        calib_timesteps(calib), np.array(timesteps_for(sigmas), np.float32)[:STEPS]
    )


def test_the_quant_config_owner_decodes_the_plan_it_encoded(tmp_path):
    store = Store.create(tmp_path / "run.zarr", ModelIdentity("tiny-digits", "0123456789abcdef"))
    names = ["mm0.image.attn.q_proj", "mm0.image.mlp.fc2", "mm0.text.mlp.fc2"]
    steps, channel = 2, 4
    rng = np.random.default_rng(0)
    bits = np.array([[4, 6, 8], [8, 8, 4]], np.int32)
    smoothing = np.ones((3, channel), np.float32)
    smoothing[1, :2] = [0.5, 2.0]  # mm0.image.mlp.fc2 is smoothed
    smoothing[2, 3] = np.nan  # padding beyond a narrower layer
    constants = {
        "layer_names": names,
        "in_features": np.array([4, 4, 3], np.int32),
        "step_index": np.arange(steps, dtype=np.int32),
        "timesteps": np.array([1000.0, 500.0], np.float32),
        "post_gelu": np.array([False, True, True]),
        "bits": bits,
        "scale": rng.random((steps, 3), np.float32),
        "shift": rng.random((steps, 3, channel), np.float32),
        "smoothing": smoothing,
        "sq_bits": np.full((steps, 3), 4, np.int32),
        "sq_scale": rng.random((steps, 3), np.float32),
        **{
            name: rng.random((steps, 3), np.float32)
            for name in ("absmax", "quant_absmax", "mean_square", "sq_absmax")
        },
    }
    create_quant_config_group(
        store,
        AnalyzeConfig(),
        producer="test",
        inputs={},
        sizes={"layer": 3, "step": steps, "channel": channel},
        constants=constants,
    )
    group = require_quant_config(store)
    plan = read_quant_plan(group)
    assert plan.layer_names == names
    for name in ("in_features", "timesteps", "post_gelu", "bits", "scale", "sq_bits", "shift"):
        np.testing.assert_array_equal(getattr(plan, name), constants[name])
    np.testing.assert_array_equal(plan.smoothing, smoothing)
    tiers = read_tiers(group)
    assert tiers.layer_names == names and tiers.smoothed.tolist() == [False, True, False]
    assert tiers.average_bits() == pytest.approx(38 / 6)
    assert tiers.average_bits(smoothquant=True) == 4.0


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
