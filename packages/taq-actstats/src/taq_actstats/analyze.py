"""Turn activation statistics into the time-aware `quant_config` (TaQ-DiT §3.3).

Per layer and timestep: each channel's min and max over the calibration images; for
post-GELU `fc2` inputs the momentum shift `shift = 0.95 shift + 0.05 (min + max) / 2` (image
by image, starting from image 0's midpoint), which centres their asymmetric range; bits from
the tier rule (`tiers.py`) on a grid over `range_margin` x the (shifted) absmax, or from an
average-bit budget (`budget.py`); and a signed symmetric grid at those bits. Its range
(`--range-method`): `mse` (default), the clip with the least estimated error at that tier's
bits (`ranges.py`; the budget allocates on those errors); `max`, `range_margin` x the maximum
over images, not TaQ-DiT's running average of per-image extrema, because the model then runs on
other seeds, whose extrema the average clips (README: earlier design measurements). The rule
keeps choosing tiers on the margin x maximum under both methods, so the default plan keeps its
bits (on the error with clipping, 23 dB would move most A8 steps to A6).

Each step's grid is then capped at AdaRound's learned static activation range where the store
has one (`weights/adaround`, `bits_a` > 0): the W4 rounding was trained with that clipping, and
on tuning seeds the per-step grids over 1.5 x the calibration maximum lost to the static A8 grid
even at A8 everywhere (the README holds the numbers). Bits are still chosen on the uncapped
range, so the cap never lowers a tier.

SmoothQuant candidates (few outlier channels, a large spike over the median channel) get
per-channel scales when smoothing lowers the estimated output noise, the re-rounding of the
W4 weights included (`smoothquant.py`), without raising any step's bits; both variants are
stored (`bits` / `sq_bits`), so smoothing can be compared on and off.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

from taq_actstats.budget import budget_tiers, static_budget_tiers, tiers_sqnr_db
from taq_actstats.collect import ActivationStats, read_stats, require_stats
from taq_actstats.ranges import TierRanges, max_ranges, mse_ranges
from taq_actstats.recipes import avg_min_max, taq_dit_plan
from taq_actstats.smoothquant import (
    activation_noise,
    smoothed_absmax,
    smoothed_noise,
    smoothing_scales,
)
from taq_actstats.temporal import temporal_arrays, write_temporal
from taq_actstats.tiers import assign_bits, grid_scale
from taq_io import StageGroup, Store
from taq_model.presets import ModelHandle
from taq_model.taxonomy import get_layer
from taq_run.quant_config import AnalyzeConfig, create_quant_config_group, smoothed_layers
from taq_run.weights import grid_of, has_weights, read_layers, require_weights

PRODUCER = f"taq-actstats {version('taq-actstats')}"
MOMENTUM = 0.95


@dataclass(frozen=True)
class Analysis:
    group: StageGroup
    summary: list[str]


def momentum_shift(channel_min: np.ndarray, channel_max: np.ndarray) -> np.ndarray:
    """Shift per (layer, step, channel) from per-image extrema `(image, layer, step, ch)`."""
    shift = (channel_min[0] + channel_max[0]) / 2
    for image in range(1, channel_min.shape[0]):
        shift = MOMENTUM * shift + (1 - MOMENTUM) * (channel_min[image] + channel_max[image]) / 2
    return shift


def _absmax(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.nanmax(np.maximum(np.abs(low), np.abs(high)), axis=-1)


def mean_square(stats: ActivationStats) -> np.ndarray:
    """E[x^2] per (step, layer) from the histograms, pooled over images."""
    counts = stats.hist_counts.astype(np.float64)  # (layer, step, bin)
    edges = stats.hist_edges.astype(np.float64)
    centres = (edges[..., 1:] + edges[..., :-1]) / 2
    return ((counts * centres**2).sum(-1) / np.maximum(counts.sum(-1), 1)).T


def static_ranges(store: Store, names: list[str]) -> tuple[np.ndarray, str | None]:
    """AdaRound's learned static activation range per layer (NaN: none) and its group's
    identity; all NaN and None when the store has no `weights/adaround` with activation scales.
    """
    ranges = np.full(len(names), np.nan)
    if not has_weights(store, "adaround"):
        return ranges, None
    group = require_weights(store, "adaround")
    bits_a = grid_of(group).bits_a
    if not bits_a:
        return ranges, None
    index = {name: i for i, name in enumerate(names)}
    for name, layer in read_layers(group):
        if name in index:
            ranges[index[name]] = layer.act_scale * (2 ** (bits_a - 1) - 1)
    return ranges, group.identity()


def analyze_stats(
    handle: ModelHandle, store: Store, config: AnalyzeConfig, overwrite: bool = False
) -> Analysis:
    stats_group = require_stats(store, verify=True)
    stats = read_stats(stats_group)
    names, widths = stats.layer_names, stats.in_features
    post_gelu = np.array([n.endswith("mlp.fc2") for n in names])
    cmin, cmax = stats.channel_min, stats.channel_max  # (img, layer, step, ch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: channels beyond the width
        low, high = np.nanmin(cmin, axis=0), np.nanmax(cmax, axis=0)  # (layer, step, ch)
    shifted_layers = post_gelu if config.gelu_shift else np.zeros_like(post_gelu)
    shift = np.where(shifted_layers[:, None, None], momentum_shift(cmin, cmax), 0.0)
    shift = np.where(np.isnan(low), np.nan, shift).astype(np.float32)
    absmax = _absmax(low, high).T  # (step, layer)
    margin = config.range_margin
    per_step_range = _absmax(low - np.nan_to_num(shift), high - np.nan_to_num(shift)).T
    shifted = margin * per_step_range
    power = mean_square(stats)
    tails = (stats.p99 / np.maximum(stats.p50, 1e-8)).mean(axis=0).T
    per_step = shifted
    with warnings.catch_warnings():  # the static plan: one shift (the steps' mean) per layer
        warnings.simplefilter("ignore", RuntimeWarning)
        static_shift = np.broadcast_to(np.nanmean(shift, axis=1, keepdims=True), shift.shape)
    static_shift = np.where(np.isnan(low), np.nan, static_shift).astype(np.float32)
    static_range = _absmax(low - np.nan_to_num(static_shift), high - np.nan_to_num(static_shift)).T
    time_shift = shift
    if config.plan == "static":  # one range per layer
        shift = static_shift
        shifted = np.broadcast_to(margin * static_range.max(axis=0), static_range.shape).copy()
    paper, unshifted = None, absmax  # the range statistic without the shift, no margin
    if config.recipe == "taq-dit":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            paper = taq_dit_plan(
                names,
                widths,
                cmin,
                cmax,
                shift,
                stats.hist_edges,
                stats.hist_counts,
                lambda name: np.array(get_layer(handle.mmdit, name).weight),
                config.rule,
                margin,
                config.smooth_alpha,
                config.smooth_max_outliers,
                config.smooth_min_spike,
            )
            unshifted = np.abs(avg_min_max(cmin, cmax, np.zeros_like(shift))).max(axis=0).T
        shifted = per_step = paper["grid_absmax"]
        if config.plan == "static":  # one grid per layer over its widest step
            shifted = np.broadcast_to(shifted.max(axis=0), shifted.shape).copy()
            paper["sq_absmax"] = np.broadcast_to(
                paper["sq_absmax"].max(axis=0), shifted.shape
            ).copy()
    tables = None
    if not paper:
        ranges = {"time-aware": per_step_range, "static": static_range}
        shifts = {"time-aware": time_shift, "static": static_shift}
        tables = range_tables(config, stats, power, ranges, shifts)
    table = None if paper else tables[config.plan]
    if config.avg_bits is None:  # the rule: tiers on the grid over the margin x the maximum,
        # under either range method (mse only narrows the grid at the chosen tier)
        bits = (
            paper["bits"] if paper else assign_bits(shifted, power, post_gelu, tails, config.rule)
        )
    else:
        allocate = static_budget_tiers if config.plan == "static" else budget_tiers
        bits = allocate((table or max_ranges(shifted, power)).noise, config.avg_bits)
    inputs = {"actstats": stats_group.identity()}
    learned, weights_id = static_ranges(store, names) if config.static_cap else (None, None)
    grid_absmax = shifted if paper else table.at(bits)
    if weights_id is not None:
        inputs["weights/adaround"] = weights_id
        grid_absmax = np.fmin(grid_absmax, learned[None, :])  # NaN (no learned range): uncapped

    sq_bits, sq_absmax = bits.copy(), grid_absmax.copy()
    smoothing = np.where(np.isnan(low[:, 0, :]), np.nan, 1.0).astype(np.float32)
    outliers = stats.outlier_channels.mean(axis=0)  # (layer, step)
    if paper:  # the paper's SmoothQuant: candidates drop one tier, no noise test
        smoothing, sq_absmax = paper["smoothing"], paper["sq_absmax"]
        paper_smoothed = smoothed_layers(smoothing)
        sq_bits = np.where(paper_smoothed, np.maximum(bits - 2, 4), bits).astype(np.int32)
        if weights_id is not None:
            sq_absmax = np.fmin(sq_absmax, learned[None, :])
    for li, name in enumerate(names if paper is None else []):
        width = int(widths[li])
        channel_abs = np.maximum(
            np.abs(low[li, :, :width] - shift[li, :, :width]),
            np.abs(high[li, :, :width] - shift[li, :, :width]),
        )  # (step, ch)
        peak = channel_abs.max(axis=0)
        spike = peak.max() / max(np.median(peak), 1e-8)
        few = outliers[li].max() <= config.smooth_max_outliers * width
        if not (few and spike >= config.smooth_min_spike):
            continue
        weight = np.array(get_layer(handle.mmdit, name).weight, dtype=np.float64)
        scales = smoothing_scales(peak, np.abs(weight).max(axis=0), config.smooth_alpha)
        smoothed = margin * smoothed_absmax(channel_abs, scales)
        column_power = (weight**2).sum(axis=0)
        gain = float((scales**2 * column_power).sum() / column_power.sum())  # W' = W s
        if config.avg_bits is None:
            candidate = assign_bits(
                smoothed[:, None],
                power[:, li : li + 1] / gain,  # same output SQNR as the unsmoothed grid's
                post_gelu[li : li + 1],
                tails[:, li : li + 1],
                config.rule,
            )[:, 0]
        else:  # the budget fixed the tiers: smoothing may only lower the noise at them
            candidate = bits[:, li].copy()
        if config.plan == "static":
            smoothed = np.broadcast_to(smoothed.max(), smoothed.shape).copy()
        share = channel_abs**2 / np.maximum((channel_abs**2).mean(-1, keepdims=True), 1e-30)
        grid = (config.bits_w, config.group_size)
        noise = smoothed_noise(
            weight, scales, smoothed, candidate, power[:, li, None] * share, grid
        )
        if (candidate <= bits[:, li]).all() and noise < activation_noise(
            shifted[:, li], bits[:, li], column_power
        ):
            smoothing[li, :width] = scales
            sq_bits[:, li], sq_absmax[:, li] = candidate, smoothed

    steps = stats.step_index
    group = create_quant_config_group(
        store,
        config,
        producer=PRODUCER,
        inputs=inputs,
        sizes={"layer": len(names), "step": len(steps), "channel": cmin.shape[-1]},
        constants={
            "layer_names": names,
            "in_features": widths,
            "step_index": steps,
            "timesteps": stats.timesteps,
            "post_gelu": post_gelu,
            "bits": bits,
            "scale": grid_scale(grid_absmax, bits).astype(np.float32),
            "shift": np.transpose(shift, (1, 0, 2)),
            "smoothing": smoothing,
            "absmax": absmax.astype(np.float32),
            "quant_absmax": grid_absmax.astype(np.float32),
            "mean_square": power.astype(np.float32),
            "sq_bits": sq_bits,
            "sq_scale": grid_scale(sq_absmax, sq_bits).astype(np.float32),
            "sq_absmax": sq_absmax.astype(np.float32),
        },
        overwrite=overwrite,
    )
    temporal = temporal_arrays(bits, unshifted, per_step / margin)
    write_temporal(store, group, names, post_gelu, temporal, overwrite=True)
    summary = summarize(bits, sq_bits, post_gelu, smoothing, temporal, config.recipe)
    ratio = shifted / np.maximum(shifted.max(axis=0, keepdims=True), 1e-30)
    fine = int((ratio <= 31 / 127).sum())  # an A6 grid no coarser than A8 over every step
    summary.append(
        f"per-step ranges: x{ratio.min():.2f}-1 of each layer's largest; {fine} of {ratio.size} "
        "layer-steps are small enough (<= x0.24) for A6 to be as fine as one A8 grid over all "
        "steps"
    )
    if config.avg_bits is not None and tables:
        summary.extend(budget_summary(tables, config.avg_bits))
    if weights_id is None:
        summary.append("grids: not capped (no learned static activation scales in the store)")
    else:
        capped = int((grid_absmax < shifted).sum())
        summary.append(
            f"grids capped at AdaRound's learned static range: {capped} of {bits.size} layer-steps"
        )
    return Analysis(group, summary)


def range_tables(
    config: AnalyzeConfig,
    stats: ActivationStats,
    power: np.ndarray,
    ranges: dict[str, np.ndarray],
    shifts: dict[str, np.ndarray],
) -> dict[str, TierRanges]:
    """Each plan's grid and estimated error per `(step, layer, tier)` (`ranges.py`): `max`,
    `range_margin` x the maximum; `mse`, the least-error clip. Per plan, `ranges (step,
    layer)` the (shifted) maxima and `shifts (layer, step, channel)` the post-GELU shift."""
    widest = np.broadcast_to(ranges["static"].max(axis=0), ranges["static"].shape)
    if config.range_method == "max":
        margin = config.range_margin
        return {
            "time-aware": max_ranges(margin * ranges["time-aware"], power),
            "static": max_ranges(margin * widest, power),
        }
    edges, counts = stats.hist_edges, stats.hist_counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: channels beyond the width
        mean_shift = {plan: np.nanmean(shift, axis=-1) for plan, shift in shifts.items()}
    return {
        "time-aware": mse_ranges(
            ranges["time-aware"], power, edges, counts, mean_shift["time-aware"]
        ),
        "static": mse_ranges(widest, power, edges, counts, mean_shift["static"], static=True),
    }


def budget_summary(tables: dict[str, TierRanges], avg_bits: float) -> list[str]:
    """Time-aware and static plans at the budget, side by side on the estimated SQNR."""
    lines = []
    for label, allocate in (("time-aware", budget_tiers), ("static", static_budget_tiers)):
        bits = allocate(tables[label].noise, avg_bits)
        lines.append(
            f"budget {avg_bits:g} bits, {label:<10}: average {bits.mean():.3f} bits, estimated "
            f"SQNR {tiers_sqnr_db(tables[label].noise, bits):.2f} dB"
        )
    return lines


def tier_counts(bits: np.ndarray) -> dict[int, int]:
    return {b: int((bits == b).sum()) for b in (4, 6, 8)}


def summarize(bits, sq_bits, post_gelu, smoothing, temporal: dict, recipe: str) -> list[str]:
    lines = []
    for label, table in (("time-aware", bits), ("+ SmoothQuant", sq_bits)):
        counts = tier_counts(table)
        lines.append(
            f"{label:<14} A4 {counts[4]:>5}  A6 {counts[6]:>5}  A8 {counts[8]:>5}  "
            f"(layer x step)  average {table.mean():.2f} bits"
        )
    always = {b: int((temporal["always_bits"] == b).sum()) for b in (4, 6, 8)}
    lines.append(
        f"temporal: {int(temporal['switcher'].sum())} of {bits.shape[1]} layers switch tiers "
        f"across timesteps; always A4/A6/A8: {always[4]}/{always[6]}/{always[8]}"
    )
    if post_gelu.any():
        shifted = temporal["range_shifted"][:, post_gelu]
        ratio = (shifted / np.maximum(temporal["range_unshifted"][:, post_gelu], 1e-8)).mean()
        lines.append(f"post-GELU shift: fc2 input range x{ratio:.2f} of unshifted (mean)")
    smoothed = int(smoothed_layers(smoothing).sum())
    how = "dropping one tier" if recipe == "taq-dit" else "where it lowers the output noise"
    lines.append(f"SmoothQuant: {smoothed} layer(s) smoothed {how}")
    return lines
