"""PNG plots of activation statistics: how ranges move with the timestep, layer by layer.

The sigma axis runs from 1 (pure noise, sampling starts) to 0 (clean image).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TIER_COLORS = {4: "#2ca02c", 6: "#ff7f0e", 8: "#d62728"}


def _short(name: str) -> str:
    return name.replace(".attn.", ".").replace(".mlp.", ".").replace("image", "img")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(stats: dict, out: Path, quant: dict | None = None) -> list[Path]:
    """Every plot; `stats` holds names, sigmas, absmax (step, layer), channel extrema."""
    out.mkdir(parents=True, exist_ok=True)
    names = [_short(n) for n in stats["names"]]
    sigma, absmax = stats["sigmas"], stats["absmax"]
    paths = []
    # snapshot: all layers at the middle timestep
    mid = len(sigma) // 2
    fig, ax = plt.subplots(figsize=(max(8, len(names) * 0.25), 4.5))
    colors = [TIER_COLORS[b] for b in quant["bits"][mid]] if quant else "#1f77b4"
    ax.bar(range(len(names)), absmax[mid], color=colors)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel("max |x| (average over images)")
    title = f"layer input ranges at sigma = {sigma[mid]:.2f}"
    ax.set_title(title + (" (color: A4 green, A6 orange, A8 red)" if quant else ""))
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
    # per-channel distribution of the layer with the widest range
    worst = int(np.argmax(absmax.max(axis=0)))
    low, high = stats["channel_min"][worst], stats["channel_max"][worst]  # (step, ch)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for t in sorted({0, mid, len(sigma) - 1}):
        ax.fill_between(
            np.arange(low.shape[1]), low[t], high[t], alpha=0.35, label=f"sigma {sigma[t]:.2f}"
        )
    ax.set_xlabel("input channel")
    ax.set_ylabel("min .. max")
    ax.set_title(f"per-channel range of {names[worst]}")
    ax.legend()
    paths.append(_save(fig, out / "channels.png"))
    # histograms with shift and grid overlays: first fc2 (post-GELU) at three timesteps
    fc2 = next((i for i, n in enumerate(stats["names"]) if n.endswith("mlp.fc2")), worst)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for ax, t in zip(axes, [0, mid, len(sigma) - 1], strict=True):
        edges, counts = stats["hist_edges"][fc2, t], stats["hist_counts"][fc2, t]
        ax.stairs(counts, edges, fill=True, alpha=0.6)
        ax.set_yscale("log")
        ax.set_title(f"{names[fc2]} sigma {sigma[t]:.2f}", fontsize=9)
        if quant:
            shift = float(np.nanmean(quant["shift"][t, fc2]))
            ax.axvline(shift, color="k", ls="--", lw=1, label=f"mean shift {shift:.2f}")
            scale, bits = quant["scale"][t, fc2], quant["bits"][t, fc2]
            half = 2 ** (bits - 1) - 1
            for k in (-half, half):
                ax.axvline(shift + k * scale, color=TIER_COLORS[int(bits)], lw=1)
            ax.legend(fontsize=7, title=f"A{bits} grid", title_fontsize=7)
    paths.append(_save(fig, out / "histograms.png"))
    return paths
