"""`taq-bench`: performance benchmarks, each printed as ratios measured in the same run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

import mlx.core as mx

from taq_bench import blocks, realscale, scale
from taq_bench.adaround import SHAPES, bench_adaround, lines
from taq_bench.suite import bench_blas, bench_infer, bench_storage
from taq_runtime.blas import blas_info
from taq_runtime.cli import add_version_flag, run_cli


def _adaround(args: argparse.Namespace) -> int:
    if min(args.batch or 1, args.iters or 1) < 1 or args.micro_batch < 0:
        raise scale.ScaleError("--batch and --iters must be at least 1, --micro-batch at least 0")
    results = bench_adaround(args.shapes.split(","), args.batch, args.iters, args.micro_batch)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(f"AdaRound train step on {mx.default_device()} ({blas_info().name} BLAS)")
        print("\n".join(lines(results)))
    return 0


def _blocks(args: argparse.Namespace) -> int:
    shapes = blocks.parse_shapes(args.shapes)
    blocks.check_image_tokens(args.image_tokens)
    if not args.json:
        print(
            f"taq-bench blocks on {mx.default_device()} ({blas_info().name} BLAS): random "
            "weights, batch 1, W4 = RTN group 64 with float16 scales, packed"
        )
    results = []
    if not args.json:
        print(blocks.header(), flush=True)
    for shape in shapes:
        results.append(blocks.bench_block(shape, args.image_tokens, args.seed))
        if not args.json:
            print(blocks.row(results[-1]), flush=True)
    projections = blocks.project_models(results) if args.image_tokens is None else []
    if args.json:
        payload = {
            "blocks": [r.as_dict() for r in results],
            "projection": [p.as_dict() for p in projections],
        }
        print(json.dumps(payload, indent=2))
    else:
        print("\n".join(blocks.projection_lines(projections)))
    return 0


def _scale(args: argparse.Namespace) -> int:
    if min(args.ranks, args.images, args.steps, args.iters) < 1 or args.ranks < 2:
        raise scale.ScaleError("--ranks must be at least 2, --images/--steps/--iters at least 1")
    result = scale.bench_scale(args.ranks, args.images, args.steps, args.iters)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0
    print(
        f"taq-bench scale: tiny-digits, 1 rank vs {args.ranks} ranks (taq launch, ring backend "
        f"over loopback) on {os.cpu_count()} CPU cores ({blas_info().threads} BLAS "
        f"thread(s) per rank); {args.images} images x {args.steps} steps; stage time = the "
        "slowest rank's"
    )
    print("\n".join(scale.lines(result)))
    return 0


def _realscale(args: argparse.Namespace) -> int:
    names = [f.name for f in fields(realscale.RealscaleConfig)]
    config = realscale.RealscaleConfig(**{name: getattr(args, name) for name in names})
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    log(
        f"taq-bench realscale: {config.model}, each stage its own process, on "
        f"{os.cpu_count()} CPU cores ({blas_info().name} BLAS, {mx.default_device()}); "
        f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} at the start: "
        "wall times follow the load, CPU time and peak RSS much less"
    )
    result = realscale.bench_realscale(config, log=log)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print("\n".join(realscale.lines(result)))
    log(f"results: {realscale.results_path(config)}")
    failed = [run for run in result.stages if run.outcome != "ok"]
    resumed_apart = result.resume is not None and not result.resume["equal"]
    return 1 if failed or resumed_apart else 0


def _blas(args: argparse.Namespace) -> int:
    return _show({"blas": bench_blas()}, args.json)


def _storage(args: argparse.Namespace) -> int:
    return _show({"storage": bench_storage()}, args.json)


def _all(args: argparse.Namespace) -> int:
    ada = bench_adaround(["tiny-digits"])[0]
    results = {
        "blas": bench_blas(),
        "storage": bench_storage(),
        "adaround": ada.as_dict(),
        "infer": bench_infer(),
    }
    return _show(results, args.json)


def _show(results: dict, as_json: bool) -> int:
    if as_json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'benchmark':<34}{'ours':>14}{'baseline':>14}{'ratio':>9}")
    if "blas" in results:
        b = results["blas"]
        print(
            f"{'fp32 GEMM GFLOP/s (' + b['blas'] + ' vs reference)':<34}"
            f"{b['optimised_gflops']:>14.1f}{b['reference_gflops']:>14.1f}{b['ratio']:>8.1f}x"
        )
    if "storage" in results:
        s = results["storage"]
        print(
            f"{'calib bytes/sample (zarr vs npz)':<34}{s['zarr_bytes_per_sample']:>14.0f}"
            f"{s['npz_bytes_per_sample']:>14.0f}{s['ratio']:>8.2f}x"
        )
        print(
            f"{'calib files (zarr vs npz)':<34}{s['zarr_files']:>14}{s['npz_files']:>14}"
            f"{s['zarr_files'] / s['npz_files']:>8.2f}x"
        )
        c = s["cache"]
        print(
            f"{'cache bytes/sample (zarr vs npz)':<34}{c['zarr_bytes_per_sample']:>14.0f}"
            f"{c['npz_bytes_per_sample']:>14.0f}{c['ratio']:>8.2f}x"
        )
    if "adaround" in results:
        a = results["adaround"]
        print(
            f"{'AdaRound it/s tiny (compiled/eager)':<34}{a['compiled_its']:>14.2f}"
            f"{a['eager_its']:>14.2f}{a['ratio']:>8.2f}x"
        )
        print(
            f"{'AdaRound step CPU ms vs fwd+bwd':<34}{a['step_cpu_ms']:>14.1f}"
            f"{a['plain_cpu_ms']:>14.1f}{a['cpu_ratio']:>8.2f}x"
        )
    if "infer" in results:
        i = results["infer"]
        print(
            f"{'tiny sampling s (W4 vs FP32)':<34}{i['w4_seconds']:>14.2f}"
            f"{i['fp32_seconds']:>14.2f}{i['speed_ratio']:>8.2f}x  (FP32 time / W4 time)"
        )
        print(
            f"{'quantized layers bytes (W4/fp16)':<34}{i['layers_w4_bytes']:>14}"
            f"{i['layers_fp16_bytes']:>14}{i['layers_ratio']:>8.2f}x"
        )
        print(
            f"{'whole MMDiT bytes (W4/fp16)':<34}{i['model_w4_bytes']:>14}"
            f"{i['model_fp16_bytes']:>14}{i['model_ratio']:>8.2f}x"
        )
    return 0


REALSCALE_HELP = {
    "model": "model preset (any taq-calib accepts)",
    "height": "sd3-medium presets: image pixels, a multiple of 16",
    "width": "sd3-medium presets: image pixels, a multiple of 16",
    "num_images": "calibration images",
    "num_steps": "sampling steps of calibration and evaluation",
    "cache_stride": "block I/O of every k-th calibration step",
    "iters": "AdaRound iterations per block",
    "batch_size": "AdaRound batch size (at most the cached samples are used)",
    "eval_samples": "evaluation samples per variant",
    "workdir": "directory of the run (replaced): run.zarr, its report, the checkpoint",
    "max_rss_gb": "kill a stage whose resident memory passes this (GiB)",
    "kill_resume": "then kill optimize once mid-way on a copy, resume it, compare the weights",
    "resume": "continue a stopped run in --workdir: keep the stages it measured",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taq-bench", description=__doc__)
    add_version_flag(parser, "taq-bench")
    sub = parser.add_subparsers(dest="command", required=True)
    ada = sub.add_parser(
        "adaround", help="train-step throughput (compiled vs eager) and CPU vs a plain fwd+bwd"
    )
    ada.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    ada.add_argument(
        "--batch", type=int, default=None, help="samples per step (default: the shape's)"
    )
    ada.add_argument("--iters", type=int, default=None, help="timed steps (default: the shape's)")
    ada.add_argument(
        "--micro-batch",
        type=int,
        default=0,
        help="AdaRound's --micro-batch: samples per pass, gradients summed (0: whole batch)",
    )
    ada.add_argument("--json", action="store_true")
    ada.set_defaults(func=_adaround)
    blk = sub.add_parser("blocks", help="one real block per model: W4 vs FP32 time and bytes")
    blk.add_argument(
        "--shapes", default=",".join(blocks.SHAPES), help=f"of {', '.join(blocks.SHAPES)}"
    )
    blk.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="a square, for a quick run (default: each shape's real count; no projection)",
    )
    blk.add_argument("--seed", type=int, default=0)
    blk.add_argument("--json", action="store_true")
    blk.set_defaults(func=_blocks)
    sca = sub.add_parser("scale", help="1 rank vs N ranks: calib images/s, optimize wall time")
    sca.add_argument("--ranks", type=int, default=2, help="local ranks to compare with one")
    sca.add_argument("--images", type=int, default=8, help="calibration images")
    sca.add_argument("--steps", type=int, default=10, help="sampling steps per image")
    sca.add_argument("--iters", type=int, default=100, help="AdaRound iterations per block")
    sca.add_argument("--json", action="store_true")
    sca.set_defaults(func=_scale)
    real = sub.add_parser(
        "realscale", help="every stage of taq run, each its own process: time, CPU, memory, bytes"
    )
    defaults = realscale.RealscaleConfig()
    for item in fields(realscale.RealscaleConfig):
        flag, default = f"--{item.name.replace('_', '-')}", getattr(defaults, item.name)
        if isinstance(default, bool):
            real.add_argument(flag, action="store_true", help=REALSCALE_HELP[item.name])
            continue
        kind = {"int | None": int}.get(str(item.type), type(default))
        real.add_argument(
            flag, type=kind, default=default, help=f"{REALSCALE_HELP[item.name]} [{default}]"
        )
    real.add_argument("--json", action="store_true")
    real.set_defaults(func=_realscale)
    sub.add_parser("infer", help="W4 vs FP32 sampling time and memory (see its --help)")
    for name, func, text in (
        ("blas", _blas, "optimised vs reference BLAS GEMM rate"),
        ("storage", _storage, "calib bytes per sample: zarr vs one npz per (image, step)"),
        ("all", _all, "every benchmark in one table of ratios (infer: tiny-digits)"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["infer"]:
        from taq_infer.bench import main as infer_main

        return infer_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run_cli(
        lambda: args.func(args),
        user_errors=(blocks.BlocksError, scale.ScaleError, realscale.RealscaleError),
    )


if __name__ == "__main__":
    sys.exit(main())
