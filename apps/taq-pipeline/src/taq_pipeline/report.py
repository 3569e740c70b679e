"""`report.md` (variant table first), `report.json` (every number) and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from taq_model.doctor import environment_report  # noqa: E402
from taq_model.images import image_grid, save_png  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taq_io import Store  # noqa: E402

NOTE = (
    "Packed 4-bit weights are real (MLX QuantizedLinear codes; on CPU each layer is "
    "dequantized on the fly into a transient float32 buffer). Activation quantization is "
    "simulated (quantize-dequantize): MLX has no integer activation matmul."
)


def _fmt(value, spec: str, none: str = "-") -> str:
    if value is None:
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec)


def block_rows(store: Store) -> list[dict]:
    ada, rtn = store.require_group("weights", "adaround"), store.require_group("weights", "rtn")
    names = ada.read("block_names").tolist()
    return [
        {
            "block": name,
            "rtn_mse": float(rtn.read("mse")[i]),
            "adaround_mse": float(ada.read("mse")[i]),
            "ratio": float(ada.read("mse")[i] / rtn.read("mse")[i]),
            "seconds": float(ada.read("seconds")[i]),
        }
        for i, name in enumerate(names)
    ]


def tier_histogram(store: Store) -> dict:
    group = store.require_group("quant_config")
    out = {}
    for label, table in (("time-aware", "bits"), ("smoothquant", "sq_bits")):
        bits = group.read(table)
        out[label] = {f"A{b}": int((bits == b).sum()) for b in (4, 6, 8)}
        out[label]["average_bits"] = float(bits.mean())
    return out


def write_report(store: Store, out: Path, results, timings, config: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    env = environment_report()
    blocks = block_rows(store)
    tiers = tier_histogram(store)
    data = {
        "config": config,
        "environment": env.as_dict(),
        "variants": [r.row() for r in results],
        "blocks": blocks,
        "tiers": tiers,
        "timings": [t.__dict__ for t in timings],
        "note": NOTE,
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, default=float))
    _plots(out, results, blocks)
    lines = [
        f"# taq report: {config['model']}",
        "",
        NOTE,
        "",
        "| variant | PSNR vs FP (dB) | MSE vs FP | digit accuracy | Fréchet dist. | "
        "weight memory (KiB) | act. bits | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {_fmt(r.psnr_db, '.2f')} | {_fmt(r.mse, '.3g')} | "
            f"{_fmt(r.accuracy, '.1%')} | {_fmt(r.frechet, '.2f')} | "
            f"{r.weight_bytes / 1024:.1f} | {_fmt(r.act_bits, '.2f', 'fp32')} | "
            f"{r.seconds:.1f} |"
        )
    lines += [
        "",
        f"{config['eval_samples']} samples, fixed prompts and seeds; images compared in uint8. "
        f"Machine: {env.platform}, {env.device}, {env.blas} BLAS, "
        f"{env.gemm_gflops:.0f} GFLOP/s fp32 GEMM.",
        "",
        "![samples](samples.png)",
        "",
        "## AdaRound vs RTN per block (block output MSE vs FP on the cached samples)",
        "",
        "| block | RTN MSE | AdaRound MSE | ratio | time (s) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {b['block']} | {b['rtn_mse']:.4g} | {b['adaround_mse']:.4g} | {b['ratio']:.3f} | "
        f"{b['seconds']:.1f} |"
        for b in blocks
    ]
    lines += ["", "![block mse](block_mse.png)", "", "## Activation tiers (layer x timestep)", ""]
    lines += [
        f"- {label}: A4 {t['A4']}, A6 {t['A6']}, A8 {t['A8']}, average {t['average_bits']:.2f} bits"
        for label, t in tiers.items()
    ]
    lines += ["", "![quality vs bits](quality_vs_bits.png)", "", "## Timings", ""]
    lines += [
        f"- {t.name}: {t.seconds:.1f}s" + (" (already complete)" if t.skipped else "")
        for t in timings
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plots(out: Path, results, blocks) -> None:
    rows = []
    for r in results:
        images = np.array(r.images, dtype=np.uint8)
        rows.append(image_grid(images[:10], columns=10))
    save_png(image_grid(np.stack(rows), columns=1, pad=6), out / "samples.png", upscale=3)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(blocks))
    ax.bar(x - 0.2, [b["rtn_mse"] for b in blocks], 0.4, label="RTN W4")
    ax.bar(x + 0.2, [b["adaround_mse"] for b in blocks], 0.4, label="AdaRound W4")
    ax.set_xticks(x, [b["block"] for b in blocks])
    ax.set_ylabel("block output MSE vs FP")
    ax.set_title("per-block reconstruction error")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "block_mse.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results[1:]:
        bits = 32.0 if r.act_bits is None else r.act_bits
        ax.scatter(bits, r.psnr_db, s=40)
        ax.annotate(r.name, (bits, r.psnr_db), fontsize=7)
    ax.set_xlabel("average activation bits (32 = float)")
    ax.set_ylabel("PSNR vs FP (dB)")
    ax.set_title("quality vs activation bits (all W4)")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_bits.png", dpi=110)
    plt.close(fig)
