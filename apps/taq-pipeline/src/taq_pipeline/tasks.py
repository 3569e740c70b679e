"""Each preset's task metric, per sample, where the preset has an evaluator.

- `tiny-digits`: the digit classifier's verdict on each sample (`accuracy`);
- `tiny-shapes`: the GenEval-style prompt adherence of `taq_shapes.evaluate` (the scoring half
  of `taq_shapes.preset.measure_adherence`, on images already rendered): `adherence` (every
  attribute right) and the per-attribute scores `count`, `colour`, `shape` (each the share of a
  prompt's objects found right), `size` (single-object prompts) and `position` (pairs);
- other presets: none (fidelity vs FP only).

Per-sample values (None where an attribute does not apply to the prompt) so that
`intervals.py` can bootstrap each metric over the same seeds as PSNR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from taq_model.options import parse_spec
from taq_tiny import classifier as digit_classifier

SHAPE_ATTRIBUTES = ("count", "colour", "shape", "size", "position")
TASK_METRICS = {
    "tiny-digits": ("accuracy",),
    "tiny-shapes": ("adherence", *SHAPE_ATTRIBUTES),
}
LABELS = {"accuracy": "digit accuracy", "adherence": "prompt adherence"}


def task_metrics(model: str) -> tuple[str, ...]:
    """The task metrics `task_scores` gives for the preset `model` (empty: none)."""
    return TASK_METRICS.get(parse_spec(model)[0], ())


def mean_of_given(values: list) -> float | None:
    """The mean over the samples a metric applies to (None marks the others); None if none."""
    given = [v for v in values if v is not None]
    return float(np.mean(given)) if given else None


def _value(value: bool | float | None) -> float | None:
    return None if value is None else float(value)


def task_scores(
    model: str, prompts: Sequence[str], latents: np.ndarray, images: np.ndarray
) -> dict[str, list[float | None]]:
    """Per-sample task metrics of one variant's samples (`latents` and their uint8 `images`,
    in the order of `prompts`); {} for a preset without an evaluator."""
    base = parse_spec(model)[0]
    if base == "tiny-digits":
        labels = np.array([int(p.split()[-1]) for p in prompts])
        return {"accuracy": (digit_classifier.predict(latents) == labels).astype(float).tolist()}
    if base == "tiny-shapes":
        from taq_shapes.evaluate import evaluate_adherence

        _, scores = evaluate_adherence(prompts, images)
        out = {"adherence": [float(s.correct) for s in scores]}
        for name in SHAPE_ATTRIBUTES:
            out[name] = [_value(getattr(s, name)) for s in scores]
        return out
    return {}
