"""Activation ranges chosen per bit width by the quantization error on the calibration
activations (`--range-method mse`), instead of a fixed margin over the maximum.

The weights' MSE grid searches a clipping fraction per group; this does the same for each
activation layer and step, at each tier's bit width, from the `actstats` histograms pooled
over the calibration images. For a clip `c` and `b` bits (the signed grid, step
`delta = c / (2^(b-1) - 1)`) a value `v` costs `delta^2 / 12` inside the range (rounding)
and `(|v| - c)^2` beyond it (clipping). At A8 the least-error clip stays near the maximum; at
A4 it cuts the rare extremes on which a grid over the maximum spends most of its levels.

The histograms are binned on image 0's range (256 bins; the other images' values beyond it sit
in the end bins, which would hide their clipping error), so the search runs over `CANDIDATES`
fractions of the histogram's own reach, and the chosen fraction is applied to the maximum over
all images. A bin's values sit at its centre. The post-GELU `fc2` inputs are shifted per
channel, and their histogram is of the unshifted input: their shifted distribution is taken as
the histogram moved by the mean shift over channels.

A static plan (one grid per layer for all steps) picks one clip per layer and tier, the one with
the least relative error summed over the steps, as the budget weighs it (`budget.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from taq_actstats.tiers import TIERS

CANDIDATES = 64  # clip fractions 1/64 .. 64/64 of the range's maximum


@dataclass(frozen=True)
class TierRanges:
    """Per `(step, layer, tier)`: the clip (grid absmax) and its estimated error relative to
    the inputs' mean square (1 / linear SQNR)."""

    clip: np.ndarray
    noise: np.ndarray

    def at(self, bits: np.ndarray) -> np.ndarray:
        """The clip of each entry's chosen tier, `bits (step, layer)`."""
        index = np.searchsorted(np.array(TIERS), bits)[..., None]
        return np.take_along_axis(self.clip, index, axis=-1)[..., 0]


def clip_errors(
    centres: np.ndarray, counts: np.ndarray, clips: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean clipping error and the share of values inside, per candidate.

    `centres`, `counts (step, bin)` one layer's histograms (|centre| is used), `clips (step,
    candidate)`; returns both `(step, candidate)`.
    """
    magnitude = np.abs(centres)[:, :, None]
    weight = counts[:, :, None] / np.maximum(counts.sum(axis=1), 1)[:, None, None]
    beyond = np.maximum(magnitude - clips[:, None, :], 0.0)
    clipping = (weight * beyond**2).sum(axis=1)
    inside = (weight * (beyond == 0)).sum(axis=1)
    return clipping, inside


def tier_errors(centres: np.ndarray, counts: np.ndarray, clips: np.ndarray) -> np.ndarray:
    """Mean squared quantization error `(step, candidate, tier)` of one layer's inputs."""
    clipping, inside = clip_errors(centres, counts, clips)
    levels = np.array([2.0 ** (b - 1) - 1 for b in TIERS])
    rounding = inside[..., None] * (clips[..., None] / levels) ** 2 / 12
    return clipping[..., None] + rounding


def mse_ranges(
    absmax: np.ndarray,
    power: np.ndarray,
    hist_edges: np.ndarray,
    hist_counts: np.ndarray,
    shift: np.ndarray,
    static: bool = False,
) -> TierRanges:
    """The least-error clip per `(step, layer, tier)` and its relative error.

    `absmax (step, layer)` each entry's (shifted) maximum over the calibration images;
    `power (step, layer)` the inputs' mean square; `hist_edges (layer, step, edge)` and
    `hist_counts (layer, step, bin)` pooled over images; `shift (layer, step)` the mean shift
    over channels (0 off `fc2`). `static`: one clip per layer and tier for every step, the
    candidates being fractions of the layer's largest step.
    """
    steps, layers = absmax.shape
    fractions = np.arange(1, CANDIDATES + 1) / CANDIDATES
    clip = np.zeros((steps, layers, len(TIERS)))
    noise = np.zeros_like(clip)
    for li in range(layers):
        edges = hist_edges[li].astype(np.float64) - shift[li][:, None]
        centres = (edges[:, 1:] + edges[:, :-1]) / 2
        reach = np.maximum(np.abs(edges[:, 0]), np.abs(edges[:, -1]))  # (step,)
        top = absmax[:, li]
        if static:
            reach, top = np.full(steps, reach.max()), np.full(steps, top.max())
        clips = np.maximum(reach, 1e-8)[:, None] * fractions  # (step, candidate)
        relative = (
            tier_errors(centres, hist_counts[li].astype(np.float64), clips)
            / np.maximum(power[:, li], 1e-30)[:, None, None]
        )  # (step, candidate, tier)
        if static:
            best = np.broadcast_to(relative.sum(axis=0).argmin(axis=0), (steps, len(TIERS)))
        else:
            best = relative.argmin(axis=1)  # (step, tier)
        clip[:, li] = np.maximum(top, 1e-8)[:, None] * fractions[best]
        noise[:, li] = np.take_along_axis(relative, best[:, None, :], axis=1)[:, 0]
    return TierRanges(clip, noise)


def max_ranges(absmax: np.ndarray, power: np.ndarray) -> TierRanges:
    """The `max` method as a table: every tier's grid over `absmax (step, layer)`, its error
    the rounding noise alone (`tiers.sqnr_db`'s model)."""
    levels = np.array([2.0 ** (b - 1) - 1 for b in TIERS])
    clip = np.repeat(np.maximum(absmax, 1e-8)[..., None], len(TIERS), axis=-1)
    noise = (clip / levels) ** 2 / 12 / np.maximum(power, 1e-30)[..., None]
    return TierRanges(clip, noise)
