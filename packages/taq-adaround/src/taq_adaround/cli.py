"""`taq-adaround`: cache block I/O (`cache`) and learn AdaRound W4 rounding (`optimize`)."""

from __future__ import annotations

import argparse
import sys
import time

from taq_adaround.blockio import CacheConfig, DataError, cache_block_io
from taq_adaround.optimize import METHODS, optimize_blocks
from taq_adaround.reconstruct import AdaRoundConfig
from taq_io import StoreError
from taq_model.taxonomy import block_names
from taq_run import writers
from taq_run.runs import open_run
from taq_runtime import ranks
from taq_runtime.cli import UsageError, command_parser, config_from_flags, run_cli


def _blocks(text: str | None) -> tuple[str, ...] | None:
    """`--blocks mm0,mm1`; a block named twice is refused (it would be hooked twice)."""
    blocks = tuple(b.strip() for b in text.split(",") if b.strip()) if text else None
    twice = sorted({b for b in blocks or () if blocks.count(b) > 1})
    if twice:
        raise UsageError(f"--blocks names {', '.join(twice)} more than once: name each block once")
    return blocks


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", required=True, help="the run's zarr store (a path or s3:// URL)")
    p.add_argument("--blocks", default=None, help="comma-separated, e.g. mm0,mm1 (default: all)")
    p.add_argument(
        "--local-ckpt",
        default=None,
        help="MLX checkpoint of sd3-medium, sd3.5-large or flux-schnell",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace existing groups")


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("taq-adaround", "taq-adaround", __doc__)
    cache = sub.add_parser("cache", help="record every block's FP inputs/outputs")
    _common(cache)
    cache.add_argument("--num-images", type=int, default=None, help="default: all calib images")
    cache.add_argument("--stride", type=int, default=1, help="every k-th stored calib step")
    opt = sub.add_parser("optimize", help="learn W4 rounding block by block (+ RTN baseline)")
    _common(opt)
    defaults = AdaRoundConfig()
    opt.add_argument("--iters", type=int, default=defaults.iters)
    opt.add_argument("--batch-size", type=int, default=defaults.batch_size)
    opt.add_argument("--bits-w", type=int, default=defaults.bits_w)
    opt.add_argument("--bits-a", type=int, default=defaults.bits_a, help="0: no act. quant")
    opt.add_argument("--group-size", type=int, default=defaults.group_size)
    opt.add_argument("--scale-method", choices=("minmax", "mse"), default=defaults.scale_method)
    opt.add_argument("--lr", type=float, default=defaults.lr)
    opt.add_argument("--lr-act", type=float, default=defaults.lr_act)
    opt.add_argument("--reg-weight", type=float, default=defaults.reg_weight)
    opt.add_argument(
        "--bias-correction",
        action="store_true",
        help="Adam with bias correction (PyTorch's default, the reference's); MLX's is off",
    )
    opt.add_argument("--seed", type=int, default=defaults.seed)
    opt.add_argument("--no-compile", action="store_true", help="run the train step eagerly")
    return parser


def _config(args: argparse.Namespace) -> CacheConfig | AdaRoundConfig:
    """The command's config, built (and so checked) before the store is opened."""
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: pick one")
    _blocks(args.blocks)  # both commands' --blocks, checked before the store is opened
    try:
        if args.command == "cache":
            return CacheConfig(args.num_images, args.stride, _blocks(args.blocks))
        return config_from_flags(AdaRoundConfig, args)
    except ValueError as err:
        raise UsageError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    store, handle = open_run(args.store, local_ckpt=args.local_ckpt)
    kind = "blockio" if args.command == "cache" else "weights"

    names = block_names(handle.mmdit) if kind == "blockio" else METHODS
    ranks.on_rank0(  # before any rank writes: every rank refuses alike
        lambda: writers.refuse_existing(
            store, args.store, kind, names, resume=args.resume, overwrite=args.overwrite
        )
    )
    start = time.perf_counter()
    try:
        if args.command == "cache":
            groups = cache_block_io(handle, store, config, overwrite=args.overwrite)
            samples = next(iter(groups.values())).total_units
            print(
                f"{ranks.tag()}blockio: {len(groups)} block(s) x {samples} samples in "
                f"{time.perf_counter() - start:.1f}s -> {args.store}/blockio"
            )
            return 0
        result = optimize_blocks(
            handle,
            store,
            config,
            list(_blocks(args.blocks) or []) or None,
            overwrite=args.overwrite,
            compile_step=not args.no_compile,
        )
    except DataError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    print_summary(result.rows)
    print(
        f"{ranks.tag()}weights: W{args.bits_w} (group {args.group_size}) -> "
        f"{args.store}/weights/adaround, {args.store}/weights/rtn in "
        f"{time.perf_counter() - start:.1f}s"
    )
    return 0


def print_summary(rows: list[dict]) -> None:
    if not rows:
        print(f"{ranks.tag()}every block was already optimised (nothing to do)")
        return
    print(f"{ranks.tag()}{'block':<8}{'RTN MSE':>12}{'AdaRound MSE':>14}{'ratio':>8}{'time':>9}")
    for row in rows:
        print(
            f"{ranks.tag()}{row['block']:<8}{row['rtn_mse']:>12.4g}{row['adaround_mse']:>14.4g}"
            f"{row['ratio']:>8.3f}{row['seconds']:>8.1f}s"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
