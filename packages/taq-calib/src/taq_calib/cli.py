"""`taq-calib`: generate calibration latents into a taq store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taq_calib.calibration import calib_config, calibrate
from taq_io import Store, StoreError
from taq_model.presets import DEFAULT_PRESET, PRESETS, ModelOptions, load_preset
from taq_run import writers
from taq_run.runs import model_identity, refuse_other_model
from taq_runtime import ranks
from taq_runtime.cli import ArgumentParser, UsageError, add_version_flag, at_least, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="taq-calib", description=__doc__)
    add_version_flag(p, "taq-calib")
    p.add_argument("--store", required=True, help="the run's zarr store (a directory or s3:// URL)")
    p.add_argument("--model", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)}")
    p.add_argument(
        "--local-ckpt",
        default=None,
        help="MLX checkpoint of sd3-medium, sd3.5-large or flux-schnell",
    )
    p.add_argument(
        "--t5",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="sd3-medium: T5-XXL conditioning from the local Hugging Face cache (else zeros)",
    )
    p.add_argument("--height", type=int, default=None, help="sd3-medium presets: pixels [512]")
    p.add_argument("--width", type=int, default=None, help="sd3-medium presets: pixels [512]")
    p.add_argument("--prompts", type=Path, default=None, help="file, one prompt per line")
    p.add_argument("--num-images", type=int, default=None, help="default: one per prompt")
    p.add_argument("--num-steps", type=int, default=None, help="default: the preset's")
    p.add_argument("--cfg", type=float, default=None, help="default: the preset's")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--stride", type=int, default=1, help="store every stride-th step")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing calib group")
    return p


def read_prompts(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UsageError(f"cannot read prompts file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(
            f"prompts file {path} is not UTF-8 text: give a text file, one prompt per line"
        ) from None
    prompts = tuple(line.strip() for line in lines if line.strip())
    if not prompts:
        raise UsageError(f"prompts file {path} is empty: put one prompt per line")
    return prompts


def check_flags(args: argparse.Namespace) -> None:
    try:
        at_least(1, num_steps=args.num_steps, num_images=args.num_images)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: pick one")


def run(args: argparse.Namespace) -> int:
    check_flags(args)
    prompts = read_prompts(args.prompts) if args.prompts else None
    try:
        options = ModelOptions(args.t5, args.height, args.width)
    except ValueError as err:
        raise UsageError(str(err)) from None
    refuse_other_model(args.store, args.model)
    handle = load_preset(args.model, local_ckpt=args.local_ckpt, options=options)
    prompts = prompts or tuple(handle.default_prompts)
    handle.validate_prompts(prompts)
    try:
        config = calib_config(args, handle, prompts)
    except ValueError as err:
        raise UsageError(str(err)) from None

    def open_store() -> Store:
        store = Store.open_or_create(args.store, model_identity(handle))
        writers.refuse_existing(
            store, args.store, "calib", resume=args.resume, overwrite=args.overwrite
        )
        return store

    store = writers.open_store(open_store)
    result = calibrate(handle, store, config, overwrite=args.overwrite)
    print(
        f"{ranks.tag()}calib: wrote {result.images_written} image(s) x "
        f"{len(config.stored_steps)} step(s)"
        f" ({result.images_skipped} already done) in {result.seconds:.1f}s -> "
        f"{args.store}/calib ({store.nbytes('calib') / 1e6:.1f} MB)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: run(args), user_errors=(StoreError,))


if __name__ == "__main__":
    sys.exit(main())
