"""The evaluator on rendered ground truth, on noise, and on deliberately corrupted images."""

from dataclasses import replace

import numpy as np
import pytest

from taq_shapes.evaluate import detect_objects, evaluate_adherence, score_image
from taq_shapes.grammar import COLOUR_NAMES, random_scene
from taq_shapes.render import draw, layout, make_dataset

N = 200


@pytest.fixture(scope="module")
def drawn():
    """(scene, placements) pairs drawn from the grammar."""
    rng = np.random.default_rng(11)
    scenes = [random_scene(rng) for _ in range(N)]
    return [(scene, layout(scene, rng)) for scene in scenes]


def _pairs(drawn):
    return [(s, p) for s, p in drawn if s.relation is not None]


def test_rendered_ground_truth_scores_at_least_98_percent():
    images, scenes = make_dataset(N, seed=2)
    report, _ = evaluate_adherence([s.prompt for s in scenes], images)
    assert report.adherence >= 0.98
    assert min(report.count, report.colour, report.shape, report.size, report.position) >= 0.98


def test_slightly_blurred_ground_truth_still_scores():
    """Generated images have soft edges; a 3x3 box blur must not break the parse."""
    images, scenes = make_dataset(N, seed=3)
    padded = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, i : i + 32, j : j + 32] for i in range(3) for j in range(3)) / 9
    report, _ = evaluate_adherence([s.prompt for s in scenes], blurred.round().astype(np.uint8))
    assert report.adherence >= 0.9


def test_speckled_ground_truth_still_scores():
    """Generated images have stray pixels; 4 % of pixels set to random colours must neither
    split an object nor change its shape (the majority filter)."""
    images, scenes = make_dataset(N, seed=5)
    rng = np.random.default_rng(1)
    speckled = images.copy()
    hit = rng.random(images.shape[:3]) < 0.04
    speckled[hit] = rng.integers(0, 256, (int(hit.sum()), 3), dtype=np.uint8)
    report, _ = evaluate_adherence([s.prompt for s in scenes], speckled)
    assert report.adherence >= 0.95


def test_noise_scores_near_chance():
    _, scenes = make_dataset(N, seed=4)
    noise = np.random.default_rng(0).integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
    report, _ = evaluate_adherence([s.prompt for s in scenes], noise)
    assert report.adherence <= 0.02 and report.count <= 0.05


def test_flags_a_swapped_colour(drawn):
    flagged = 0
    for scene, placements in drawn:
        named = {o.colour for o in scene.objects}
        other = next(c for c in COLOUR_NAMES if c not in named)
        first = placements[0]
        swapped = [replace(first, obj=replace(first.obj, colour=other)), *placements[1:]]
        score = score_image(scene, draw(swapped))
        flagged += not score.correct and score.colour < 1
    assert flagged == len(drawn)


def test_flags_a_removed_object(drawn):
    pairs = _pairs(drawn)
    flagged = 0
    for scene, placements in pairs:
        score = score_image(scene, draw(placements[1:]))
        flagged += not score.correct and not score.count
    assert flagged == len(pairs)


def test_flags_a_moved_object(drawn):
    """The two objects trade places: colours, shapes and count stay right, position fails."""
    pairs = _pairs(drawn)
    flagged = 0
    for scene, (a, b) in pairs:
        moved = [a.moved(b.cx - a.cx, b.cy - a.cy), b.moved(a.cx - b.cx, a.cy - b.cy)]
        score = score_image(scene, draw(moved))
        flagged += not score.correct and score.count and score.shape == 1 and not score.position
    assert flagged == len(pairs)


def test_flags_a_smeared_shape(drawn):
    """A ring whose hole filled in reads as a circle; a cross grown into its box as a square."""
    smeared_of = {"ring": "circle", "cross": "square"}
    cases = [(s, p) for s, p in drawn if p[0].obj.shape in smeared_of]
    flagged = 0
    for scene, placements in cases:
        first = placements[0]
        smeared = replace(first, obj=replace(first.obj, shape=smeared_of[first.obj.shape]))
        score = score_image(scene, draw([smeared, *placements[1:]]))
        flagged += not score.correct and score.shape < 1
    assert cases and flagged == len(cases)


def test_detects_each_object_with_its_attributes(drawn):
    scene, placements = _pairs(drawn)[0]
    found = sorted(detect_objects(draw(placements)), key=lambda d: d.colour)
    expected = sorted(scene.objects, key=lambda o: o.colour)
    assert [(d.colour, d.shape) for d in found] == [(o.colour, o.shape) for o in expected]
