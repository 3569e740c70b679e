"""`taq`: the whole pipeline (`run`), evaluation (`eval`), the report (`report`), `export`
(one safetensors checkpoint of the quantized model), `doctor`, `launch` (N local ranks of a
command: `taq_runtime.spawn`).

`taq run` = calib -> block I/O cache -> each weight method (`--weights`; every installed one
by default) -> actstats (collect, analyze) -> eval -> report, into one store; complete stages
are skipped, partial ones resumed, stale ones refused.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

from taq_infer import InferenceError
from taq_infer.artifacts import DEFAULT_WEIGHTS
from taq_infer.checkpoint import ExportConfig, export_checkpoint
from taq_infer.loading import SCALE_DTYPES
from taq_io import Store, StoreError, describe, is_url
from taq_io.integrity import verify_group
from taq_pipeline.evaluate import (
    EvalConfig,
    evaluate,
    evaluation_plan,
    load_eval,
    read_results,
)
from taq_pipeline.groups import identity
from taq_pipeline.intervals import Interval, evaluation_intervals
from taq_pipeline.pipeline import RunConfig, report_dir, run_stages
from taq_pipeline.report import NOTE, write_report
from taq_pipeline.seeds import SPLITS, check_eval_samples, seed_split
from taq_pipeline.sweep import VARIED, SweepConfig, run_sweep, sweep_dir
from taq_run.calib import calib_config_of, require_calib
from taq_run.quant_config import (
    RECIPE_DEFAULTS,
    RECIPES,
    analyze_config_of,
    require_quant_config,
)
from taq_run.runs import open_run
from taq_run.weight_methods import weight_methods
from taq_runtime import ranks, spawn
from taq_runtime.cli import (
    UsageError,
    add_config_flags,
    command_parser,
    config_from_flags,
    run_cli,
    writable_dir,
)
from taq_runtime.doctor import environment_report

EVAL_FILE = "eval.json"
HELP = {
    "store": "the run's zarr store (created if absent)",
    "model": "model preset: tiny-digits, sd3-medium-random or sd3-medium",
    "local_ckpt": "sd3-medium: DiffusionKit MLX checkpoint (.safetensors) on disk",
    "t5": "sd3-medium: T5-XXL conditioning from the local Hugging Face cache (else zeros)",
    "height": "sd3-medium presets: image height in pixels, a multiple of 16 (None: 512)",
    "width": "sd3-medium presets: image width in pixels, a multiple of 16 (None: 512)",
    "prompts": "text file, one prompt a line (default: the preset's prompts)",
    "num_images": "calibration images (trajectories)",
    "num_steps": "Euler steps of calibration and evaluation (default: the preset's)",
    "cfg": "classifier-free guidance scale (default: the preset's)",
    "cache_stride": "block I/O cache of the weight methods: every k-th calibration step",
    "weights": "comma-separated weight methods to run, e.g. rtn,gptq,adaround (default: "
    "every installed one)",
    "recipe": "activation recipe: taq (ours) or taq-dit (the paper's); names the defaults "
    "of --rule, --range-method, --range-margin and --static-cap",
    "rule": "activation tier rule: sqnr (scale-free) or absolute (TaQ-DiT's thresholds)",
    "target_db": "sqnr rule: fewest bits keeping the estimated quantization SNR >= this",
    "gelu_a4": "absolute rule: post-GELU (fc2) input absmax below this -> A4",
    "gelu_a6": "absolute rule: post-GELU input absmax below this -> A6, else A8",
    "other_a4": "absolute rule: other layers' input absmax below this -> A4",
    "other_a6": "absolute rule: other layers' input absmax below this -> A6, else A8",
    "range_method": "activation ranges: max (--range-margin x the calibration maximum) or "
    "mse (per tier, the clip with the least estimated error on the calibration activations)",
    "range_margin": "activation grids cover this x the calibration maximum (>= 1)",
    "smooth_alpha": "SmoothQuant migration strength (0..1)",
    "gelu_shift": "shift post-GELU (fc2) inputs by their momentum midpoint before rounding",
    "static_cap": "cap each step's activation grid at AdaRound's learned static range",
    "avg_bits": "activation tiers by an average-bit budget (4..8) maximising the estimated "
    "SQNR, instead of the tier rule",
    "plan": "with --avg-bits: time-aware (tiers per layer and step) or static (one per layer)",
    "eval_samples": "evaluation samples per variant (fixed prompts and seeds)",
    "eval_split": "evaluation seeds: heldout (no default was tuned on them) or tuning",
    "seed": "seed of calibration, the weight methods and evaluation",
    "overwrite": "recompute stale stages (changed flags or inputs) instead of refusing",
}


def _default(name: str, default: object) -> str:
    """A flag's default for its help; a recipe's (`RECIPE_DEFAULTS`) where it names it."""
    if name not in RECIPE_DEFAULTS["taq"]:
        return f"{default}"
    return "; ".join(f"{recipe}: {RECIPE_DEFAULTS[recipe][name]}" for recipe in RECIPES)


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    for item in fields(RunConfig):
        if item.name == "method_flags":  # the weight methods' own flags, below
            continue
        flag, text = f"--{item.name.replace('_', '-')}", HELP[item.name]
        text = f"{text} [{_default(item.name, item.default)}]"
        if item.type in ("bool", "bool | None"):
            toggle = argparse.BooleanOptionalAction
            parser.add_argument(flag, action=toggle, default=item.default, help=text)
            continue
        kind = {"int | None": int, "float | None": float, "str | None": str}.get(
            str(item.type), type(item.default)
        )
        parser.add_argument(flag, type=kind, default=item.default, help=text)
    methods = [m.config for m in weight_methods().values()]
    parser.set_defaults(method_flags=add_config_flags(parser, methods, skip=("seed",)))


def given_flags(args: argparse.Namespace) -> dict:
    """The weight methods' flags given on the command line (field -> value)."""
    return {n: getattr(args, n) for n in args.method_flags if getattr(args, n) is not None}


def _config(args: argparse.Namespace) -> RunConfig:
    try:
        config = config_from_flags(RunConfig, args, method_flags=given_flags(args))
        config.validate()  # every stage's flags, before the first stage starts
        seed_split(config.seed, config.num_images, config.eval_split, config.eval_samples)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return config


def _eval_config(store: Store, samples: int, split: str, local_ckpt: str | None) -> EvalConfig:
    calib = calib_config_of(require_calib(store))  # evaluate on the calibrated schedule
    return EvalConfig(
        store.model.preset,
        samples,
        calib.num_steps,
        calib.cfg,
        calib.seed,
        calib.num_images,
        split,
        local_ckpt,
    )


def _writable_outputs(folder: Path) -> Path:
    """`folder` (the report or sweep folder beside a store), checked writable before any
    work: a read-only store directory is refused in one line, as the stage commands do."""
    try:
        return writable_dir(folder, "the output folder")
    except UsageError as err:
        raise UsageError(
            f"{err.args[0].split(':')[0]}: taq writes its results beside the store; make that "
            "directory writable, or copy the store where you can write"
        ) from None


def _evaluate_and_report(store: Store, config: EvalConfig, run_config: dict, log=print) -> Path:
    out = report_dir(store.path)
    print("== evaluate (packed W4 weights are real; activation quantization is simulated)")
    before = load_eval(out / EVAL_FILE)
    results = evaluate(store, config, out / EVAL_FILE, log=log)
    record = load_eval(out / EVAL_FILE)
    previous = out / "report.json"
    if before == record and previous.exists():
        report = json.loads(previous.read_text())
        same = report.get("eval", {}).get("inputs") == record["inputs"]
        if same and report.get("eval", {}).get("config_hash") == record["config_hash"]:
            print("== report: up to date, skipped")
            return out / "report.md"
    print("== report")
    return write_report(store, out, results, record, run_config)


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    _writable_outputs(report_dir(config.store))
    start = time.perf_counter()
    store, handle, timings = run_stages(config, log=lambda line: print(ranks.tag() + line))
    if ranks.rank() > 0:  # rank 0 alone evaluates and reports
        return 0
    eval_config = _eval_config(store, config.eval_samples, config.eval_split, config.local_ckpt)
    report = _evaluate_and_report(store, eval_config, config.to_json())
    print(f"\ntaq run finished in {time.perf_counter() - start:.0f}s")
    plan = analyze_config_of(require_quant_config(store)).describe()
    print(f"activations (simulated fake-quant): {plan}")
    print(f"{'stage':<20}{'how':<18}{'seconds':>8}  written to {config.store}")
    for t in timings:
        print(f"{t.name:<20}{t.outcome:<18}{t.seconds:>8.1f}  {', '.join(t.groups)}")
    if is_url(config.store):
        print("(the store is on object storage: evaluation and report are local files)")
    print(f"evaluation: {report.parent / EVAL_FILE}")
    print(f"report: {report} (+ report.json, samples.png, block_mse.png, quality_vs_bits.png)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    try:
        check_eval_samples(args.eval_samples)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.split not in SPLITS:
        raise UsageError(f"--split {args.split!r} is unknown: pick one of {', '.join(SPLITS)}")
    store, _ = open_run(args.store, mode="r", local_ckpt=args.local_ckpt)
    _writable_outputs(report_dir(store.path))
    config = _eval_config(store, args.eval_samples, args.split, args.local_ckpt)
    results = evaluate(store, config, report_dir(store.path) / EVAL_FILE)
    record = load_eval(report_dir(store.path) / EVAL_FILE)
    stats = evaluation_intervals(results, evaluation_plan(store).claims)
    print(NOTE)
    seeds = record["seeds"]
    print(
        f"{seeds['split']} seeds {seeds['evaluation']} (calibration {seeds['calibration']}); "
        f"mean [95 % interval], {stats['method']}"
    )
    for r in results:
        row = stats["variants"][r.name]
        psnr = Interval(**row["psnr_db"]).describe() if "psnr_db" in row else "inf"
        accuracy = Interval(**row["accuracy"]).describe(".3f") if "accuracy" in row else "-"
        print(f"{r.name:<36} PSNR {psnr} dB  accuracy {accuracy}")
    for comparison in stats["comparisons"]:
        print(comparison["text"])
    print(f"evaluation: {report_dir(store.path) / EVAL_FILE}")
    return 0


def _report(args: argparse.Namespace) -> int:
    store = Store.open(args.store, mode="r")
    out = _writable_outputs(report_dir(store.path))
    results = read_results(out / EVAL_FILE)
    if results is None:
        raise UsageError(f"no finished evaluation in {out}: run `taq eval --store {args.store}`")
    record = load_eval(out / EVAL_FILE)
    identities = {}
    for path in record["inputs"]:
        identities[path] = identity(store, path)
    if identities != record["inputs"]:
        raise UsageError(
            f"{out / EVAL_FILE} was made from other artifacts than {args.store} holds now: "
            f"run `taq eval --store {args.store}`"
        )
    previous = out / "report.json"
    config = json.loads(previous.read_text())["config"] if previous.exists() else {"seed": 0}
    print(f"report: {write_report(store, out, results, record, config)}")
    return 0


def store_health(path: str, verify: bool = False) -> list[str]:
    """Each group complete / partial / stale (through the whole chain of inputs), plus the
    evaluation and report files; with `verify`, every chunk read and each bad one listed."""
    status = describe(path)
    store = Store.open(path, mode="r")
    lines = [f"{status.path}: schema {status.schema_version}, model {status.model}"]
    bad = 0
    for group in status.groups:
        lines.append(f"  {group}")  # its state from `Store.state`, as every stage decides it
        if verify:
            kind, _, name = group.path.partition("/")
            problems = verify_group(store.state(kind, name or None).group)
            bad += len(problems)
            lines += [f"    BAD: {problem}" for problem in problems]
    if not status.groups:
        lines.append("  no groups yet: run `taq run`")
    if verify:
        lines.append(f"  verify: {bad} bad chunk(s)" if bad else "  verify: every chunk reads")
    out = report_dir(path)
    record = load_eval(out / EVAL_FILE)
    done = len(record["variants"]) if record else 0
    total = len(record.get("variant_names", [])) if record else "?"
    lines.append(f"  eval: {done}/{total} variants in {out / EVAL_FILE}")
    report = out / "report.md"
    lines.append(f"  report: {report if report.exists() else 'not written yet'}")
    return lines


def _doctor(args: argparse.Namespace) -> int:
    if args.verify and not args.store:
        raise UsageError("--verify checks a store: pass --store PATH")
    print("\n".join(line for line in environment_report().lines() if line))
    if args.store:
        if not is_url(args.store) and not Path(args.store).exists():
            raise UsageError(f"no store at {args.store}")
        lines = store_health(args.store, verify=args.verify)
        print("\n".join(lines))
        if args.verify and not lines[-3].endswith("every chunk reads"):
            return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    writable_dir(Path(args.output).parent, "--output's directory")
    config = config_from_flags(ExportConfig, args)
    summary = export_checkpoint(config)
    print(
        f"wrote {summary.output}: {summary.nbytes} bytes, {100 * summary.ratio:.1f} % of the "
        f"float16 MMDiT ({summary.float16_nbytes} bytes); {summary.quantized_layers} layers "
        f"W{summary.bits} ({config.weights}), "
        f"{summary.modulation_layers} adaLN linears "
        + (f"W{config.modulation_bits} RTN" if config.modulation_bits else "float")
        + f", other parameters {config.dtype}"
    )
    if summary.plan is not None:
        print(f"wrote {summary.plan}: the activation plan, {summary.plan_nbytes} bytes")
    else:
        print("no activation plan (no quant_config in the store): weight-only or static only")
    print(f"same model from the store: taq-infer --store {args.store} {config.store_flags()}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    def items(flag: str, kind):
        text = getattr(args, flag)
        if text.strip() == "none":  # --weight-bits none: the activation points only
            return ()
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise UsageError(
                f"--{flag.replace('_', '-')} {text!r} is not a comma-separated list"
            ) from None

    try:
        config = SweepConfig(
            items("weight_bits", int),
            items("avg_bits", float),
            items("plans", str.strip),
            items("recipes", str.strip),
            args.eval_samples,
            args.split,
            given_flags(args),
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    _writable_outputs(sweep_dir(args.store))
    start = time.perf_counter()
    print(f"== sweep into {sweep_dir(args.store)} (activation quantization is simulated)")
    run_sweep(args.store, config)
    out = sweep_dir(args.store)
    print(
        f"sweep: {time.perf_counter() - start:.1f}s -> {out / 'sweep.md'} (+ sweep.json, 2 plots)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("taq", "taq-pipeline", __doc__)
    run = sub.add_parser("run", help="calib -> weight methods + actstats -> evaluation -> report")
    _add_run_flags(run)
    run.set_defaults(func=_run)
    ev = sub.add_parser("eval", help="evaluate every variant of a finished store (eval.json)")
    ev.add_argument("--store", default=RunConfig.store)
    ev.add_argument("--eval-samples", type=int, default=RunConfig.eval_samples)
    ev.add_argument(
        "--split",
        default=RunConfig.eval_split,
        help="heldout: the report's seeds; tuning: the seeds defaults are chosen on",
    )
    ev.add_argument("--local-ckpt", default=None)
    ev.set_defaults(func=_eval)
    report = sub.add_parser("report", help="write report.md/json and plots from eval.json")
    report.add_argument("--store", default=RunConfig.store)
    report.set_defaults(func=_report)
    export = sub.add_parser(
        "export", help="one safetensors checkpoint of the quantized model (MLX QuantizedLinear)"
    )
    export.add_argument("--store", default=RunConfig.store)
    export.add_argument("--output", required=True, help="the .safetensors file to write")
    export.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help=f"the weight method to export, one of the store's: {', '.join(weight_methods())} "
        f"[{DEFAULT_WEIGHTS}]",
    )
    export.add_argument(
        "--dtype",
        default="float16",
        choices=tuple(SCALE_DTYPES),
        help="unquantized parameters and W4 scales/biases [float16]",
    )
    export.add_argument(
        "--modulation-bits",
        type=int,
        default=4,
        help="round the adaLN linears to nearest at these bits; 0 keeps them float [4]",
    )
    export.add_argument("--local-ckpt", default=None)
    export.add_argument(
        "--overwrite", action="store_true", help="replace an existing checkpoint and its sidecar"
    )
    export.set_defaults(func=_export)
    sweep = sub.add_parser("sweep", help="quality vs weight and activation bits (resumable)")
    sweep.add_argument("--store", default=RunConfig.store, help="a finished `taq run` store")
    defaults = SweepConfig()
    for name in ("weight_bits", "avg_bits", "plans", "recipes"):
        value = ",".join(
            f"{v:g}" if isinstance(v, float) else str(v) for v in getattr(defaults, name)
        )
        extra = "; none: no weight points" if name == "weight_bits" else ""
        sweep.add_argument(
            f"--{name.replace('_', '-')}", default=value, help=f"comma-separated{extra} [{value}]"
        )
    methods = [m.config for m in weight_methods().values()]
    flags = add_config_flags(sweep, methods, skip=VARIED)  # default: the run's recorded value
    sweep.set_defaults(method_flags=flags)
    sweep.add_argument("--eval-samples", type=int, default=defaults.eval_samples)
    sweep.add_argument("--split", default=defaults.split)
    sweep.set_defaults(func=_sweep)
    doctor = sub.add_parser("doctor", help="device, BLAS, versions, store health")
    doctor.add_argument("--store", default=None)
    doctor.add_argument(
        "--verify", action="store_true", help="read every chunk of the store, list bad ones"
    )
    doctor.set_defaults(func=_doctor)
    launch = sub.add_parser("launch", help="N local ranks of a taq command (MLX ring backend)")
    spawn.add_flags(launch)
    launch.set_defaults(func=lambda args: spawn.start(args.ranks, args.command))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args), user_errors=(StoreError, ValueError, InferenceError))
