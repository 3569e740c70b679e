from taq_model import digit_classifier
from taq_model.digits import (
    NULL_CLASS,
    DigitConditioner,
    load_digit_images,
    parse_digit_prompt,
)

import mlx.core as mx
import numpy as np
import pytest


def test_digit_images_are_16x16_in_unit_range():
    images, labels = load_digit_images()
    assert images.shape == (1797, 16, 16, 1) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert sorted(set(labels.tolist())) == list(range(10))


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


def test_classifier_recognises_held_out_real_digits():
    assert digit_classifier.held_out_accuracy() >= 0.95


def test_frechet_distance_is_small_for_same_distribution_and_grows_with_shift():
    images, _ = load_digit_images()
    feats = digit_classifier.features(images[:600])
    same = digit_classifier.frechet_distance(feats[:300], feats[300:])
    shifted = digit_classifier.frechet_distance(
        feats[:300], digit_classifier.features(images[300:600] * 0.3)
    )
    assert digit_classifier.frechet_distance(feats, feats) < 1e-3
    assert shifted > 5 * same
