"""A digit classifier trained on the real digits: accuracy and Fréchet distance of samples.

A one-hidden-layer MLP (scikit-learn, fixed seed, a few seconds to fit) on 16x16 images in
[-1, 1]; its hidden activations are the features for the Fréchet distance (the FID recipe
with a classifier small enough for this dataset).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import linalg

from taq_tiny.data import load_digit_images

HIDDEN = 64
HELD_OUT = 0.2


@cache
def _fit():
    from sklearn.neural_network import MLPClassifier

    images, labels = load_digit_images()
    order = np.random.RandomState(0).permutation(len(labels))
    cut = int(len(labels) * (1 - HELD_OUT))
    train, test = order[:cut], order[cut:]
    model = MLPClassifier(hidden_layer_sizes=(HIDDEN,), max_iter=400, random_state=0, alpha=1e-3)
    model.fit(images[train].reshape(len(train), -1), labels[train])
    return model, test


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


def predict(images: np.ndarray) -> np.ndarray:
    """Digit labels of (N, 16, 16, 1) images in [-1, 1]."""
    model, _ = _fit()
    return model.predict(_flat(images))


def features(images: np.ndarray) -> np.ndarray:
    """Hidden-layer (ReLU) activations, (N, 64)."""
    model, _ = _fit()
    hidden = _flat(images) @ model.coefs_[0] + model.intercepts_[0]
    return np.maximum(hidden, 0.0)


def held_out_accuracy() -> float:
    model, test = _fit()
    images, labels = load_digit_images()
    return float((model.predict(_flat(images[test])) == labels[test]).mean())


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    eps = 1e-6 * np.eye(features_a.shape[1])  # dead ReLU units make covariances singular
    cov_a = np.cov(features_a, rowvar=False) + eps
    cov_b = np.cov(features_b, rowvar=False) + eps
    covmean = np.real(linalg.sqrtm(cov_a @ cov_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))
