"""`taq-adaround`: cache block I/O (`cache`), then quantize the weights with any installed
weight method (`rtn`, `gptq`, `adaround`, ...: `taq_run.weight_methods`), one subcommand each,
its flags generated from the method's config."""

from __future__ import annotations

import argparse
import sys
import time

from taq_adaround.blockio import CacheConfig, DataError, cache_block_io
from taq_adaround.optimize import quantize_blocks
from taq_io import StoreError
from taq_model.taxonomy import block_names
from taq_run import writers
from taq_run.runs import open_run
from taq_run.weight_methods import WeightMethod, weight_methods
from taq_run.weights import GridConfig
from taq_runtime import ranks
from taq_runtime.cli import (
    UsageError,
    add_config_flags,
    command_parser,
    config_from_flags,
    run_cli,
)


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
    for method in weight_methods().values():
        stage = sub.add_parser(method.subcommand or method.name, help=method.summary)
        _common(stage)
        add_config_flags(stage, [method.config])
    return parser


def _config(args: argparse.Namespace, method: WeightMethod | None) -> CacheConfig | GridConfig:
    """The command's config, built (and so checked) before the store is opened."""
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: pick one")
    _blocks(args.blocks)  # both commands' --blocks, checked before the store is opened
    try:
        if method is None:
            return CacheConfig(args.num_images, args.stride, _blocks(args.blocks))
        return config_from_flags(method.config, args)
    except ValueError as err:
        raise UsageError(str(err)) from None


def run(args: argparse.Namespace) -> int:
    commands = {m.subcommand or m.name: m for m in weight_methods().values()}
    method = commands.get(args.command)
    config = _config(args, method)
    store, handle = open_run(args.store, local_ckpt=args.local_ckpt)
    kind = "blockio" if method is None else "weights"

    names = block_names(handle.mmdit) if method is None else [method.name]
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
        result = quantize_blocks(
            handle,
            store,
            method,
            config,
            list(_blocks(args.blocks) or []) or None,
            overwrite=args.overwrite,
        )
    except DataError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:
        raise UsageError(str(err)) from None
    print_summary(result.rows, method.label)
    print(
        f"{ranks.tag()}weights: {method.label} W{config.bits_w} (group {config.group_size}) "
        f"-> {args.store}/weights/{method.name} in {time.perf_counter() - start:.1f}s"
    )
    return 0


def print_summary(rows: list[dict], label: str) -> None:
    if not rows:
        print(f"{ranks.tag()}every block was already quantized (nothing to do)")
        return
    head = f"{label} MSE"
    print(f"{ranks.tag()}{'block':<8}{'RTN MSE':>12}{head:>14}{'ratio':>8}{'time':>9}")
    for row in rows:
        print(
            f"{ranks.tag()}{row['block']:<8}{row['rtn_mse']:>12.4g}{row['mse']:>14.4g}"
            f"{row['ratio']:>8.3f}{row['seconds']:>8.1f}s"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
