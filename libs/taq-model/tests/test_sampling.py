"""Our sampler against DiffusionKit's own `sample_euler`, prompt after prompt."""

import mlx.core as mx
import numpy as np
import pytest

from taq_model.compat import import_diffusionkit
from taq_model.sampling import initial_noise, sample_euler, sigma_schedule
from taq_model.testing import diffusionkit_trajectory


def bare_pipeline():
    """DiffusionKit's pipeline object without its models: enough for sigmas and noise."""
    dk = import_diffusionkit()
    return dk.DiffusionPipeline.__new__(dk.DiffusionPipeline)


@pytest.mark.parametrize("shift", [1.0, 3.0], ids=["shift1", "shift3"])
def test_sigma_schedule_matches_diffusionkit(shift):
    from diffusionkit.mlx.sampler import ModelSamplingDiscreteFlow

    ref = bare_pipeline().get_sigmas(ModelSamplingDiscreteFlow(shift=shift), 12)
    ours = sigma_schedule(12, shift)
    assert ours.shape == (13,)
    np.testing.assert_array_equal(np.array(ours), np.array(ref))


def test_initial_noise_matches_diffusionkit():
    ref = bare_pipeline().get_noise(7, mx.zeros((1, 8, 8, 4)))
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
        _, ref = diffusionkit_trajectory(random_handle, prompt, 10 + i, 6, 4.0)
        assert np.abs(np.array(ours[i][0]) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
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
