"""`taq-shapes adherence`: sample tiny-shapes weights on a fixed prompt set and score them."""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from taq_runtime.cli import ArgumentParser, add_version_flag, run_cli
from taq_runtime.png import image_grid, save_png
from taq_shapes.grammar import prompt_set

PROMPT_SEED = 12345  # the fixed evaluation prompts (training draws its scenes per step)
FIRST_SEED = 100_000  # the evaluation's noise seeds


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="taq-shapes", description=__doc__.split("\n")[0])
    add_version_flag(parser, "taq-shapes")
    commands = parser.add_subparsers(dest="command", required=True)
    adherence = commands.add_parser("adherence", help="prompt adherence of tiny-shapes weights")
    adherence.add_argument("--weights", default=None, help="safetensors (default: shipped)")
    adherence.add_argument("--samples", type=int, default=64)
    adherence.add_argument("--steps", type=int, default=None)
    adherence.add_argument("--cfg", type=float, default=None)
    adherence.add_argument("--grid", default=None, help="write the images as a PNG grid here")
    args = parser.parse_args(argv)

    def run() -> int:
        from taq_shapes.preset import build_tiny_shapes, measure_adherence

        handle = build_tiny_shapes(args.weights)
        prompts = prompt_set(args.samples, seed=PROMPT_SEED)
        seeds = list(range(FIRST_SEED, FIRST_SEED + args.samples))
        start = time.perf_counter()
        report, _, images = measure_adherence(handle, prompts, seeds, args.steps, args.cfg)
        result = {**report.to_json(), "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(result))
        if args.grid:
            save_png(image_grid(np.stack(images), columns=8), args.grid, upscale=4)
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
