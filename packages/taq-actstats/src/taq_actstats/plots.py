"""PNG plots of activation statistics: how ranges move with the timestep, layer by layer.

The sigma axis runs from 1 (pure noise, sampling starts) to 0 (clean image). The cheap plots
(snapshots at chosen steps, ranges over time, a heatmap, variability) read only the scalar
summaries; the distributions (per-channel ranges and histograms of chosen layers) read the
per-channel arrays and are drawn only when asked.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taq_actstats.collect import read_stats, require_stats  # noqa: E402
from taq_io import Store  # noqa: E402
from taq_run.quant_config import QuantPlan  # noqa: E402

TIER_COLORS = {4: "#2ca02c", 6: "#ff7f0e", 8: "#d62728"}


def _short(name: str) -> str:
    return name.replace(".attn.", ".").replace(".mlp.", ".").replace("image", "img")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_data(store: Store, distributions: bool = False) -> dict:
    """What `plot_all` draws, from the store's `actstats` (the per-channel arrays only when
    `distributions`)."""
    stats = read_stats(require_stats(store), per_channel=distributions)
    data = {
        "names": stats.layer_names,
        "sigmas": stats.timesteps / 1000.0,
        "absmax": stats.absmax.mean(axis=0).T,  # (step, layer)
    }
    if distributions:
        data["channel_min"] = stats.channel_min.mean(axis=0)
        data["channel_max"] = stats.channel_max.mean(axis=0)
        data["hist_edges"] = stats.hist_edges
        data["hist_counts"] = stats.hist_counts
    return data


def select_layers(names: list[str], pattern: str | None) -> list[int]:
    """Indices of the layers matching any comma-separated glob (`mm*.image.mlp.fc2`)."""
    if pattern is None:
        return []
    globs = [g.strip() for g in pattern.split(",") if g.strip()]
    chosen = [i for i, n in enumerate(names) if any(fnmatch.fnmatchcase(n, g) for g in globs)]
    if not chosen:
        raise ValueError(f"--layers {pattern!r} matches no layer in actstats")
    return chosen


def plot_all(
    stats: dict,
    out: Path,
    plan: QuantPlan | None = None,
    snapshot_steps: list[int] | None = None,
    layers: list[int] | None = None,
    distributions: bool = False,
) -> list[Path]:
    """The plots into `out`; `stats` from `plot_data`. Snapshots at `snapshot_steps` (step
    indices; default the middle one); with `distributions`, per-channel ranges and histograms
    of `layers` (default: the widest layer's channels and the first fc2's histograms)."""
    names = [_short(n) for n in stats["names"]]
    sigma, absmax = stats["sigmas"], stats["absmax"]
    mid = len(sigma) // 2
    steps = snapshot_steps or [mid]
    bad = [s for s in steps if not 0 <= s < len(sigma)]
    if bad:
        raise ValueError(f"--snapshot-steps {bad[0]} is not a stored step: use 0..{len(sigma) - 1}")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    # snapshot: all layers at each chosen step, one row per step
    fig, axes = plt.subplots(
        len(steps), 1, figsize=(max(8, len(names) * 0.25), 3.0 * len(steps) + 1.5), squeeze=False
    )
    for row, step in enumerate(steps):
        ax = axes[row, 0]
        colors = [TIER_COLORS[b] for b in plan.bits[step]] if plan else "#1f77b4"
        ax.bar(range(len(names)), absmax[step], color=colors)
        last = row == len(steps) - 1
        ax.set_xticks(range(len(names)), names if last else [""] * len(names), rotation=90,
                      fontsize=7)  # fmt: skip
        ax.set_ylabel("max |x| (image mean)")
        title = f"layer input ranges at step {step}, sigma = {sigma[step]:.2f}"
        ax.set_title(title + (" (color: A4 green, A6 orange, A8 red)" if plan else ""))
    paths.append(_save(fig, out / "snapshot.png"))
    # temporal lines per layer
    fig, ax = plt.subplots(figsize=(9, 5))
    for i, name in enumerate(names):
        ax.plot(sigma, absmax[:, i], lw=1, label=name if len(names) <= 24 else None)
    ax.set_xlim(1, 0)
    ax.set_xlabel("sigma (1 = noise -> 0 = clean)")
    ax.set_ylabel("max |x|")
    ax.set_title("input range over the sampling trajectory, per layer")
    if len(names) <= 24:
        ax.legend(fontsize=6, ncol=2)
    paths.append(_save(fig, out / "temporal.png"))
    # heatmap layers x timesteps
    fig, ax = plt.subplots(figsize=(9, max(4, len(names) * 0.18)))
    image = ax.imshow(np.log10(np.maximum(absmax.T, 1e-6)), aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ticks = np.linspace(0, len(sigma) - 1, min(6, len(sigma))).astype(int)
    ax.set_xticks(ticks, [f"{sigma[t]:.2f}" for t in ticks])
    ax.set_xlabel("sigma (1 = noise -> 0 = clean)")
    fig.colorbar(image, ax=ax, label="log10 max |x|")
    ax.set_title("layers x timesteps")
    paths.append(_save(fig, out / "heatmap.png"))
    # variability scatter: mean range vs its change over time
    fig, ax = plt.subplots(figsize=(7, 5))
    mean, spread = absmax.mean(axis=0), absmax.max(axis=0) / np.maximum(absmax.min(axis=0), 1e-8)
    ax.scatter(mean, spread, c=["#d62728" if "fc2" in n else "#1f77b4" for n in names])
    for i, name in enumerate(names):
        ax.annotate(name, (mean[i], spread[i]), fontsize=6)
    ax.set_xlabel("mean max |x| over timesteps")
    ax.set_ylabel("max / min over timesteps")
    ax.set_title("temporal variability (red: post-GELU fc2 inputs)")
    paths.append(_save(fig, out / "variability.png"))
    if distributions and layers:
        for li in layers:
            name = stats["names"][li]
            paths.append(_plot_channels(stats, li, out / f"channels-{name}.png"))
            paths.append(_plot_histograms(stats, li, plan, out / f"histograms-{name}.png"))
    elif distributions:  # the layer with the widest range, and the first post-GELU input
        worst = int(np.argmax(absmax.max(axis=0)))
        fc2 = next((i for i, n in enumerate(stats["names"]) if n.endswith("mlp.fc2")), worst)
        paths.append(_plot_channels(stats, worst, out / "channels.png"))
        paths.append(_plot_histograms(stats, fc2, plan, out / "histograms.png"))
    return paths


def _plot_channels(stats: dict, li: int, path: Path) -> Path:
    """Per-channel min..max of one layer's input at the first, middle and last step."""
    sigma = stats["sigmas"]
    low, high = stats["channel_min"][li], stats["channel_max"][li]  # (step, ch)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for t in sorted({0, len(sigma) // 2, len(sigma) - 1}):
        ax.fill_between(
            np.arange(low.shape[1]), low[t], high[t], alpha=0.35, label=f"sigma {sigma[t]:.2f}"
        )
    ax.set_xlabel("input channel")
    ax.set_ylabel("min .. max")
    ax.set_title(f"per-channel range of {_short(stats['names'][li])}")
    ax.legend()
    return _save(fig, path)


def _plot_histograms(stats: dict, li: int, plan: QuantPlan | None, path: Path) -> Path:
    """One layer's pooled histograms at three steps, with the shift and grid overlaid."""
    sigma = stats["sigmas"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, t in zip(axes, [0, len(sigma) // 2, len(sigma) - 1], strict=True):
        edges, counts = stats["hist_edges"][li, t], stats["hist_counts"][li, t]
        ax.stairs(counts, edges, fill=True, alpha=0.6)
        ax.set_yscale("log")
        ax.set_title(f"{_short(stats['names'][li])} sigma {sigma[t]:.2f}", fontsize=9)
        if plan:
            shift = float(np.nanmean(plan.shift[t, li]))
            ax.axvline(shift, color="k", ls="--", lw=1, label=f"mean shift {shift:.2f}")
            scale, bits = plan.scale[t, li], plan.bits[t, li]
            half = 2 ** (bits - 1) - 1
            for k in (-half, half):
                ax.axvline(shift + k * scale, color=TIER_COLORS[int(bits)], lw=1)
            ax.legend(fontsize=7, title=f"A{bits} grid", title_fontsize=7)
    return _save(fig, path)
