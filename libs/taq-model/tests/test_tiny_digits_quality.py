"""The shipped tiny-digits weights draw recognisable digits, and sample like DiffusionKit."""

from taq_model import digit_classifier
from taq_model.presets import load_preset
from taq_model.sampling import initial_noise, sample_euler, sigma_schedule
from taq_model.testing import diffusionkit_trajectory

import numpy as np


def test_generated_digits_are_recognised():
    handle = load_preset("tiny-digits")
    prompts = [f"digit {i % 10}" for i in range(20)]
    latents = np.array(handle.generate(prompts, seeds=list(range(20))))
    predicted = digit_classifier.predict(latents)
    accuracy = (predicted == np.arange(20) % 10).mean()
    assert accuracy >= 0.9, accuracy


def test_tiny_digits_trajectories_equal_diffusionkit():
    handle = load_preset("tiny-digits")
    sigmas = sigma_schedule(8, handle.shift)
    ours = []
    for seed, prompt in enumerate(["digit 2", "digit 7"]):
        x = sample_euler(
            handle, handle.encode([prompt]), initial_noise(seed, (16, 16, 1)), sigmas, 3.0
        )
        ours.append(np.array(x[0]))
    for seed, prompt in enumerate(["digit 2", "digit 7"]):
        _, final = diffusionkit_trajectory(handle, prompt, seed, 8, 3.0)
        assert np.abs(ours[seed] - final).max() <= 1e-5 * max(1.0, np.abs(final).max())
    assert np.abs(ours[0] - ours[1]).max() > 0.1
