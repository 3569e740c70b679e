"""Draw `tiny-shapes` scenes: 32x32 RGB, flat colours on a plain background (numpy only).

Every shape fills a square box of side `d` in box coordinates (u, v) in [-1, 1]^2, sampled at
pixel centres with hard edges; the evaluator reuses `shape_mask` as its templates. A single
object sits near the centre (small: d = 15, large: d = 23); a pair is two small objects side
by side along the relation's axis, a pixel apart, jittered across it so the model learns the
relation rather than one layout. Objects are as large as the 32x32 canvas allows: at d = 11
the trained model drew a recognisable shape for about half of the small objects and every
large one (d = 19), so size, not the model, limited prompt adherence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from taq_shapes.grammar import BACKGROUND, COLOURS, Scene, ShapeObject, random_scene

IMAGE_SIZE = 32
DIAMETERS = {"small": 15.0, "large": 23.0}
PAIR_OFFSET = 8.0  # each object's distance from the centre along the relation's axis
RING_INNER = 0.5
CROSS_ARM = 1 / 3


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of `shape` at box coordinates (u, v) (both in [-1, 1] inside the box)."""
    inside = (np.abs(u) <= 1) & (np.abs(v) <= 1)
    r2 = u**2 + v**2
    if shape == "circle":
        return inside & (r2 <= 1)
    if shape == "square":
        return inside
    if shape == "triangle":  # apex up
        return inside & (np.abs(u) <= (v + 1) / 2)
    if shape == "ring":
        return inside & (r2 <= 1) & (r2 >= RING_INNER**2)
    if shape == "cross":
        return inside & ((np.abs(u) <= CROSS_ARM) | (np.abs(v) <= CROSS_ARM))
    raise ValueError(f"unknown shape {shape!r}")


@dataclass(frozen=True)
class Placement:
    obj: ShapeObject
    cx: float  # box centre, pixels (x to the right, y down)
    cy: float
    diameter: float

    def mask(self, size: int = IMAGE_SIZE) -> np.ndarray:
        centres = np.arange(size) + 0.5
        u = (centres[None, :] - self.cx) / (self.diameter / 2)
        v = (centres[:, None] - self.cy) / (self.diameter / 2)
        return shape_mask(self.obj.shape, u, v)

    def moved(self, dx: float, dy: float) -> Placement:
        return replace(self, cx=self.cx + dx, cy=self.cy + dy)


def layout(scene: Scene, rng: np.random.Generator) -> list[Placement]:
    """Where each object of `scene` goes (deterministic in `rng`)."""
    centre = IMAGE_SIZE / 2
    if scene.relation is None:
        obj = scene.objects[0]
        jitter = 3 if obj.size == "small" else 2
        cx, cy = centre + rng.integers(-jitter, jitter + 1, 2)
        return [Placement(obj, float(cx), float(cy), DIAMETERS[obj.size])]
    # The first object's offset from the centre along the relation's axis; the second opposite.
    sign = {"left of": -1, "right of": 1, "above": -1, "below": 1}[scene.relation]
    along = [sign * PAIR_OFFSET, -sign * PAIR_OFFSET]
    placements = []
    for obj, offset in zip(scene.objects, along, strict=True):
        a = centre + offset  # no room to jitter along the axis: the canvas is full
        b = centre + rng.integers(-3, 4)
        cx, cy = (a, b) if scene.relation in ("left of", "right of") else (b, a)
        placements.append(Placement(obj, float(cx), float(cy), DIAMETERS["small"]))
    return placements


def draw(placements: list[Placement], size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 (size, size, 3): the background, then each object in order."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = BACKGROUND
    for placement in placements:
        image[placement.mask(size)] = COLOURS[placement.obj.colour]
    return image


def render_scene(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    return draw(layout(scene, rng))


def make_dataset(count: int, seed: int = 0) -> tuple[np.ndarray, list[Scene]]:
    """`count` scenes drawn from the grammar and their images (N, 32, 32, 3) uint8.

    Deterministic in `seed`: the same call gives the same bytes on every machine.
    """
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng) for _ in range(count)]
    images = np.stack([render_scene(scene, rng) for scene in scenes])
    return images, scenes
