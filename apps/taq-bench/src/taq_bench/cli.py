"""`taq-bench`: performance benchmarks, each printed as ratios measured in the same run."""

from __future__ import annotations

import argparse
import json
import sys

from taq_model.blas import blas_info
from taq_model.cli_support import run_cli

import mlx.core as mx

from taq_bench.adaround import SHAPES, bench_adaround, lines


def _adaround(args: argparse.Namespace) -> int:
    results = bench_adaround(args.shapes.split(","))
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(f"AdaRound train step on {mx.default_device()} ({blas_info().name} BLAS)")
        print("\n".join(lines(results)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taq-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    ada = sub.add_parser("adaround", help="train-step throughput, compiled vs eager")
    ada.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    ada.add_argument("--json", action="store_true")
    ada.set_defaults(func=_adaround)
    sub.add_parser("infer", help="W4 vs FP32 sampling time and memory (see its --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["infer"]:
        from taq_infer.bench import main as infer_main

        return infer_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
