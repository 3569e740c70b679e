"""`taq-actstats`: collect activation statistics, analyze them into quant_config, plot."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

from taq_actstats.analyze import analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_actstats.plots import plot_all, plot_data, select_layers
from taq_io import Store, StoreError, local_parent
from taq_run import writers
from taq_run.quant_config import (
    PLANS,
    RANGE_METHODS,
    RECIPE_DEFAULTS,
    RECIPES,
    RULES,
    AnalyzeConfig,
    TierRule,
    analyze_config,
    read_quant_plan,
    require_quant_config,
)
from taq_run.runs import open_run
from taq_runtime import ranks
from taq_runtime.cli import UsageError, command_parser, run_cli, writable_dir


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("taq-actstats", "taq-actstats", __doc__)
    collect = sub.add_parser("collect", help="per layer x timestep x channel statistics")
    collect.add_argument("--store", required=True, help="a path or s3:// URL")
    collect.add_argument("--num-images", type=int, default=None)
    collect.add_argument("--stride", type=int, default=1)
    collect.add_argument("--layers", default=None, help="glob(s), e.g. 'mm*.image.mlp.fc2'")
    collect.add_argument("--local-ckpt", default=None)
    collect.add_argument("--resume", action="store_true")
    collect.add_argument("--overwrite", action="store_true")
    analyze = sub.add_parser("analyze", help="statistics -> quant_config (A4/A6/A8 tiers)")
    analyze.add_argument("--store", required=True, help="a path or s3:// URL")
    analyze.add_argument("--local-ckpt", default=None)
    analyze.add_argument(
        "--recipe",
        choices=RECIPES,
        default="taq",
        help="taq (ours) or taq-dit (the paper's); names the defaults of the flags below",
    )
    defaults = AnalyzeConfig.for_recipe("taq")
    taq = {**asdict(defaults), **defaults.rule.to_json()}

    def recipe_default(name: str) -> str:
        paper = RECIPE_DEFAULTS["taq-dit"].get(name, taq[name])
        return f"default {taq[name]}" + ("" if paper == taq[name] else f"; taq-dit: {paper}")

    analyze.add_argument("--rule", choices=RULES, default=None, help=recipe_default("rule"))
    for name in TierRule().to_json():
        if name != "rule":
            flag = f"--{name.replace('_', '-')}"
            analyze.add_argument(flag, type=float, default=None, help=recipe_default(name))
    analyze.add_argument(
        "--range-method",
        choices=RANGE_METHODS,
        default=None,
        help="max: grids over --range-margin x the maximum; mse: per tier, the clip with the "
        f"least estimated error on the calibration activations ({recipe_default('range_method')})",
    )
    for name, meaning in (
        ("range_margin", "grid range = margin x the range statistic"),
        ("smooth_alpha", "SmoothQuant's migration strength"),
        ("smooth_max_outliers", "SmoothQuant candidates: share of outlier channels"),
        ("smooth_min_spike", "SmoothQuant candidates: max / median channel peak"),
    ):
        flag = f"--{name.replace('_', '-')}"
        help_text = f"{meaning} ({recipe_default(name)})"
        analyze.add_argument(flag, type=float, default=None, help=help_text)
    analyze.add_argument(
        "--bits-w", type=int, default=defaults.bits_w, help="weight bits (SmoothQuant's cost)"
    )
    analyze.add_argument("--group-size", type=int, default=defaults.group_size)
    analyze.add_argument(
        "--no-static-cap",
        action="store_true",
        help="do not cap each step's grid at AdaRound's learned static range",
    )
    analyze.add_argument(
        "--no-gelu-shift",
        action="store_true",
        help="quantize post-GELU (fc2) inputs without the momentum shift",
    )
    analyze.add_argument(
        "--avg-bits",
        type=float,
        default=None,
        help="tiers by an average-bit budget (4..8) maximising the estimated SQNR, not the rule",
    )
    analyze.add_argument(
        "--plan",
        choices=PLANS,
        default=defaults.plan,
        help="static: one grid and bit width per layer for all steps (needs --avg-bits)",
    )
    analyze.add_argument("--overwrite", action="store_true")
    plot = sub.add_parser("plot", help="PNG plots of the statistics")
    plot.add_argument("--store", required=True, help="a path or s3:// URL")
    plot.add_argument("--out", type=Path, default=None, help="default: STORE/../plots")
    plot.add_argument("--quant-config", action="store_true", help="overlay the tiers")
    plot.add_argument(
        "--snapshot-steps",
        default=None,
        help="comma-separated step indices for the snapshot plot (default: the middle step)",
    )
    plot.add_argument(
        "--plot-distributions",
        action="store_true",
        help="also per-channel ranges and histograms (reads the per-channel arrays: slower)",
    )
    plot.add_argument(
        "--layers",
        default=None,
        help="glob(s) of the layers whose distributions to plot (default: the widest and the "
        "first fc2)",
    )
    return parser


def _collect(args) -> int:
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: pick one")
    try:
        config = CollectConfig(args.num_images, args.stride, args.layers)
    except ValueError as err:
        raise UsageError(str(err)) from None
    store, handle = open_run(args.store, local_ckpt=args.local_ckpt)

    ranks.on_rank0(  # before any rank writes: every rank refuses alike
        lambda: writers.refuse_existing(
            store, args.store, "actstats", resume=args.resume, overwrite=args.overwrite
        )
    )
    start = time.perf_counter()
    try:
        group = collect_stats(handle, store, config, overwrite=args.overwrite)
    except ValueError as err:
        raise UsageError(str(err)) from None
    sizes = group.sizes
    print(
        f"{ranks.tag()}actstats: {sizes['image']} image(s) x {sizes['step']} step(s) x "
        f"{sizes['layer']} layers in {time.perf_counter() - start:.1f}s -> {args.store}/actstats"
    )
    return 0


def _analyze(args) -> int:
    try:
        config = analyze_config(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    store, handle = open_run(args.store, local_ckpt=args.local_ckpt)
    # one pass over every image's statistics, in image order: rank 0's alone
    analysis = ranks.on_rank0(lambda: analyze_stats(handle, store, config, args.overwrite))
    if analysis is None:
        return 0
    print("\n".join(analysis.summary))
    print(f"quant_config -> {args.store}/quant_config (activation quantization is simulated)")
    return 0


def _plot(args) -> int:
    try:
        steps = [int(v) for v in args.snapshot_steps.split(",")] if args.snapshot_steps else None
    except ValueError:
        raise UsageError(
            f"--snapshot-steps {args.snapshot_steps!r} is not a list of step indices: e.g. 0,3,5"
        ) from None
    if args.layers and not args.plot_distributions:
        raise UsageError("--layers chooses distribution plots: add --plot-distributions")
    store = Store.open(args.store)
    out = writable_dir(args.out or local_parent(args.store) / "plots", "--out")
    data = plot_data(store, distributions=args.plot_distributions)
    plan = None
    if args.quant_config:
        plan = read_quant_plan(require_quant_config(store))
    try:
        layers = select_layers(data["names"], args.layers)
        paths = plot_all(data, out, plan, steps, layers, args.plot_distributions)
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {len(paths)} plots to {out}: " + ", ".join(p.name for p in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"collect": _collect, "analyze": _analyze, "plot": _plot}
    return run_cli(lambda: handlers[args.command](args), user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
