import mlx.core as mx
import numpy as np
import pytest

from taq_model.presets import ModelError
from taq_shapes.grammar import prompt_labels
from taq_shapes.model import (
    TINY_SHAPES_WEIGHTS,
    ShapesConditioner,
    images_to_latents,
    latents_to_images,
)
from taq_shapes.preset import build_tiny_shapes
from taq_shapes.render import make_dataset


def test_latents_are_the_image_folded_into_channels():
    images, _ = make_dataset(4, seed=0)
    latents = images_to_latents(images)
    assert latents.shape == (4, 16, 16, 12)
    assert latents.min() >= -1 and latents.max() <= 1
    assert np.array_equal(latents_to_images(latents), images)
    # channel block k of latent pixel (i, j) is image pixel (2i + k // 2, 2j + k % 2)
    assert np.allclose(latents[0, 3, 5, 9:12], images[0, 7, 11] / 127.5 - 1)


def test_conditioner_gives_one_token_per_slot_and_mirrored_prompts_one_condition():
    conditioner = ShapesConditioner()
    prompts = ["a red circle right of a blue square", "a blue square left of a red circle", ""]
    tokens, pooled = conditioner(mx.array([prompt_labels(p) for p in prompts]))
    assert tokens.shape == (3, 6, 64) and pooled.shape == (3, 64)
    assert mx.array_equal(tokens[0], tokens[1]).item()
    assert not mx.array_equal(tokens[0], tokens[2]).item()


def test_missing_weights_is_a_model_error_naming_the_trainer(tmp_path):
    with pytest.raises(ModelError, match="train-tiny-shapes"):
        build_tiny_shapes(tmp_path / "none.safetensors")


def test_weights_without_a_recipe_are_a_model_error_naming_the_trainer(tmp_path):
    """The model's size comes from the recipe a trained file carries; a file without one
    (here the shipped tensors with the metadata stripped) is refused, not guessed at."""
    weights = mx.load(str(TINY_SHAPES_WEIGHTS))
    path = tmp_path / "bare.safetensors"
    mx.save_safetensors(str(path), weights)
    with pytest.raises(ModelError, match="no model size.*train-tiny-shapes"):
        build_tiny_shapes(path)
