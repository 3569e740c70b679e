"""Our sampler against DiffusionKit's own `sample_euler`, prompt after prompt."""

from types import SimpleNamespace

from taq_model.compat import import_diffusionkit
from taq_model.sampling import initial_noise, sample_euler, sigma_schedule

import mlx.core as mx
import numpy as np
import pytest


def reference_pipeline(handle):
    """The attributes DiffusionKit's `sample_euler`/`CFGDenoiser` read from a pipeline."""
    dk = import_diffusionkit()
    from diffusionkit.mlx.sampler import ModelSamplingDiscreteFlow

    pipe = SimpleNamespace(
        mmdit=handle.mmdit,
        sampler=ModelSamplingDiscreteFlow(shift=handle.shift),
        activation_dtype=mx.float32,
        load_mmdit=lambda only_modulation_dict=True: handle.modulation_weights(),
    )
    return dk, pipe


def reference_trajectory(handle, prompt, seed, num_steps, cfg):
    dk, pipe = reference_pipeline(handle)
    bare = dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)
    sigmas = bare.get_sigmas(pipe.sampler, num_steps)
    noise = bare.get_noise(seed, mx.zeros((1, *handle.latent_shape)))
    c = handle.encode([prompt])
    extra = {
        "conditioning": mx.concatenate([c.tokens, c.negative_tokens]),
        "cfg_weight": cfg,
        "pooled_conditioning": mx.concatenate([c.pooled, c.negative_pooled]),
    }
    latent, _ = dk.sample_euler(dk.CFGDenoiser(pipe), noise, sigmas, extra_args=extra)
    return sigmas, latent


@pytest.mark.parametrize("shift", [1.0, 3.0], ids=["shift1", "shift3"])
def test_sigma_schedule_matches_diffusionkit(shift, random_handle):
    dk, _ = reference_pipeline(random_handle)
    from diffusionkit.mlx.sampler import ModelSamplingDiscreteFlow

    bare = dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)
    ref = bare.get_sigmas(ModelSamplingDiscreteFlow(shift=shift), 12)
    ours = sigma_schedule(12, shift)
    assert ours.shape == (13,)
    np.testing.assert_array_equal(np.array(ours), np.array(ref))


def test_initial_noise_matches_diffusionkit(random_handle):
    dk, _ = reference_pipeline(random_handle)
    bare = dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)
    ref = bare.get_noise(7, mx.zeros((1, 8, 8, 4)))
    np.testing.assert_array_equal(np.array(initial_noise(7, (8, 8, 4))), np.array(ref))


def run_two_prompts(handle, prompts, num_steps, cfg):
    """Two prompts one after the other in one process: needs the adaLN reload between."""
    sigmas = sigma_schedule(num_steps, handle.shift)
    outs = []
    for i, prompt in enumerate(prompts):
        c = handle.encode([prompt])
        outs.append(
            sample_euler(handle, c, initial_noise(10 + i, handle.latent_shape), sigmas, cfg)
        )
    return outs


def test_random_config_trajectories_equal_diffusionkit(random_handle):
    prompts = ["a cat", "a dog"]
    ours = run_two_prompts(random_handle, prompts, num_steps=6, cfg=4.0)
    for i, prompt in enumerate(prompts):
        _, ref = reference_trajectory(random_handle, prompt, 10 + i, 6, 4.0)
        assert float(mx.abs(ours[i] - ref).max()) <= 1e-5 * max(1.0, float(mx.abs(ref).max()))
    assert float(mx.abs(ours[0] - ours[1]).max()) > 1e-3  # the prompts really differ


def test_modulation_weights_are_restored_after_sampling(random_handle):
    before = {k: np.array(v) for k, v in random_handle.modulation_weights()}
    run_two_prompts(random_handle, ["x"], num_steps=2, cfg=2.0)
    from mlx.utils import tree_flatten

    after = dict(tree_flatten(random_handle.mmdit.parameters()))
    for key, value in before.items():
        np.testing.assert_array_equal(np.array(after[key]), value)
    assert not hasattr(random_handle.mmdit.final_layer, "_modulation_params")


def test_no_cfg_runs_single_batch(random_handle):
    sigmas = sigma_schedule(3, random_handle.shift)
    c = random_handle.encode(["a cat"])
    out = sample_euler(random_handle, c, initial_noise(0, (8, 8, 4)), sigmas, cfg=0.0)
    assert out.shape == (1, 8, 8, 4)
    assert np.isfinite(np.array(out)).all()


def test_sigma_schedule_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least 1"):
        sigma_schedule(0)
