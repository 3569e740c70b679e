"""Contract between taq-calib and every later stage: replaying the calib group's latents
through `forward_calibration` sees exactly what the sampler saw."""

import mlx.core as mx
import numpy as np

from taq_calib import CalibConfig, calibrate
from taq_io import Store
from taq_run.runs import forward_calibration, model_identity


def test_replayed_outputs_reproduce_the_stored_trajectory(random_handle, tmp_path):
    store = Store.create(tmp_path / "run.zarr", model_identity(random_handle))
    config = CalibConfig(
        model=random_handle.name, prompts=("a cat", "a dog"), num_images=2, num_steps=5, cfg=3.0
    )
    calibrate(random_handle, store, config)
    calib = store.require_group("calib")
    latents, sigmas = calib.read("latents"), calib.read("sigmas")
    for fwd in forward_calibration(random_handle, calib, images=[1, 0], steps=range(5)):
        x = mx.array(latents[fwd.image, fwd.step])[None]
        sigma = mx.array(sigmas[fwd.step])
        denoised = mx.concatenate([x] * 2) - fwd.output * sigma.reshape(1, 1, 1)
        cond, uncond = denoised.split(2)
        denoised = uncond + config.cfg * (cond - uncond)
        d = (x - denoised) / sigma[None, None, None, None]
        x_next = x + d * (mx.array(sigmas[fwd.step + 1]) - sigma)
        if fwd.step + 1 < 5:
            expected = latents[fwd.image, fwd.step + 1]
        else:
            expected = calib.read("final_latents")[fwd.image]
        np.testing.assert_array_equal(np.array(x_next[0]), expected)
