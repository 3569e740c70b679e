"""`taq sweep`: the quality frontier of a finished run, quality vs bits for each method.

Points, each evaluated on the same prompts and seeds as `taq eval` (PSNR vs FP; on
tiny-digits the digit accuracy):

- weights: RTN and AdaRound at each `--weight-bits` (activations in float), one sibling store
  per width holding the run's calib and block cache (`w{bits}.zarr`), optimized there;
- activations: the run's AdaRound weights with the activation plan of
  `taq-actstats analyze --avg-bits B --plan P --recipe R` for every budget, plan and recipe,
  analyzed in turn into one sibling store (`activations.zarr`: the run's calib, block cache,
  actstats and weights) and evaluated there.

Everything lives in `<store>-sweep/`: the sibling stores, `sweep.json` (every finished point,
written atomically after each: a killed sweep resumes at the first unfinished point, and an
unfinished optimization resumes at its first unfinished block), `sweep.md` (the table) and the
two plots, each with the FP level drawn.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taq_actstats.analyze import analyze_stats  # noqa: E402
from taq_adaround.blockio import require_blockio  # noqa: E402
from taq_adaround.optimize import optimize_blocks  # noqa: E402
from taq_adaround.reconstruct import AdaRoundConfig  # noqa: E402
from taq_io import Store, StoreError, config_hash, is_url, local_parent, store_stem  # noqa: E402
from taq_model.presets import load_preset  # noqa: E402
from taq_pipeline.evaluate import EvalConfig, _write_json, load_eval, render_variant  # noqa: E402
from taq_pipeline.groups import require  # noqa: E402
from taq_pipeline.seeds import SPLITS, seed_split  # noqa: E402
from taq_run.calib import calib_config_of, require_calib  # noqa: E402
from taq_run.quant_config import PLANS, RECIPES, AnalyzeConfig, require_quant_config  # noqa: E402
from taq_run.weights import adaround_config_of, require_weights  # noqa: E402
from taq_runtime.fidelity import psnr_from_mse  # noqa: E402
from taq_tiny import classifier as digit_classifier  # noqa: E402

SWEEP_VERSION = 1
WEIGHT_GROUPS = ("calib", "blockio")
ACTIVATION_GROUPS = ("calib", "blockio", "actstats", "weights")  # weights need their blockio
BASE_INPUTS = ("calib", "actstats", "weights/adaround")  # what every point is made from


@dataclass(frozen=True)
class SweepConfig:
    weight_bits: tuple[int, ...] = (4, 3, 2)
    avg_bits: tuple[float, ...] = (8.0, 6.0, 5.0, 4.0)
    plans: tuple[str, ...] = ("static", "time-aware")
    recipes: tuple[str, ...] = ("taq", "taq-dit")
    iters: int = 1000  # AdaRound iterations per block at each weight width
    batch_size: int = 16
    eval_samples: int = 40
    split: str = "heldout"
    version: int = SWEEP_VERSION

    def __post_init__(self) -> None:
        for plan in self.plans:
            if plan not in PLANS:
                raise ValueError(f"--plans {plan!r} is unknown: pick from {', '.join(PLANS)}")
        for recipe in self.recipes:
            if recipe not in RECIPES:
                raise ValueError(f"--recipes {recipe!r} is unknown: pick from {', '.join(RECIPES)}")
        for bits in self.avg_bits:
            AnalyzeConfig(avg_bits=bits)  # refuses budgets outside 4..8
        for bits in self.weight_bits:
            AdaRoundConfig(iters=self.iters, batch_size=self.batch_size, bits_w=bits)
        if self.eval_samples < 1:
            raise ValueError("--eval-samples must be at least 1")
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r} is unknown: pick one of {', '.join(SPLITS)}")
        for name in ("weight_bits", "avg_bits", "plans", "recipes"):
            if not getattr(self, name):
                raise ValueError(f"--{name.replace('_', '-')} lists nothing: give at least one")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Point:
    name: str
    store: str | None  # the sibling store's directory name; None: FP
    options: dict | None  # load_quantized's keywords; None: FP
    weight_bits: int | None = None
    method: str | None = None  # RTN | AdaRound
    avg_bits: float | None = None
    plan: str | None = None
    recipe: str | None = None


def sweep_points(config: SweepConfig) -> list[Point]:
    points = [Point("FP", None, None)]
    for bits in config.weight_bits:
        for method, weights in (("RTN", "rtn"), ("AdaRound", "adaround")):
            options = {"weights": weights, "act": "none"}
            points.append(Point(f"{method} W{bits}", f"w{bits}.zarr", options, bits, method))
    for recipe in config.recipes:
        for plan in config.plans:
            for avg in config.avg_bits:
                name = f"{recipe} {plan} A{avg:g}"
                options = {"weights": "adaround", "act": "timestep"}
                points.append(
                    Point(name, "activations.zarr", options, avg_bits=avg, plan=plan, recipe=recipe)
                )
    return points


def sweep_dir(store_path: str | Path) -> Path:
    return local_parent(store_path) / f"{store_stem(store_path)}-sweep"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _sibling(base: Store, out: Path, name: str, groups: tuple[str, ...]) -> Store:
    """A store in `out` holding `groups` of the base store (kept if present). The chunks are
    hard links: the sweep only reads these groups and writes only new ones."""
    path = out / name
    if not path.exists():
        partial = out / f"{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        source = Path(base.path)
        shutil.copy2(source / "zarr.json", partial / "zarr.json")
        for group in groups:
            shutil.copytree(source / group, partial / group, copy_function=_link_or_copy)
        partial.rename(path)  # a kill leaves no half-copied store under the final name
    return Store.open(path, mode="r+")


def _prepare(base: Store, out: Path, point: Point, config: SweepConfig, handle) -> Store:
    if point.weight_bits is not None:
        store = _sibling(base, out, point.store, WEIGHT_GROUPS)
        ada = adaround_config_of(require_weights(base, "adaround"))
        grid = AdaRoundConfig(
            iters=config.iters,
            batch_size=config.batch_size,
            bits_w=point.weight_bits,
            bits_a=0,  # the weight track alone: activations stay float here
            group_size=ada.group_size,
        )
        optimize_blocks(handle, store, grid)  # resumes at the first unfinished block
        return store
    store = _sibling(base, out, point.store, ACTIVATION_GROUPS)
    analyze = AnalyzeConfig.for_recipe(point.recipe, avg_bits=point.avg_bits, plan=point.plan)
    analyze_stats(handle, store, analyze, overwrite=True)
    return store


def run_sweep(store_path: str | Path, config: SweepConfig, log=print) -> dict:
    """Every point's metrics (resuming from `sweep.json`); writes the table and plots."""
    base = None if is_url(store_path) else Store.open(store_path)
    if base is None or not Path(base.path).is_dir():
        raise StoreError(f"taq sweep copies groups on disk: {store_path} must be a local store")
    for path in BASE_INPUTS:
        require(base, *path.split("/"))
    require_blockio(base, require_weights(base, "adaround").read("block_names")[0])
    out = sweep_dir(base.path)
    out.mkdir(parents=True, exist_ok=True)
    calib = calib_config_of(require_calib(base))
    evaluation = EvalConfig(
        base.model.preset,
        config.eval_samples,
        calib.num_steps,
        calib.cfg,
        calib.seed,
        calib.num_images,
        config.split,
    )
    record = {
        "config": config.to_json(),
        "eval": evaluation.to_json(),
        "base": {
            k: require(base, k, n or None).identity()
            for k, _, n in (path.partition("/") for path in BASE_INPUTS)
        },
    }
    record["config_hash"] = config_hash({k: record[k] for k in ("config", "eval", "base")})
    path = out / "sweep.json"
    previous = load_eval(path)
    points_done = {}
    if previous and previous.get("config_hash") == record["config_hash"]:
        points_done = previous.get("points", {})
    elif previous:
        log("   sweep.json came from other settings or artifacts: sweeping again")
    record["points"] = points_done
    handle = load_preset(evaluation.model)
    prompts = [
        handle.default_prompts[i % len(handle.default_prompts)] for i in range(config.eval_samples)
    ]
    seeds = list(
        seed_split(
            evaluation.seed, evaluation.num_images, config.split, config.eval_samples
        ).evaluation
    )
    digits = evaluation.model == "tiny-digits"
    labels = np.array([int(p.split()[-1]) for p in prompts]) if digits else None
    reference = None
    fp_path = out / "fp_images.npy"
    points = sweep_points(config)
    already = [p.name for p in points if p.name in points_done]
    if already:
        log(f"   {len(already)} of {len(points)} points already done: {', '.join(already)}")
    for point in points:
        if point.name in points_done and (point.options is not None or fp_path.exists()):
            continue
        store = None if point.store is None else _prepare(base, out, point, config, handle)
        latents, images, _, seconds = render_variant(
            evaluation, store, point.options, prompts, seeds
        )
        if point.options is None:
            np.save(fp_path, images)
        if reference is None:
            reference = np.load(fp_path).astype(np.float64)
        mse = float(np.mean((images.astype(np.float64) - reference) ** 2))
        accuracy = None
        if digits:
            accuracy = float(np.mean(digit_classifier.predict(latents) == labels))
        act_bits = None
        if point.avg_bits is not None:
            act_bits = float(require_quant_config(store).read("bits").mean())
        row = {
            **asdict(point),
            "psnr_db": psnr_from_mse(mse),
            "mse": mse,
            "accuracy": accuracy,
            "act_bits_measured": act_bits,
            "seconds": seconds,
        }
        record["points"][point.name] = row
        _write_json(path, record)
        score = "" if accuracy is None else f", accuracy {accuracy:.0%}"
        log(f"   {point.name}: PSNR {row['psnr_db']:.2f} dB{score}, {seconds:.1f}s")
    write_sweep_report(out, record, points)
    return record


def write_sweep_report(out: Path, record: dict, points: list[Point]) -> None:
    rows = [record["points"][p.name] for p in points]
    _plot_weights(out / "quality_vs_weight_bits.png", rows)
    _plot_activations(out / "quality_vs_activation_bits.png", rows)
    lines = [
        "# taq sweep: quality vs bits",
        "",
        f"{record['eval']['samples']} samples per point ({record['eval']['split']} seeds), "
        "PSNR vs the FP model's images of the same seeds; activation quantization is simulated.",
        "",
        "![quality vs weight bits](quality_vs_weight_bits.png)",
        "",
        "![quality vs average activation bits](quality_vs_activation_bits.png)",
        "",
        "| point | weight bits | average activation bits | PSNR vs FP (dB) | accuracy | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        weight = "" if row["weight_bits"] is None else f"W{row['weight_bits']}"
        act = "" if row["act_bits_measured"] is None else f"{row['act_bits_measured']:.2f}"
        psnr = "inf" if not np.isfinite(row["psnr_db"]) else f"{row['psnr_db']:.2f}"
        accuracy = "-" if row["accuracy"] is None else f"{row['accuracy']:.0%}"
        lines.append(
            f"| {row['name']} | {weight} | {act} | {psnr} | {accuracy} | {row['seconds']:.1f} |"
        )
    (out / "sweep.md").write_text("\n".join(lines) + "\n")


def _plot_frontier(path: Path, rows: list[dict], series: dict, title: str, xlabel: str) -> None:
    """PSNR vs FP (FP itself: infinite) and, where the preset has one, accuracy with the FP
    level; `series` maps a line's label to its rows (x first)."""
    panels = [("psnr_db", "PSNR vs FP (dB)")]
    if rows[0]["accuracy"] is not None:
        panels.append(("accuracy", "digit accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for name, points in series.items():
            line = sorted((x, r[key]) for x, r in points)
            if line:
                ax.plot(*zip(*line, strict=True), marker="o", label=name)
        if key == "accuracy":
            ax.axhline(rows[0]["accuracy"], color="k", ls="--", lw=1, label="FP")
        else:
            ax.set_title("FP: identical images (infinite PSNR)", fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_weights(path: Path, rows: list[dict]) -> None:
    series = {
        method: [(r["weight_bits"], r) for r in rows if r["method"] == method]
        for method in ("RTN", "AdaRound")
    }
    _plot_frontier(path, rows, series, "quality vs weight bits (float activations)", "weight bits")


def _plot_activations(path: Path, rows: list[dict]) -> None:
    series = {}
    for r in rows:
        if r["recipe"] is not None:
            series.setdefault(f"{r['recipe']} {r['plan']}", []).append((r["act_bits_measured"], r))
    _plot_frontier(
        path,
        rows,
        series,
        "quality vs average activation bits (AdaRound weights)",
        "average activation bits",
    )
