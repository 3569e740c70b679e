"""Turn activation statistics into the time-aware `quant_config` (TaQ-DiT §3.3).

Per layer and timestep: the running averages over images of each channel's min and max;
for post-GELU `fc2` inputs the momentum shift `shift = 0.95 shift + 0.05 (min + max) / 2`
(image by image, starting from image 0's midpoint), which centres their asymmetric range;
bits from the tier rule on the (shifted) absmax; a signed symmetric grid covering it.
SmoothQuant candidates (few outlier channels, a large spike over the median channel) get
per-channel scales when smoothing lowers their tier; both variants are stored (`bits` /
`sq_bits`), so smoothing can be compared on and off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib.metadata import version

from taq_model.presets import ModelHandle
from taq_model.taxonomy import get_layer

import numpy as np

from taq_actstats.smoothquant import smoothed_absmax, smoothing_scales
from taq_actstats.tiers import TierRule, assign_bits, grid_scale
from taq_io import StageGroup, Store

PRODUCER = f"taq-actstats {version('taq-actstats')}"
MOMENTUM = 0.95


@dataclass(frozen=True)
class AnalyzeConfig:
    rule: TierRule = field(default_factory=TierRule)
    smooth_alpha: float = 0.5
    smooth_max_outliers: float = 0.05  # share of channels that are outliers, at most
    smooth_min_spike: float = 4.0  # max channel absmax / median channel absmax, at least

    def to_json(self) -> dict:
        return asdict(self)


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


def analyze_stats(
    handle: ModelHandle, store: Store, config: AnalyzeConfig, overwrite: bool = False
) -> Analysis:
    stats = store.require_group("actstats")
    names = stats.read("layer_names").tolist()
    widths = stats.read("in_features")
    post_gelu = np.array([n.endswith("mlp.fc2") for n in names])
    cmin, cmax = stats.read("channel_min"), stats.read("channel_max")  # (img, layer, step, ch)
    low, high = cmin.mean(axis=0), cmax.mean(axis=0)  # (layer, step, ch)
    shift = np.where(post_gelu[:, None, None], momentum_shift(cmin, cmax), 0.0)
    shift = np.where(np.isnan(low), np.nan, shift).astype(np.float32)
    absmax = _absmax(low, high).T  # (step, layer)
    shifted = _absmax(low - np.nan_to_num(shift), high - np.nan_to_num(shift)).T
    tails = (stats.read("p99") / np.maximum(stats.read("p50"), 1e-8)).mean(axis=0).T
    bits = assign_bits(shifted, post_gelu, tails, config.rule)

    sq_bits, sq_absmax = bits.copy(), shifted.copy()
    smoothing = np.where(np.isnan(low[:, 0, :]), np.nan, 1.0).astype(np.float32)
    outliers = stats.read("outlier_channels").mean(axis=0)  # (layer, step)
    for li, name in enumerate(names):
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
        weight = np.array(get_layer(handle.mmdit, name).weight)
        scales = smoothing_scales(peak, np.abs(weight).max(axis=0), config.smooth_alpha)
        smoothed = smoothed_absmax(channel_abs, scales)
        candidate = assign_bits(
            smoothed[:, None], post_gelu[li : li + 1], tails[:, li : li + 1], config.rule
        )[:, 0]
        if (candidate < bits[:, li]).any():
            smoothing[li, :width] = scales
            sq_bits[:, li], sq_absmax[:, li] = candidate, smoothed

    steps = stats.read("step_index")
    group = store.create_group(
        "quant_config",
        producer=PRODUCER,
        config=config.to_json(),
        inputs={"actstats": stats.identity()},
        sizes={"layer": len(names), "step": len(steps), "channel": cmin.shape[-1]},
        constants={
            "layer_names": names,
            "in_features": widths,
            "step_index": steps,
            "timesteps": stats.read("timesteps"),
            "post_gelu": post_gelu,
            "bits": bits,
            "scale": grid_scale(shifted, bits).astype(np.float32),
            "shift": np.transpose(shift, (1, 0, 2)),
            "smoothing": smoothing,
            "absmax": absmax.astype(np.float32),
            "quant_absmax": shifted.astype(np.float32),
            "sq_bits": sq_bits,
            "sq_scale": grid_scale(sq_absmax, sq_bits).astype(np.float32),
            "sq_absmax": sq_absmax.astype(np.float32),
        },
        overwrite=overwrite,
    )
    group.mark_complete()
    return Analysis(group, summarize(names, bits, sq_bits, absmax, shifted, post_gelu, smoothing))


def tier_counts(bits: np.ndarray) -> dict[int, int]:
    return {b: int((bits == b).sum()) for b in (4, 6, 8)}


def summarize(names, bits, sq_bits, absmax, shifted, post_gelu, smoothing) -> list[str]:
    lines = []
    for label, table in (("time-aware", bits), ("+ SmoothQuant", sq_bits)):
        counts = tier_counts(table)
        lines.append(
            f"{label:<14} A4 {counts[4]:>5}  A6 {counts[6]:>5}  A8 {counts[8]:>5}  "
            f"(layer x step)  average {table.mean():.2f} bits"
        )
    switching = [n for i, n in enumerate(names) if len(set(bits[:, i].tolist())) > 1]
    always = {b: sum(1 for i in range(len(names)) if (bits[:, i] == b).all()) for b in (4, 6, 8)}
    lines.append(
        f"temporal: {len(switching)} of {len(names)} layers switch tiers across timesteps; "
        f"always A4/A6/A8: {always[4]}/{always[6]}/{always[8]}"
    )
    if post_gelu.any():
        ratio = (shifted[:, post_gelu] / np.maximum(absmax[:, post_gelu], 1e-8)).mean()
        lines.append(f"post-GELU shift: fc2 input range x{ratio:.2f} of unshifted (mean)")
    smoothed = int((np.nan_to_num(smoothing, nan=1.0) != 1.0).any(axis=1).sum())
    lines.append(f"SmoothQuant: {smoothed} layer(s) smoothed (alpha 0.5) where it drops a tier")
    return lines
