"""Calibration trajectories against DiffusionKit, and what the calib group holds."""

import numpy as np

from taq_calib import CalibConfig, calibrate
from taq_io import Store
from taq_model.testing import diffusionkit_trajectory
from taq_run.runs import model_identity


def test_two_prompt_trajectories_equal_diffusionkit(random_handle, tmp_path):
    store = Store.create(tmp_path / "run.zarr", model_identity(random_handle))
    config = CalibConfig(
        model=random_handle.name, prompts=("a cat", "a dog"), num_images=2, num_steps=6, cfg=4.0
    )
    calibrate(random_handle, store, config)
    group = store.require_group("calib")
    latents, finals = group.read("latents"), group.read("final_latents")
    for image, prompt in enumerate(config.prompts):
        steps, final = diffusionkit_trajectory(random_handle, prompt, image, 6, 4.0)
        scale = max(1.0, float(np.abs(steps).max()))
        assert np.abs(latents[image] - steps).max() <= 1e-5 * scale
        assert np.abs(finals[image] - final).max() <= 1e-5 * scale
    assert np.abs(finals[0] - finals[1]).max() > 1e-3


def test_stride_stores_every_kth_step(random_handle, tmp_path):
    store = Store.create(tmp_path / "run.zarr", model_identity(random_handle))
    config = CalibConfig(
        model=random_handle.name, prompts=("p",), num_images=1, num_steps=7, cfg=2.0, stride=3
    )
    calibrate(random_handle, store, config)
    group = store.require_group("calib")
    assert group.read("step_index").tolist() == [0, 3, 6]
    assert group.read("latents").shape == (1, 3, 8, 8, 4)
    sigmas = group.read("sigmas")
    assert sigmas.shape == (8,) and sigmas[-1] == 0.0
    np.testing.assert_allclose(group.read("timesteps"), sigmas[[0, 3, 6]] * 1000, rtol=1e-6)
    assert group.read("seeds").tolist() == [0]
