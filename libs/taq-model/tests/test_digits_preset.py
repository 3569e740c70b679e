"""The tiny-digits preset's prompts and conditioner."""

import mlx.core as mx
import numpy as np
import pytest

from taq_model.digits import NULL_CLASS, DigitConditioner, parse_digit_prompt
from taq_model.presets import load_preset
from taq_model.sampling import initial_noise, sample_euler, sigma_schedule
from taq_model.testing import diffusionkit_trajectory


@pytest.mark.parametrize(
    "prompt, label", [("digit 0", 0), ("digit 9", 9), (" digit 4 ", 4), ("", 10)]
)
def test_prompts_map_to_classes(prompt, label):
    assert parse_digit_prompt(prompt) == label


@pytest.mark.parametrize("prompt", ["digit 10", "a cat", "Digit 3", "3"])
def test_bad_prompt_lists_what_is_accepted(prompt):
    with pytest.raises(
        ValueError, match=r"accepted prompts are 'digit 0', 'digit 1', \.\.\., 'digit 9'"
    ):
        parse_digit_prompt(prompt)


def test_conditioner_shapes():
    tokens, pooled = DigitConditioner()(mx.array([3, NULL_CLASS]))
    assert tokens.shape == (2, 4, 64) and pooled.shape == (2, 64)


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
