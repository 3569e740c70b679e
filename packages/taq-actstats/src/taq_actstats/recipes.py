"""Activation recipes: `taq` (ours, the default) and `taq-dit` (the paper's, TaQ-DiT §3.3).

`taq` is what `analyze.py` describes: ranges are maxima over images x 1.5, tiers by the
estimated SQNR, SmoothQuant only where a noise model says it helps, grids capped at
AdaRound's learned range. `taq-dit` reproduces the paper/seed recipe, so the two can be
compared side by side:

- ranges by AvgMinMax: the running average over images of each image's tensor min and max
  (one calibration image = one batch), of the post-GELU-shifted input for `fc2` (the momentum
  shift, `analyze.momentum_shift`), with no margin;
- tiers by the absolute thresholds on those averaged ranges (fc2 A4 < 5.0 <= A6 < 8.0 <= A8,
  other layers 6.0 / 10.0), A8 where the p99/p50 of |x| from the pooled 256-bin histograms
  (edges fixed by image 0, image 0 binned on them too: `collect.py`) exceeds the ratio;
- SmoothQuant (alpha 0.5) on candidates with fewer than 5 % outlier channels (peak > 6 x the
  median channel's) and a spike ratio (largest / median channel peak) above 5, dropping one
  tier (never below A4), with no noise test.

Every threshold stays a flag; a recipe only names their defaults
(`taq_run.quant_config.RECIPE_DEFAULTS`, beside the config they fill).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from taq_actstats.collect import OUTLIER_FACTOR
from taq_actstats.smoothquant import smoothing_scales
from taq_actstats.tiers import TIERS, assign_bits
from taq_run.quant_config import TierRule


def running_average(values: np.ndarray) -> np.ndarray:
    """The seed's running mean over axis 0: m_i = m_(i-1) + (v_i - m_(i-1)) / (i + 1)."""
    mean = values[0].astype(np.float64)
    for i in range(1, values.shape[0]):
        mean = mean + (values[i] - mean) / (i + 1)
    return mean


def avg_min_max(
    channel_min: np.ndarray, channel_max: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """AvgMinMax `(layer, step)` of `x - shift` from per-image channel extrema.

    `channel_min/max (image, layer, step, channel)` (NaN beyond a layer's width), `shift
    (layer, step, channel)`: a per-channel shift moves each channel's extrema, so an image's
    tensor min of the shifted input is the min over channels of `channel_min - shift`.
    """
    shift = np.nan_to_num(shift)
    lows = np.nanmin(channel_min - shift, axis=-1)  # (image, layer, step)
    highs = np.nanmax(channel_max - shift, axis=-1)
    return running_average(lows), running_average(highs)


def histogram_quantile(edges: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """The `q` quantile of |x| from histograms on `edges (..., bin + 1)`, `counts (..., bin)`.

    Each bin's values sit at its centre; the quantile is the smallest |centre| whose
    cumulative count reaches `q` of the total (the inverted CDF).
    """
    magnitude = np.abs((edges[..., 1:] + edges[..., :-1]) / 2)
    order = np.argsort(magnitude, axis=-1, kind="stable")
    sorted_magnitude = np.take_along_axis(magnitude, order, axis=-1)
    cumulative = np.cumsum(np.take_along_axis(counts, order, axis=-1), axis=-1)
    target = q * cumulative[..., -1:]
    index = (cumulative < target).sum(axis=-1, keepdims=True)
    return np.take_along_axis(sorted_magnitude, np.minimum(index, magnitude.shape[-1] - 1), -1)[
        ..., 0
    ]


def tail_ratio(edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """p99 / p50 of |x| `(step, layer)` from `(layer, step, bin)` histograms pooled over images."""
    p99 = histogram_quantile(edges, counts, 0.99)
    p50 = histogram_quantile(edges, counts, 0.50)
    return (p99 / np.maximum(p50, 1e-8)).T


def is_smoothing_candidate(channel_peak: np.ndarray, max_outliers: float, min_spike: float) -> bool:
    """Fewer than `max_outliers` of the channels are outliers and the spike exceeds `min_spike`."""
    median = max(float(np.median(channel_peak)), 1e-8)
    outliers = int((channel_peak > OUTLIER_FACTOR * median).sum())
    return outliers < max_outliers * channel_peak.size and channel_peak.max() / median > min_spike


def taq_dit_plan(
    names: list[str],
    widths: np.ndarray,
    channel_min: np.ndarray,
    channel_max: np.ndarray,
    shift: np.ndarray,
    hist_edges: np.ndarray,
    hist_counts: np.ndarray,
    weight_of: Callable[[str], np.ndarray],
    rule: TierRule,
    range_margin: float = 1.0,
    alpha: float = 0.5,
    max_outliers: float = 0.05,
    min_spike: float = 5.0,
) -> dict[str, np.ndarray]:
    """The paper's plan: `grid_absmax`, `bits`, `sq_bits`, `sq_absmax` `(step, layer)` and
    `smoothing (layer, channel)`.

    Inputs as in `avg_min_max`; `hist_edges/counts (layer, step, ...)` pooled over images;
    `weight_of(name)` the layer's weight `(out, in)`.
    """
    post_gelu = np.array([n.endswith("mlp.fc2") for n in names])
    low, high = avg_min_max(channel_min, channel_max, shift)
    grid_absmax = range_margin * np.maximum(np.abs(low), np.abs(high)).T  # (step, layer)
    tails = tail_ratio(hist_edges, hist_counts)
    rule = TierRule(**{**rule.to_json(), "rule": "absolute"})
    bits = assign_bits(grid_absmax, np.ones_like(grid_absmax), post_gelu, tails, rule)
    sq_bits, sq_absmax = bits.copy(), grid_absmax.copy()
    smoothing = np.where(np.isnan(channel_min[0, :, 0, :]), np.nan, 1.0).astype(np.float32)
    shifted_min = channel_min - np.nan_to_num(shift)
    shifted_max = channel_max - np.nan_to_num(shift)
    for li, name in enumerate(names):
        width = int(widths[li])
        channel_abs = np.maximum(
            np.abs(running_average(shifted_min[:, li, :, :width])),
            np.abs(running_average(shifted_max[:, li, :, :width])),
        )  # (step, channel): AvgMinMax per channel
        peak = channel_abs.max(axis=0)
        if not is_smoothing_candidate(peak, max_outliers, min_spike):
            continue
        weight = np.asarray(weight_of(name), dtype=np.float64)
        scales = smoothing_scales(peak, np.abs(weight).max(axis=0), alpha)
        low_s = running_average((shifted_min[:, li, :, :width] / scales).min(axis=-1))
        high_s = running_average((shifted_max[:, li, :, :width] / scales).max(axis=-1))
        smoothing[li, :width] = scales
        sq_absmax[:, li] = range_margin * np.maximum(np.abs(low_s), np.abs(high_s))
        sq_bits[:, li] = np.maximum(bits[:, li] - 2, TIERS[0])
    return {
        "grid_absmax": grid_absmax,
        "bits": bits.astype(np.int32),
        "sq_bits": sq_bits.astype(np.int32),
        "sq_absmax": sq_absmax,
        "smoothing": smoothing,
        "tails": tails,
    }
