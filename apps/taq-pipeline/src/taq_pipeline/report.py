"""`report.md` (variant table first), `report.json` (every number) and PNG plots.

Reads the evaluation (`eval.json`), each weight method's per-block errors (`weights` groups), the
activation tiers (`quant_config`) and the stage timings (the store's root record); computes
nothing expensive, so `taq report` can be rerun at will.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taq_actstats.plots import plot_all, plot_data  # noqa: E402
from taq_actstats.temporal import require_temporal, temporal_record  # noqa: E402
from taq_io import MISSING, Store  # noqa: E402
from taq_pipeline.evaluate import evaluation_plan  # noqa: E402
from taq_pipeline.intervals import Interval, evaluation_intervals  # noqa: E402
from taq_run.quant_config import (  # noqa: E402
    TierRule,
    analyze_config_of,
    read_quant_plan,
    read_tiers,
    require_quant_config,
)
from taq_run.weight_methods import weight_methods  # noqa: E402
from taq_run.weights import grid_of, has_weights, read_block_errors, require_weights  # noqa: E402
from taq_runtime.doctor import environment_report  # noqa: E402

NOTE = (
    "Real vs simulated: the packed 4-bit weights are real (MLX QuantizedLinear codes held in "
    "memory; on CPU each layer is dequantized on the fly into a transient float32 buffer). "
    "Activation quantization is simulated (quantize-dequantize in float32): MLX has no "
    "integer activation matmul."
)


def _fmt(value, spec: str, none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def _percent(interval: Interval) -> str:
    return f"{interval.value:.1%} [{interval.low:.1%}, {interval.high:.1%}]"


def _finite(value):
    """JSON-safe numbers: inf/NaN become null (FP's PSNR against itself is infinite)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def method_rows(store: Store) -> list[dict]:
    """One row per weight method the store holds (registry order): its per-block output
    MSE on the cached samples, round-to-nearest's on the same grid, and its seconds."""
    rows = []
    for method in weight_methods().values():
        if not has_weights(store, method.name):
            continue
        group = require_weights(store, method.name)
        blocks = read_block_errors(group)
        rows.append(
            {
                "method": method.name,
                "label": method.label,
                "bits_w": grid_of(group).bits_w,
                "blocks": blocks,
                "mse": float(np.mean([b["mse"] for b in blocks.values()])),
                "rtn_mse": float(np.mean([b["rtn_mse"] for b in blocks.values()])),
                "seconds": float(sum(b["seconds"] for b in blocks.values())),
            }
        )
    return rows


def tier_tables(store: Store) -> dict:
    group = require_quant_config(store)
    config = analyze_config_of(group)
    tiers = read_tiers(group)
    out = {
        "rule": config.rule.to_json(),
        "range_margin": config.range_margin,
        "range_method": config.range_method,
        "recipe": config.recipe,
        "avg_bits": config.avg_bits,  # None: tiers by the rule
        "plan": config.plan,
        "smoothed_layers": [n for n, s in zip(tiers.layer_names, tiers.smoothed, strict=True) if s],
    }
    for label, bits in (("time-aware", tiers.bits), ("smoothquant", tiers.sq_bits)):
        out[label] = {f"A{b}": int((bits == b).sum()) for b in (4, 6, 8)}
        out[label]["average_bits"] = float(bits.mean())
        out[label]["per_step"] = {
            f"A{b}": (bits == b).sum(axis=1).astype(int).tolist() for b in (4, 6, 8)
        }
    return out


def _tier_text(tiers: dict, rule: dict) -> str:
    """How the tiers were chosen: the recipe, and the rule or the average-bit budget."""
    if tiers["avg_bits"] is not None:
        how = (
            f"Tiers by an average-bit budget of {tiers['avg_bits']:g} bits ({tiers['plan']} "
            "plan), maximising the estimated SQNR."
        )
    else:
        how = f"Tier rule `{rule['rule']}`: {TierRule(**rule).describe()}."
    if tiers["recipe"] == "taq-dit":
        return (
            f"Recipe `taq-dit` (the paper's): ranges by AvgMinMax over the calibration images "
            f"(post-GELU inputs after the momentum shift). {how} SmoothQuant on the paper's "
            "candidates, one tier lower."
        )
    if tiers.get("range_method") == "mse":
        grid = (
            "Each step's grid, at each tier's bits, ends at the clip with the least estimated "
            "quantization error on the calibration activations"
        )
    else:
        grid = (
            f"Each step's grid covers {tiers['range_margin']:g} x the calibration maximum of "
            "the layer's input"
        )
    return (
        f"Recipe `taq`: {how} {grid} (post-GELU inputs after the shift). "
        "SmoothQuant smooths a layer only where the estimated output noise drops, counting the "
        "re-rounding of its packed W4 weights."
    )


def plot_actstats(store: Store, out: Path) -> list[Path]:
    """taq-actstats' cheap plots (ranges per layer and step, tiers overlaid) into `out`."""
    if store.state("actstats").state == MISSING:
        return []
    plan = None
    if store.state("quant_config").state != MISSING:
        plan = read_quant_plan(require_quant_config(store))
    return plot_all(plot_data(store), out, plan)


def temporal_summary(store: Store) -> dict | None:
    """The `temporal` group as JSON, or None for a store without one (older runs)."""
    if store.state("temporal").state == MISSING:
        return None
    return temporal_record(require_temporal(store))


def write_report(store: Store, out: Path, results, eval_record: dict, config: dict) -> Path:
    """Write report.md, report.json and the plots into `out`; return report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    env = environment_report()
    methods, tiers, timings = method_rows(store), tier_tables(store), store.timings()
    evaluation = {
        "seconds": sum(r.seconds for r in results),
        "outcome": "computed",
        "groups": [],
    }
    timings = {**timings, "evaluate": evaluation}
    stats = evaluation_intervals(results, evaluation_plan(store).claims)
    seeds = eval_record["seeds"]
    data = {
        "store": str(store.path),
        "config": config,
        "eval": {k: eval_record[k] for k in ("config", "config_hash", "inputs", "seeds")},
        "intervals": stats,
        "environment": env.as_dict(),
        "variants": [r.row() for r in results],
        "weight_methods": methods,
        "tiers": tiers,
        "timings": timings,
        "note": NOTE,
    }
    (out / "report.json").write_text(json.dumps(_finite(data), indent=2))
    temporal = temporal_summary(store)
    actstats_plots = plot_actstats(store, out / "actstats")
    if temporal is not None:
        (out / "temporal.json").write_text(json.dumps(_finite(temporal), indent=2))
    _plot_samples(out / "samples.png", results, eval_record.get("prompts"))
    _plot_blocks(out / "block_mse.png", methods)
    _plot_quality(out / "quality_vs_bits.png", results)
    _plot_tiers(out / "tiers.png", tiers)
    samples = eval_record["config"]["samples"]
    digits = eval_record["config"]["model"] == "tiny-digits"
    prompts = "prompts `digit 0`..`digit 9`" if digits else "the preset's prompts"
    task = eval_record.get("task_metric") or "task metric"
    lines = [
        f"# taq report: {eval_record['config']['model']}",
        "",
        NOTE,
        "",
        f"Seeds ({seeds['split']} split): evaluation {seeds['evaluation']}, calibration "
        f"{seeds['calibration']}; no default was chosen on held-out seeds. Brackets: 95 % "
        f"interval ({stats['method']}).",
        "",
        f"| variant | PSNR vs FP (dB) | MSE vs FP | {task} | Fréchet dist. | "
        "weight memory (KiB) | act. bits | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = stats["variants"][r.name]
        psnr = Interval(**row["psnr_db"]).describe() if "psnr_db" in row else "inf"
        mse = Interval(**row["mse"]).describe(".3g")
        accuracy = _percent(Interval(**row["accuracy"])) if "accuracy" in row else _fmt(None, "")
        lines.append(
            f"| {r.name} | {psnr} | {mse} | {accuracy} | {_fmt(r.frechet, '.2f')} | "
            f"{r.weight_bytes / 1024:.1f} | {_fmt(r.act_bits, '.2f', 'fp32')} | "
            f"{r.seconds:.1f} |"
        )
    lines += ["", *fidelity_table(results)]
    lines += [
        "",
        "Claims, each a paired comparison on the same seeds (met only when the whole interval "
        "of the difference lies above the target, 0 unless stated):",
        "",
    ]
    lines += [f"- {c['text']}" for c in stats["comparisons"]]
    lines += [
        "",
        f"{samples} samples ({prompts} in turn, seeds {seeds['evaluation']}"
        f"), {eval_record['config']['num_steps']} Euler steps, CFG "
        f"{eval_record['config']['cfg']:g}; PSNR/MSE on the uint8 images vs FP's; "
        + (
            "accuracy and Fréchet distance from the digit classifier (features vs the real "
            "digits). "
            if digits
            else f"{task}: {TASK_NOTES.get(task, 'the preset evaluator')}. "
        )
        + "Weight memory: resident bytes of the quantized layers (FP: float32; time-aware rows "
        "add their per-step grids and the fc2 biases that compensate each step's shift). "
        f"Machine: {env.platform}, {env.device}, {env.blas} BLAS, "
        f"{env.gemm_gflops:.0f} GFLOP/s fp32 GEMM.",
        "",
        "![samples per variant](samples.png)",
        "",
        "## Weight methods",
        "",
        "Block output MSE vs FP on the cached calibration samples, mean over blocks, and "
        "round-to-nearest's on each method's own grid; stage time from this run's timings "
        "(wall; the methods' own seconds summed over blocks where the stage was skipped).",
        "",
        "| method | weights | block MSE | RTN MSE (same grid) | ratio | stage time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for m in methods:
        stage = timings.get(f"weights {m['method']}", {})
        seconds = stage.get("seconds") or m["seconds"]
        lines.append(
            f"| {m['label']} | W{m['bits_w']} | {m['mse']:.4g} | {m['rtn_mse']:.4g} | "
            f"{m['mse'] / max(m['rtn_mse'], 1e-30):.3f} | {seconds:.1f} |"
        )
    lines += [
        "",
        "Per block (MSE / seconds):",
        "",
        "| block | " + " | ".join(m["label"] for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for block in methods[0]["blocks"] if methods else []:
        cells = [
            f"{m['blocks'][block]['mse']:.4g} / {m['blocks'][block]['seconds']:.1f}s"
            for m in methods
        ]
        lines.append(f"| {block} | " + " | ".join(cells) + " |")
    rule = tiers["rule"]
    lines += [
        "",
        "![per-block MSE](block_mse.png)",
        "",
        "## Activation tiers (layer x timestep)",
        "",
        _tier_text(tiers, rule) + f" Smoothed: {', '.join(tiers['smoothed_layers']) or 'none'}.",
        "",
        "| plan | A4 | A6 | A8 | average bits |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {label} | {t['A4']} | {t['A6']} | {t['A8']} | {t['average_bits']:.2f} |"
        for label, t in tiers.items()
        if label in ("time-aware", "smoothquant")
    ]
    if temporal is not None:
        always = ", ".join(f"{k} {len(v)}" for k, v in temporal["always"].items())
        lines += [
            "",
            f"Temporal analysis (`temporal.json`): {len(temporal['switchers'])} of "
            f"{temporal['layers']} layers switch tiers across timesteps; one tier at every "
            f"step: {always}; the post-GELU shift leaves fc2 input ranges at "
            + (
                ", ".join(f"x{v['ratio']:.2f}" for v in temporal["shift"].values())
                or "(no fc2 layers)"
            )
            + " of the unshifted.",
        ]
    lines += [
        "",
        "![tiers per step](tiers.png)",
        "",
        *(f"![actstats {p.stem}](actstats/{p.name})" for p in actstats_plots),
        "",
        "![quality vs average activation bits](quality_vs_bits.png)",
        "",
        "## Timings",
        "",
        "| stage | seconds | how |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {t['seconds']:.1f} | {t['outcome']} |" for name, t in timings.items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def fidelity_table(results) -> list[str]:
    """SSIM and worst-case PSNR per variant, and the task metric's attributes if any."""
    attributes = list(results[0].attributes or {})
    header = ["variant", "SSIM vs FP", "worst-case PSNR (10th pct., dB)", *attributes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        fp = r is results[0]
        cells = [
            r.name,
            "1" if fp else _fmt(r.ssim, ".4f"),
            "inf" if fp else _fmt(r.psnr_p10_db, ".2f"),
            *(_fmt((r.attributes or {}).get(a), ".1%") for a in attributes),
        ]
        if not fp or attributes:
            lines.append("| " + " | ".join(cells) + " |")
    return lines


TASK_NOTES = {
    "prompt adherence": "the fraction of images whose parse (colour segmentation, connected "
    "components, template shapes; no learned judge) matches every attribute of the prompt; "
    "the attribute columns are means over the prompts they apply to (colour and shape: the "
    "share of a prompt's objects right; size: single objects; position: pairs)",
}


def _plot_samples(path: Path, results, prompts: list[str] | None = None) -> None:
    columns = min(10, len(results[0].images))
    fig, axes = plt.subplots(
        len(results),
        columns,
        figsize=(1.0 * columns + 2.2, 1.05 * len(results) + (0.6 if prompts else 0)),
        squeeze=False,
    )
    for row, r in enumerate(results):
        images = np.array(r.images, dtype=np.uint8)
        for col in range(columns):
            ax = axes[row, col]
            if images.shape[-1] == 3:
                ax.imshow(images[col])
            else:
                ax.imshow(images[col, ..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        label = r.name.replace(" + ", "\n+ ").replace(" static", "\nstatic")
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    for col in range(columns if prompts else 0):
        words = prompts[col].split(" ")
        half = (len(words) + 1) // 2
        text = " ".join(words[:half]) + "\n" + " ".join(words[half:])
        axes[-1, col].set_xlabel(text, fontsize=5)
    fig.suptitle("generated samples (same prompts and seeds per column)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_blocks(path: Path, methods: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(methods[0]["blocks"]) if methods else []
    x = np.arange(len(names))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            [m["blocks"][b]["mse"] for b in names],
            width,
            label=f"{m['label']} W{m['bits_w']}",
        )
    ax.set_xticks(x, names)
    ax.set_ylabel("block output MSE vs FP")
    ax.set_title("per-block reconstruction error, by weight method")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_quality(path: Path, results) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in results[1:]:
        bits = 32.0 if r.act_bits is None else r.act_bits
        ax.scatter(bits, r.psnr_db, s=50, label=f"{r.name} ({r.psnr_db:.1f} dB)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 6, 8, 16, 32], ["4", "6", "8", "16", "32 (float)"])
    ax.set_xlabel("average activation bits")
    ax.set_ylabel("PSNR vs FP (dB), higher is better")
    ax.set_title("quality vs activation bits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_tiers(path: Path, tiers: dict) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, label in zip(axes, ("time-aware", "smoothquant"), strict=True):
        per_step = tiers[label]["per_step"]
        steps = np.arange(len(per_step["A4"]))
        bottom = np.zeros(len(steps))
        for tier, color in (("A4", "tab:green"), ("A6", "tab:orange"), ("A8", "tab:red")):
            counts = np.array(per_step[tier])
            ax.bar(steps, counts, bottom=bottom, color=color, label=tier, width=0.9)
            bottom += counts
        ax.set_title(f"{label}: {tiers[label]['average_bits']:.2f} bits on average")
        ax.set_xlabel("sampling step (0 = pure noise)")
    axes[0].set_ylabel("layers")
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
