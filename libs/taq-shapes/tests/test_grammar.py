import numpy as np
import pytest

from taq_shapes.grammar import (
    NULL_LABELS,
    PromptError,
    Scene,
    ShapeObject,
    parse_prompt,
    prompt_labels,
    prompt_set,
    random_scene,
)
from taq_shapes.render import make_dataset


def test_every_drawn_scene_round_trips_through_its_prompt():
    rng = np.random.default_rng(3)
    for _ in range(300):
        scene = random_scene(rng)
        assert parse_prompt(scene.prompt) == scene


def test_prompt_forms():
    single = parse_prompt("a large red ring")
    assert single == Scene((ShapeObject("red", "ring", "large"),))
    pair = parse_prompt("a  Blue cross right of a green triangle")
    assert pair.relation == "right of"
    assert [o.colour for o in pair.objects] == ["blue", "green"]
    assert parse_prompt("") is None and prompt_labels("") == NULL_LABELS


def test_labels_are_canonical_so_mirrored_prompts_are_one_condition():
    assert prompt_labels("a red circle right of a blue square") == prompt_labels(
        "a blue square left of a red circle"
    )
    assert prompt_labels("a red circle below a blue square") == prompt_labels(
        "a blue square above a red circle"
    )
    assert prompt_labels("a red circle left of a blue square") != prompt_labels(
        "a red circle above a blue square"
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "a purple circle",
        "a huge red circle",
        "a red blob",
        "a red circle left of a red square",  # pairs must differ in colour
        "a red circle next to a blue square",
        "digit 3",
    ],
    ids=["colour", "size", "shape", "same-colour-pair", "relation", "other-preset"],
)
def test_bad_prompts_are_refused_with_the_grammar(prompt):
    with pytest.raises(PromptError, match="tiny-shapes"):
        parse_prompt(prompt)


def test_data_set_is_deterministic_in_its_seed():
    a, scenes_a = make_dataset(20, seed=5)
    b, scenes_b = make_dataset(20, seed=5)
    c, _ = make_dataset(20, seed=6)
    assert np.array_equal(a, b) and scenes_a == scenes_b
    assert not np.array_equal(a, c)
    assert a.shape == (20, 32, 32, 3) and a.dtype == np.uint8
    assert prompt_set(5, seed=1) == prompt_set(5, seed=1)
