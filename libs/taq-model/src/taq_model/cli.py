"""`taq-model`: environment report and sampling from a preset."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from taq_model.presets import DEFAULT_PRESET, PRESETS, load_preset
from taq_runtime.cli import UsageError, command_parser, run_cli, writable_dir
from taq_runtime.doctor import environment_report
from taq_runtime.png import image_grid, save_png, upscale_for


def _doctor(args: argparse.Namespace) -> int:
    report = environment_report()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print("\n".join(line for line in report.lines() if line))
    return 0


def _sample(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.cfg is not None and not (math.isfinite(args.cfg) and args.cfg >= 0):
        raise UsageError(f"--cfg must be a finite number >= 0 (0: no guidance), got {args.cfg}")
    if not 0 <= args.seed < 2**32 - len(args.prompt or [0] * 10):
        raise UsageError(f"--seed must be >= 0 and below 2**32, got {args.seed}")
    if args.output.is_dir():
        raise UsageError(f"--output {args.output} is a directory: pass a .png file path")
    writable_dir(args.output.parent, "--output's directory")
    handle = load_preset(args.model, local_ckpt=args.local_ckpt)
    prompts = args.prompt or handle.default_prompts
    seeds = [args.seed + i for i in range(len(prompts))]
    latents = handle.generate(prompts, seeds, args.steps, args.cfg)
    images = handle.to_images(latents)
    grid = image_grid(images, columns=min(len(images), 10))
    path = save_png(grid, args.output, upscale=upscale_for(images[0], 64))
    print(f"wrote {len(images)} sample(s) of {handle.name} to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = command_parser("taq-model", "taq-model", __doc__)
    doctor = sub.add_parser("doctor", help="MLX version, device, BLAS and GEMM rate")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(func=_doctor)

    sample = sub.add_parser("sample", help="generate images from a preset")
    sample.add_argument("--model", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)}")
    sample.add_argument("--prompt", action="append", help="repeatable; default: preset prompts")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--steps", type=int, default=None)
    sample.add_argument("--cfg", type=float, default=None)
    sample.add_argument(
        "--local-ckpt",
        default=None,
        help="MLX checkpoint of sd3-medium, sd3.5-large or flux-schnell",
    )
    sample.add_argument("--output", type=Path, default=Path("samples.png"))
    sample.set_defaults(func=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: args.func(args))
