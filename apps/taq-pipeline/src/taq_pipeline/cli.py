"""`taq`: run the whole pipeline (`run`), evaluate + report (`eval`), check things (`doctor`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

from taq_model.cli_support import UsageError, run_cli
from taq_model.doctor import environment_report
from taq_model.presets import load_preset

from taq_io import Store, StoreError, describe
from taq_pipeline.evaluate import evaluate
from taq_pipeline.pipeline import RunConfig, report_dir, run_stages
from taq_pipeline.report import write_report


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    for item in fields(RunConfig):
        default = item.default
        kind = {"int | None": int, "float | None": float}.get(str(item.type), type(default))
        parser.add_argument(f"--{item.name.replace('_', '-')}", type=kind, default=default)


def _config(args: argparse.Namespace) -> RunConfig:
    config = RunConfig(**{f.name: getattr(args, f.name) for f in fields(RunConfig)})
    for name in ("num_images", "iters", "batch_size", "eval_samples", "cache_stride"):
        if getattr(config, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if config.num_steps is not None and config.num_steps < 1:
        raise UsageError("--num-steps must be at least 1")
    return config


def _evaluate_and_report(config: RunConfig, store: Store, timings) -> Path:
    handle = load_preset(config.model)
    out = report_dir(config.store)
    previous = out / "report.json"
    if previous.exists() and json.loads(previous.read_text()).get("config") == config.to_json():
        print(f"report is up to date: {out / 'report.md'}")
        return out / "report.md"
    steps = config.num_steps or handle.default_steps
    cfg = handle.default_cfg if config.cfg is None else config.cfg
    print("== evaluate (packed W4 weights are real; activation quantization is simulated)")
    start = time.perf_counter()
    results = evaluate(store, config.model, config.eval_samples, steps, cfg, config.seed)
    timings.append(type(timings[0])("evaluate", time.perf_counter() - start, False))
    return write_report(store, out, results, timings, config.to_json())


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    start = time.perf_counter()
    store, timings = run_stages(config)
    report = _evaluate_and_report(config, store, timings)
    print(
        f"taq run finished in {time.perf_counter() - start:.0f}s: store {config.store}, "
        f"report {report}"
    )
    return 0


def _doctor(args: argparse.Namespace) -> int:
    print("\n".join(line for line in environment_report().lines() if line))
    if args.store:
        if not Path(args.store).exists():
            raise UsageError(f"no store at {args.store}")
        print(describe(args.store))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="calib -> adaround + actstats -> evaluation -> report")
    _add_run_flags(run)
    run.set_defaults(func=_run)
    doctor = sub.add_parser("doctor", help="device, BLAS, versions, store health")
    doctor.add_argument("--store", default=None)
    doctor.set_defaults(func=_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args), user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
