"""`taq sweep`: the quality frontier of a finished run, quality vs bits for each method.

Points, each evaluated on the same prompts and seeds as `taq eval` (PSNR vs FP; on
tiny-digits the digit accuracy):

- weights: every weight method of the run (RTN, GPTQ, AdaRound, ...) at each `--weight-bits`
  (activations in float), one sibling store per width holding the run's calib and block cache
  (`w{bits}.zarr`), quantized there with the config the run recorded for the method, its bits
  replaced (and any method flag given to the sweep, e.g. `--iters`);
- activations: the run's last weight method's weights (AdaRound's in a default run) with the
  activation plan of
  `taq-actstats analyze --avg-bits B --plan P --recipe R` for every budget, plan and recipe,
  analyzed in turn into one sibling store (`activations.zarr`: the run's calib, block cache,
  actstats and weights) and evaluated there; and, as the naive baseline, the run's RTN
  weights with each static plan (no AdaRound, no time-aware tiers).

Everything lives in `<store>-sweep/`: the sibling stores, `sweep.json` (every finished point,
written atomically after each: a killed sweep resumes at the first unfinished point, and an
unfinished optimization resumes at its first unfinished block), `sweep.md` (the table) and the
two plots, each with the FP level drawn.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from taq_actstats.analyze import analyze_stats  # noqa: E402
from taq_adaround.blockio import require_blockio  # noqa: E402
from taq_adaround.optimize import quantize_blocks  # noqa: E402
from taq_io import Store, StoreError, config_hash, is_url, local_parent, store_stem  # noqa: E402
from taq_model.presets import load_preset  # noqa: E402
from taq_pipeline.evaluate import EvalConfig, _write_json, load_eval, render_variant  # noqa: E402
from taq_pipeline.groups import require  # noqa: E402
from taq_pipeline.intervals import (  # noqa: E402
    RESAMPLES,
    Claim,
    Interval,
    compare,
    mean_interval,
    percentile_interval,
    psnr_interval,
)
from taq_pipeline.seeds import SPLITS, check_eval_samples, seed_split  # noqa: E402
from taq_pipeline.tasks import LABELS, mean_of_given, task_metrics, task_scores  # noqa: E402
from taq_quant import check_exportable  # noqa: E402
from taq_run.calib import calib_config_of, require_calib  # noqa: E402
from taq_run.quant_config import (  # noqa: E402
    PLANS,
    RECIPES,
    AnalyzeConfig,
    read_tiers,
    require_quant_config,
)
from taq_run.weight_methods import WeightMethod, weight_methods  # noqa: E402
from taq_run.weights import (  # noqa: E402
    GridConfig,
    block_names_of,
    config_of,
    has_weights,
    require_weights,
)
from taq_runtime.fidelity import (  # noqa: E402
    PSNR_CAP,
    WORST_PERCENTILE,
    image_fidelity,
    per_image_mse,
    per_image_ssim,
    psnr_from_mse,
)

SWEEP_VERSION = 3  # 2: per-sample MSE, SSIM and task scores (intervals); 3: every method
WEIGHT_GROUPS = ("calib", "blockio")
ACTIVATION_GROUPS = ("calib", "blockio", "actstats", "weights")  # weights need their blockio
VARIED = ("bits_w", "bits_a", "seed")  # what the sweep sets itself, not a method flag
RTN_SUFFIX = ", RTN weights"  # an activation point's name with the run's RTN weights


@dataclass(frozen=True)
class SweepConfig:
    weight_bits: tuple[int, ...] = (4, 3, 2)
    avg_bits: tuple[float, ...] = (8.0, 6.0, 5.0, 4.0)
    plans: tuple[str, ...] = ("static", "time-aware")
    recipes: tuple[str, ...] = ("taq", "taq-dit")
    eval_samples: int = 40
    split: str = "heldout"
    # method flags given to the sweep (field -> value), over the run's recorded configs
    method_flags: dict = field(default_factory=dict)
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
            check_exportable(bits, GridConfig().group_size, bits_flag="--weight-bits")
        for method in weight_methods().values():  # each method checks the flags it has
            method_flags(method, self.method_flags)
        check_eval_samples(self.eval_samples)
        if self.split not in SPLITS:
            raise ValueError(f"--split {self.split!r} is unknown: pick one of {', '.join(SPLITS)}")
        for name in ("avg_bits", "plans", "recipes"):  # no weight bits: activation points only
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
    method: str | None = None  # a weight method's name (rtn, gptq, adaround, ...)
    avg_bits: float | None = None
    plan: str | None = None
    recipe: str | None = None


def method_flags(method: WeightMethod, given: dict) -> dict:
    """The flags in `given` that `method`'s config has (checked by building it)."""
    own = {k: v for k, v in given.items() if k in method.flags() and k not in VARIED}
    method.config(**own)
    return own


def sweep_points(config: SweepConfig, methods: list[WeightMethod]) -> list[Point]:
    """FP, each of `methods` (the run's) at each weight width, then the activation points
    on the last method's weights (and, under static plans, RTN's)."""
    points = [Point("FP", None, None)]
    for bits in config.weight_bits:
        for method in methods:
            options = {"weights": method.name, "act": "none"}
            name = f"{method.label} W{bits}"
            points.append(Point(name, f"w{bits}.zarr", options, bits, method.name))
    names = [m.name for m in methods]
    for recipe in config.recipes:
        for plan in config.plans:
            for avg in config.avg_bits:
                weights = [names[-1]]
                if plan == "static" and "rtn" in names and names[-1] != "rtn":
                    weights.append("rtn")
                for method in weights:
                    name = f"{recipe} {plan} A{avg:g}" + (RTN_SUFFIX if method == "rtn" else "")
                    points.append(
                        Point(
                            name,
                            "activations.zarr",
                            {"weights": method, "act": "timestep"},
                            avg_bits=avg,
                            plan=plan,
                            recipe=recipe,
                        )
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
        method = weight_methods()[point.method]
        recorded = config_of(require_weights(base, method.name), method.config)
        varied = {"bits_w": point.weight_bits}
        if "bits_a" in method.flags():
            varied["bits_a"] = 0  # the weight track alone: activations stay float here
        grid = replace(recorded, **method_flags(method, config.method_flags), **varied)
        quantize_blocks(handle, store, method, grid)  # resumes at the first unfinished block
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
    methods = [m for m in weight_methods().values() if has_weights(base, m.name)]
    if not methods:
        raise StoreError(f"{store_path} has no weights of an installed method: finish `taq run`")
    base_inputs = ["calib", "actstats", *(f"weights/{m.name}" for m in methods)]
    for path in base_inputs:
        require(base, *path.split("/"))
    require_blockio(base, block_names_of(require_weights(base, methods[0].name))[0])
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
            for k, _, n in (path.partition("/") for path in base_inputs)
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
    tasks = task_metrics(evaluation.model)
    reference = None
    fp_path = out / "fp_images.npy"
    points = sweep_points(config, methods)
    already = [p.name for p in points if p.name in points_done]
    if already:
        log(f"   {len(already)} of {len(points)} points already done: {', '.join(already)}")
    # FP first (the reference), then the cheap activation points, the optimizations last
    for point in sorted(points, key=lambda p: p.weight_bits is not None):
        if point.name in points_done and (point.options is not None or fp_path.exists()):
            continue
        start, start_cpu = time.perf_counter(), time.process_time()
        store = None if point.store is None else _prepare(base, out, point, config, handle)
        prepare_seconds = time.perf_counter() - start
        prepare_cpu_seconds = time.process_time() - start_cpu  # every thread of this process
        latents, images, _, seconds = render_variant(
            evaluation, store, point.options, prompts, seeds
        )
        if point.options is None:
            np.save(fp_path, images)
        if reference is None:
            reference = np.load(fp_path)
        act_bits = None
        if point.avg_bits is not None:
            act_bits = read_tiers(require_quant_config(store)).average_bits()
        row = {
            **asdict(point),
            **measure_point(evaluation.model, prompts, reference, latents, images),
            "act_bits_measured": act_bits,
            "seconds": seconds,
            "prepare_seconds": prepare_seconds,
            "prepare_cpu_seconds": prepare_cpu_seconds,
        }
        record["points"][point.name] = row
        _write_json(path, record)
        scores = "".join(f", {k} {v:.1%}" for k, v in row["task"].items() if v is not None)
        log(
            f"   {point.name}: PSNR {row['psnr_db']:.2f} dB, SSIM {row['ssim']:.4f}{scores}, "
            f"{prepare_seconds:.1f}s + {seconds:.1f}s"
        )
    write_sweep_report(out, record, points, tasks)
    return record


def measure_point(
    model: str, prompts: list[str], reference: np.ndarray, latents: np.ndarray, images: np.ndarray
) -> dict:
    """One point's numbers vs FP's images of the same seeds: PSNR of the mean MSE, the mean and
    10th-percentile per-image PSNR and SSIM (`taq_runtime.fidelity`), the preset's task metrics
    (`tasks.py`); and per sample what `point_intervals` bootstraps."""
    sample_mse = per_image_mse(reference, images)
    scores = task_scores(model, prompts, latents, images)
    return {
        "psnr_db": psnr_from_mse(sample_mse.mean()),
        "mse": float(sample_mse.mean()),
        **image_fidelity(reference, images).to_json(),
        "task": {k: mean_of_given(v) for k, v in scores.items()},
        "sample_mse": sample_mse.tolist(),
        "sample_ssim": per_image_ssim(reference, images).tolist(),
        "sample_task": scores,
    }


def point_intervals(row: dict) -> dict[str, Interval]:
    """95 % bootstrap intervals over the point's samples (`intervals.py`): PSNR (none for FP,
    whose PSNR is infinite), p10 PSNR, SSIM and each task metric (over the samples it applies
    to)."""
    out = {}
    sample_mse = np.asarray(row["sample_mse"])
    if sample_mse.mean() > 0:
        out["psnr_db"] = psnr_interval(sample_mse)
        capped = np.minimum(psnr_from_mse(sample_mse), PSNR_CAP)
        out["psnr_p10"] = percentile_interval(capped, WORST_PERCENTILE)
    out["ssim"] = mean_interval(row["sample_ssim"])
    for name, values in row["sample_task"].items():
        given = [v for v in values if v is not None]
        if given:
            out[name] = mean_interval(given)
    return out


def sweep_claims(points: list[Point], tasks: tuple[str, ...]) -> list[Claim]:
    """The paired comparisons the sweep reports: each method vs RTN at each weight width
    and, under static activations, the run's last method vs RTN at each budget and recipe;
    time-aware vs static at each budget and recipe; taq vs taq-dit at each budget and plan;
    on PSNR and on the preset's first task metric."""
    names = {p.name for p in points}
    rtn = {p.weight_bits: p.name for p in points if p.method == "rtn"}
    pairs = []
    for p in points:
        if p.weight_bits is not None and p.method != "rtn" and p.weight_bits in rtn:
            pairs.append((p.name, rtn[p.weight_bits]))
        elif p.plan == "time-aware":
            pairs.append((p.name, p.name.replace("time-aware", "static")))
        elif p.name.endswith(RTN_SUFFIX):
            pairs.append((p.name.removesuffix(RTN_SUFFIX), p.name))
        if p.recipe == "taq":
            pairs.append((p.name, p.name.replace("taq", "taq-dit", 1)))
    metrics = ("psnr", "accuracy") if tasks else ("psnr",)
    return [
        Claim(a, b, metric) for metric in metrics for a, b in pairs if a in names and b in names
    ]


def write_sweep_report(out: Path, record: dict, points: list[Point], tasks: tuple) -> None:
    """`sweep.md` and the two plots from the finished points of `record` (FP first)."""
    points = [p for p in points if p.name in record["points"]]
    rows = [record["points"][p.name] for p in points]
    intervals = {row["name"]: point_intervals(row) for row in rows}
    _plot_weights(out / "quality_vs_weight_bits.png", rows, intervals, tasks)
    _plot_activations(out / "quality_vs_activation_bits.png", rows, intervals, tasks)
    task_heads = "".join(f" {LABELS.get(t, t)} |" for t in tasks)
    lines = [
        "# taq sweep: quality vs bits",
        "",
        f"{record['eval']['samples']} samples per point ({record['eval']['split']} seeds), "
        "each metric vs the FP model's images of the same seeds, with its 95 % interval "
        f"[low, high] ({RESAMPLES} bootstrap resamples of the samples); activation "
        "quantization is simulated. PSNR is that of the mean MSE, p10 PSNR the 10th percentile "
        f"of per-image PSNR (capped at {PSNR_CAP:g} dB).",
        "",
        "![quality vs weight bits](quality_vs_weight_bits.png)",
        "",
        "![quality vs average activation bits](quality_vs_activation_bits.png)",
        "",
        "| point | weight bits | average activation bits | PSNR vs FP (dB) | p10 PSNR (dB) | "
        f"SSIM |{task_heads} seconds | preparation: wall / CPU (s) |",
        "|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|---|",
    ]
    for row in rows:
        stats = intervals[row["name"]]
        weight = "" if row["weight_bits"] is None else f"W{row['weight_bits']}"
        act = "" if row["act_bits_measured"] is None else f"{row['act_bits_measured']:.2f}"
        cells = [
            stats["psnr_db"].describe() if "psnr_db" in stats else "inf",
            stats["psnr_p10"].describe() if "psnr_p10" in stats else f"{PSNR_CAP:g} (cap)",
            stats["ssim"].describe(".4f"),
            *(stats[t].describe(".3f") if t in stats else "-" for t in tasks),
        ]
        seconds = row["prepare_seconds"] + row["seconds"]
        prepare = f"{row['prepare_seconds']:.1f} / {row.get('prepare_cpu_seconds', 0):.1f}"
        lines.append(
            f"| {row['name']} | {weight} | {act} | {' | '.join(cells)} | {seconds:.1f} | "
            f"{prepare} |"
        )
    per_sample = {
        row["name"]: {
            "mse": row["sample_mse"],
            "correct": row["sample_task"][tasks[0]] if tasks else None,
        }
        for row in rows
    }
    claims = sweep_claims(points, tasks)
    # a task metric equal on every sample (digit accuracy at 100 %) has nothing to compare
    same = [
        c
        for c in claims
        if c.metric != "psnr" and per_sample[c.better]["correct"] == per_sample[c.worse]["correct"]
    ]
    comparisons = [compare(c, per_sample) for c in claims if c not in same]
    if comparisons:
        lines += [
            "",
            "## Paired comparisons (same seeds; 'met': the whole 95 % interval above 0)",
            "",
            *(f"- {c.describe()}" for c in comparisons),
        ]
    lines += activation_differences(points, per_sample, tasks)
    if same:
        lines += [
            "",
            f"{LABELS.get(tasks[0], tasks[0])}: both sides equal on every sample in "
            f"{len(same)} of {sum(c.metric != 'psnr' for c in claims)} pairs (no comparison).",
        ]
    (out / "sweep.md").write_text("\n".join(lines) + "\n")


def activation_differences(
    points: list[Point], per_sample: dict[str, dict], tasks: tuple[str, ...]
) -> list[str]:
    """Per budget, the paired differences that rank the activation methods: the default recipe
    (the first of `RECIPES`) minus each other recipe under each plan, and time-aware minus
    static under each recipe; one table per metric (PSNR, the task metric)."""
    names = {p.name for p in points}
    budgets = sorted({p.avg_bits for p in points if p.avg_bits is not None}, reverse=True)
    recipes = [r for r in RECIPES if any(p.recipe == r for p in points)]
    default = RECIPES[0]
    columns = [
        (f"{default} − {other}, {plan}", f"{default} {plan}", f"{other} {plan}")
        for other in recipes
        if other != default
        for plan in PLANS
    ]
    columns += [
        (f"time-aware − static, {recipe}", f"{recipe} time-aware", f"{recipe} static")
        for recipe in recipes
    ]
    metrics = [("psnr", "PSNR (dB)", ".2f")]
    if tasks:
        metrics.append(("accuracy", LABELS.get(tasks[0], tasks[0]), ".3f"))
    lines = []
    for metric, label, spec in metrics:
        rows = []
        for bits in budgets:
            cells = []
            for _, better, worse in columns:
                a, b = f"{better} A{bits:g}", f"{worse} A{bits:g}"
                if a not in names or b not in names or a not in per_sample:
                    cells.append("")
                    continue
                d = compare(Claim(a, b, metric), per_sample).difference
                text = f"{format(d.value, '+' + spec)} [{format(d.low, '+' + spec)}, "
                text += f"{format(d.high, '+' + spec)}]"
                cells.append(f"**{text}**" if d.low > 0 or d.high < 0 else text)
            if any(cells):
                rows.append(f"| A{bits:g} | " + " | ".join(cells) + " |")
        if rows:
            lines += [
                "",
                f"### Activation methods, paired differences in {label} (bold: the 95 % "
                "interval excludes 0)",
                "",
                "| budget | " + " | ".join(c[0] for c in columns) + " |",
                "|---|" + "---|" * len(columns),
                *rows,
            ]
    return lines


def _plot_frontier(
    path: Path,
    rows: list[dict],
    intervals: dict,
    series: dict,
    tasks: tuple,
    title: str,
    xlabel: str,
) -> None:
    """PSNR vs FP (FP itself: infinite; p10 PSNR dashed), SSIM and, where the preset has one,
    its first task metric, each with its 95 % interval as a band and the FP level drawn;
    `series` maps a line's label to its rows (x first)."""
    panels = [("psnr_db", "PSNR vs FP (dB)"), ("ssim", "SSIM vs FP")]
    panels += [(t, LABELS.get(t, t)) for t in tasks[:1]]
    fp = rows[0]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for colour, (name, points) in enumerate(series.items()):
            ordered = [
                (x, intervals[r["name"]])
                for x, r in sorted(points, key=lambda p: p[0])
                if key in intervals[r["name"]]
            ]
            if not ordered:
                continue
            xs, c = [x for x, _ in ordered], f"C{colour}"
            ax.plot(xs, [i[key].value for _, i in ordered], marker="o", color=c, label=name)
            lows, highs = [i[key].low for _, i in ordered], [i[key].high for _, i in ordered]
            ax.fill_between(xs, lows, highs, color=c, alpha=0.2, lw=0)
            if key == "psnr_db":
                p10 = [i["psnr_p10"].value for _, i in ordered]
                ax.plot(xs, p10, ls=":", marker=".", color=c)
        if key == "psnr_db":
            ax.set_title("FP: identical images (infinite PSNR); dotted: p10 PSNR", fontsize=8)
        else:
            level = fp["ssim"] if key == "ssim" else fp["task"][key]
            ax.axhline(level, color="k", ls="--", lw=1, label="FP")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{title}; bands: 95 % bootstrap intervals over the seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_weights(path: Path, rows: list[dict], intervals: dict, tasks: tuple) -> None:
    series = {}
    for r in rows:
        if r["weight_bits"] is not None:
            label = r["name"].rsplit(" W", 1)[0]
            series.setdefault(label, []).append((r["weight_bits"], r))
    title = "quality vs weight bits (float activations)"
    _plot_frontier(path, rows, intervals, series, tasks, title, "weight bits")


def _plot_activations(path: Path, rows: list[dict], intervals: dict, tasks: tuple) -> None:
    series = {}
    for r in rows:
        if r["recipe"] is not None:
            label = f"{r['recipe']} {r['plan']}" + (
                RTN_SUFFIX if r["name"].endswith(RTN_SUFFIX) else ""
            )
            series.setdefault(label, []).append((r["act_bits_measured"], r))
    title = "quality vs average activation bits (the run's last method's weights, or RTN's)"
    _plot_frontier(path, rows, intervals, series, tasks, title, "average activation bits")
