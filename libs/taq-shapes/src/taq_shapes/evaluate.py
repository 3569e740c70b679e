"""Prompt adherence of `tiny-shapes` images, GenEval-style, with no learned judge.

The scenes are flat colours on a plain background, so an image is parsed directly:
1. colour segmentation: each pixel takes the nearest palette colour (or the background)
   within `MAX_COLOUR_DISTANCE` in RGB, else none — a colour shift fails here; then a 3x3
   majority filter, so isolated wrong pixels (a generated image's speckle) neither split an
   object nor eat holes in it, while a ring's hole and a cross's arms (3+ pixels) stay;
   unmatched pixels do not vote, so a colour shifted off the palette stays unmatched;
2. connected components per colour (4-neighbour, numpy label propagation), dropping specks
   under `MIN_AREA` pixels — a lost or split object changes the count;
3. shape by template matching: each shape's mask (`render.shape_mask`) drawn into the
   component's bounding box, also shifted by a pixel each way, best IoU wins — a smeared
   ring becomes a circle, a smeared cross a square; size by the bounding box.
Each prompt object is matched by colour (a pair's two objects differ in colour), then scored:
count, colour, shape, size (single objects), relative position (pairs: the centroids must be
at least `POSITION_MARGIN` pixels apart along the relation's axis). Prompt adherence is the
fraction of prompts with everything right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from taq_shapes.grammar import BACKGROUND, COLOUR_NAMES, COLOURS, SHAPES, Scene, parse_prompt
from taq_shapes.render import DIAMETERS, shape_mask

MAX_COLOUR_DISTANCE = 90.0
MIN_AREA = 12
POSITION_MARGIN = 3.0
LARGE_SIDE = (DIAMETERS["small"] + DIAMETERS["large"]) / 2
_PALETTE = np.array([BACKGROUND, *COLOURS.values()], np.float32)  # 0 = background


@dataclass(frozen=True)
class DetectedObject:
    colour: str
    shape: str
    size: str
    cx: float
    cy: float
    area: int


@dataclass(frozen=True)
class PromptScore:
    prompt: str
    count: bool
    colour: float  # fraction of the prompt's objects found with their colour (exactly once)
    shape: float  # fraction found with their colour and shape
    size: bool | None  # single-object prompts only
    position: bool | None  # pair prompts only
    correct: bool


@dataclass(frozen=True)
class AdherenceReport:
    prompts: int
    adherence: float  # fraction of prompts fully correct
    count: float
    colour: float  # over objects
    shape: float  # over objects
    size: float  # over single-object prompts
    position: float  # over pair prompts

    def to_json(self) -> dict:
        return asdict(self)


def segment(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int: 0 background, 1.. palette colour, -1 none."""
    pixels = image.astype(np.float32)[..., None, :]
    distance = np.sqrt(((pixels - _PALETTE) ** 2).sum(-1))
    labels = distance.argmin(-1)
    return majority_filter(np.where(distance.min(-1) <= MAX_COLOUR_DISTANCE, labels, -1))


def majority_filter(regions: np.ndarray) -> np.ndarray:
    """Each pixel takes the most frequent colour label (background included) of its 3x3
    neighbourhood, its own on a tie; unmatched pixels (-1) do not vote, and one with no
    voting neighbour stays unmatched."""
    h, w = regions.shape
    values = np.arange(len(_PALETTE))
    own = regions[None] == values[:, None, None]
    votes = np.pad(own, ((0, 0), (1, 1), (1, 1)))
    counts = sum(votes[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))
    counts = counts + 0.5 * own
    return np.where(counts.max(0) > 0, values[counts.argmax(0)], -1)


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as boolean masks (numpy, no scipy)."""
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(big).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.minimum.reduce(
            [
                padded[1:-1, 1:-1],
                padded[:-2, 1:-1],
                padded[2:, 1:-1],
                padded[1:-1, :-2],
                padded[1:-1, 2:],
            ]
        )
        updated = np.where(mask, neighbours, big)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return [labels == value for value in np.unique(labels[mask])]


# Template placements tried per component: the bounding box moved by these pixel offsets,
# because a generated object's edges are a pixel off here and there. (Shrinking the box as
# well made blurred squares read as circles: a smaller template fits inside any blob.)
_OFFSETS = (-1.0, 0.0, 1.0)


def classify_shape(component: np.ndarray) -> str:
    """The shape whose template, placed in the component's bounding box, overlaps it best."""
    ys, xs = np.nonzero(component)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    centres_x = np.arange(component.shape[1]) + 0.5
    centres_y = np.arange(component.shape[0]) + 0.5
    best = np.zeros(len(SHAPES))
    for dx in _OFFSETS:
        for dy in _OFFSETS:
            u = (centres_x[None, :] - (x0 + x1) / 2 - dx) / ((x1 - x0) / 2)
            v = (centres_y[:, None] - (y0 + y1) / 2 - dy) / ((y1 - y0) / 2)
            for i, shape in enumerate(SHAPES):
                template = shape_mask(shape, u, v)
                union = np.logical_or(template, component).sum()
                best[i] = max(best[i], np.logical_and(template, component).sum() / max(union, 1))
    return SHAPES[int(np.argmax(best))]


def detect_objects(image: np.ndarray) -> list[DetectedObject]:
    """Every object in a (32, 32, 3) uint8 image: colour, shape, size, centroid, area."""
    regions = segment(image)
    found = []
    for index, colour in enumerate(COLOUR_NAMES, start=1):
        for component in connected_components(regions == index):
            area = int(component.sum())
            if area < MIN_AREA:
                continue
            ys, xs = np.nonzero(component)
            side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            size = "large" if side >= LARGE_SIDE else "small"
            shape = classify_shape(component)
            found.append(
                DetectedObject(colour, shape, size, float(xs.mean()), float(ys.mean()), area)
            )
    return found


def _relation_holds(relation: str, first: DetectedObject, second: DetectedObject) -> bool:
    dx, dy = second.cx - first.cx, second.cy - first.cy
    return {
        "left of": dx >= POSITION_MARGIN,
        "right of": -dx >= POSITION_MARGIN,
        "above": dy >= POSITION_MARGIN,
        "below": -dy >= POSITION_MARGIN,
    }[relation]


def score_image(scene: Scene, image: np.ndarray) -> PromptScore:
    """How well one image shows `scene` (see the module docstring)."""
    detected = detect_objects(image)
    count = len(detected) == len(scene.objects)
    matches = []
    for obj in scene.objects:
        same_colour = [d for d in detected if d.colour == obj.colour]
        matches.append(same_colour[0] if len(same_colour) == 1 else None)
    colour_ok = [m is not None for m in matches]
    pairs = zip(matches, scene.objects, strict=True)
    shape_ok = [m is not None and m.shape == o.shape for m, o in pairs]
    size = position = None
    if scene.relation is None:
        size = matches[0] is not None and matches[0].size == scene.objects[0].size
    else:
        position = None not in matches and _relation_holds(scene.relation, *matches)
    correct = count and all(shape_ok) and size is not False and position is not False
    return PromptScore(
        scene.prompt,
        count,
        float(np.mean(colour_ok)),
        float(np.mean(shape_ok)),
        size,
        position,
        bool(correct),
    )


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize(scores: Sequence[PromptScore], objects: Sequence[int]) -> AdherenceReport:
    """Per-prompt scores -> adherence and per-attribute accuracies (objects weight colour
    and shape by how many objects each prompt has)."""
    weights = np.asarray(objects, np.float64)
    return AdherenceReport(
        prompts=len(scores),
        adherence=_mean([s.correct for s in scores]),
        count=_mean([s.count for s in scores]),
        colour=float(np.dot([s.colour for s in scores], weights) / weights.sum()),
        shape=float(np.dot([s.shape for s in scores], weights) / weights.sum()),
        size=_mean([s.size for s in scores if s.size is not None]),
        position=_mean([s.position for s in scores if s.position is not None]),
    )


def evaluate_adherence(
    prompts: Sequence[str], images: np.ndarray
) -> tuple[AdherenceReport, list[PromptScore]]:
    """Score images (N, 32, 32, 3) uint8 against their prompts; the empty prompt is refused."""
    if len(prompts) != len(images):
        raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
    scenes = []
    for prompt in prompts:
        scene = parse_prompt(prompt)
        if scene is None:
            raise ValueError("the empty prompt has nothing to score")
        scenes.append(scene)
    scores = [score_image(scene, image) for scene, image in zip(scenes, images, strict=True)]
    return summarize(scores, [len(s.objects) for s in scenes]), scores
