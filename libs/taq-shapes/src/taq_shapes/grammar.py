"""The `tiny-shapes` prompt grammar: a small fixed vocabulary, one token per attribute.

Two prompt forms, each attribute a word the evaluator can check in the image:

    a {size} {colour} {shape}                          e.g. "a small red circle"
    a {colour} {shape} {relation} a {colour} {shape}   e.g. "a red circle left of a blue square"

The two objects of a pair always differ in colour, so the evaluator matches prompt objects to
image objects by colour alone (GenEval's colour-binding task without the ambiguity). Pair
objects are always small. `Scene.labels()` is the conditioner's input: one vocabulary index
per attribute slot (`SLOTS`), 0 meaning "absent" (and the empty prompt is all zeros, the null
condition for classifier-free guidance). The labels are canonical: a pair is written as
(left or upper object, axis, right or lower object), so "a red circle right of a blue square"
and "a blue square left of a red circle" are one condition, and the model binds each slot to
a place instead of also learning the word order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
}
BACKGROUND = (205, 205, 205)
SHAPES = ("circle", "square", "triangle", "ring", "cross")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
COLOUR_NAMES = tuple(COLOURS)

AXES = ("horizontal", "vertical")
# Conditioner slots: (name, vocabulary); index 0 of every slot is "absent".
SLOTS = (
    ("colour", COLOUR_NAMES),
    ("shape", SHAPES),
    ("size", SIZES),
    ("axis", AXES),
    ("colour", COLOUR_NAMES),
    ("shape", SHAPES),
)
NUM_SLOTS = len(SLOTS)


class PromptError(ValueError):
    """A prompt outside the grammar; the message lists what is accepted."""


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str = "small"


@dataclass(frozen=True)
class Scene:
    """What a prompt asks for: one object, or two objects and where the first one is."""

    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # the first object's place relative to the second

    @property
    def prompt(self) -> str:
        first = self.objects[0]
        if self.relation is None:
            return f"a {first.size} {first.colour} {first.shape}"
        second = self.objects[1]
        return f"a {first.colour} {first.shape} {self.relation} a {second.colour} {second.shape}"

    def labels(self) -> list[int]:
        """One vocabulary index (1-based; 0 = absent) per conditioner slot, canonical order."""
        first = self.objects[0]
        if self.relation is None:
            values: list[str | None] = [first.colour, first.shape, first.size, None, None, None]
        else:
            lead, trail = self.objects
            if self.relation in ("right of", "below"):
                lead, trail = trail, lead
            axis = "horizontal" if self.relation in ("left of", "right of") else "vertical"
            values = [lead.colour, lead.shape, None, axis, trail.colour, trail.shape]
        pairs = zip(values, [vocab for _, vocab in SLOTS], strict=True)
        return [0 if v is None else vocab.index(v) + 1 for v, vocab in pairs]


NULL_LABELS = [0] * NUM_SLOTS
GRAMMAR_HELP = (
    "accepted prompts: 'a {small|large} {colour} {shape}' or "
    "'a {colour} {shape} {left of|right of|above|below} a {other colour} {shape}', with colour "
    f"in {', '.join(COLOUR_NAMES)} and shape in {', '.join(SHAPES)}"
)


def _object(words: list[str], prompt: str) -> ShapeObject:
    colour, shape = words
    if colour not in COLOURS or shape not in SHAPES:
        raise PromptError(f"bad prompt {prompt!r} for tiny-shapes: {GRAMMAR_HELP}")
    return ShapeObject(colour, shape)


def parse_prompt(prompt: str) -> Scene | None:
    """A prompt -> its `Scene`; the empty prompt -> None (the null condition)."""
    text = " ".join(prompt.lower().split())
    if not text:
        return None
    words = text.split(" ")
    bad = PromptError(f"bad prompt {prompt[:80]!r} for tiny-shapes: {GRAMMAR_HELP}")
    if len(words) == 4 and words[0] == "a":
        if words[1] not in SIZES:
            raise bad
        obj = _object(words[2:], prompt)
        return Scene((ShapeObject(obj.colour, obj.shape, words[1]),))
    for relation in RELATIONS:
        rel = relation.split(" ")
        n = len(rel)
        if len(words) == 6 + n and words[0] == "a" and words[3 : 3 + n] == rel:
            if words[3 + n] != "a":
                raise bad
            first = _object(words[1:3], prompt)
            second = _object(words[4 + n :], prompt)
            if first.colour == second.colour:
                raise PromptError(
                    f"bad prompt {prompt[:80]!r} for tiny-shapes: the two objects must differ "
                    "in colour"
                )
            return Scene((first, second), relation)
    raise bad


def prompt_labels(prompt: str) -> list[int]:
    scene = parse_prompt(prompt)
    return NULL_LABELS if scene is None else scene.labels()


def random_scene(rng: np.random.Generator, pair_fraction: float = 2 / 3) -> Scene:
    """A scene drawn uniformly from the grammar (pairs with probability `pair_fraction`)."""
    shape_a, shape_b = rng.choice(SHAPES, 2)
    colour_a, colour_b = rng.choice(COLOUR_NAMES, 2, replace=False)
    if rng.random() >= pair_fraction:
        size = str(rng.choice(SIZES))
        return Scene((ShapeObject(str(colour_a), str(shape_a), size),))
    relation = str(rng.choice(RELATIONS))
    return Scene(
        (ShapeObject(str(colour_a), str(shape_a)), ShapeObject(str(colour_b), str(shape_b))),
        relation,
    )


def prompt_set(count: int, seed: int = 0) -> list[str]:
    """`count` prompts drawn from the grammar, deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    return [random_scene(rng).prompt for _ in range(count)]
