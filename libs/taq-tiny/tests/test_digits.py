"""The digits data and the classifier that scores generated digits."""

import numpy as np

from taq_model.presets import load_preset
from taq_tiny import classifier
from taq_tiny.data import load_digit_images


def test_digit_images_are_16x16_in_unit_range():
    images, labels = load_digit_images()
    assert images.shape == (1797, 16, 16, 1) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert sorted(set(labels.tolist())) == list(range(10))


def test_classifier_recognises_held_out_real_digits():
    assert classifier.held_out_accuracy() >= 0.95


def test_frechet_distance_is_small_for_same_distribution_and_grows_with_shift():
    images, _ = load_digit_images()
    feats = classifier.features(images[:600])
    same = classifier.frechet_distance(feats[:300], feats[300:])
    shifted = classifier.frechet_distance(feats[:300], classifier.features(images[300:600] * 0.3))
    assert classifier.frechet_distance(feats, feats) < 1e-3
    assert shifted > 5 * same


def test_shipped_weights_draw_recognisable_digits():
    handle = load_preset("tiny-digits")
    prompts = [f"digit {i % 10}" for i in range(20)]
    latents = np.array(handle.generate(prompts, seeds=list(range(20))))
    predicted = classifier.predict(latents)
    accuracy = (predicted == np.arange(20) % 10).mean()
    assert accuracy >= 0.9, accuracy
