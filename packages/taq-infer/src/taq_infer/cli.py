"""`taq-infer`: generate with the quantized model of a store, optionally against FP.

What is real and what is simulated is printed every run: the weights are packed W4 in
memory and multiplied from their codes; activation quantization is quantize-dequantize in
float32 (MLX has no integer activation matmul).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

from taq_infer.artifacts import DEFAULT_WEIGHTS
from taq_infer.checkpoint import MODULATION_BITS, load_checkpoint, read_checkpoint
from taq_infer.loading import SCALE_DTYPES, load_quantized
from taq_infer.metrics import latent_diff
from taq_infer.model import ACT_MODES, InferenceError, model_bytes
from taq_infer.packed import resolve_kernel
from taq_io import StoreError
from taq_model.presets import load_preset
from taq_run.runs import open_run
from taq_run.weight_methods import installed_names
from taq_runtime.blas import blas_info
from taq_runtime.cli import UsageError, add_version_flag, run_cli, writable_dir
from taq_runtime.png import image_grid, save_png, upscale_for

logger = logging.getLogger("taq_infer")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (run_cli), not argparse's usage dump
        raise UsageError(f"{message} (see taq-infer --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taq-infer",
        description="Run a store's packed W4 model (real 4-bit weights; activation "
        "quantization simulated) and optionally compare it with FP.",
    )
    add_version_flag(parser, "taq-infer")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="the taq run (zarr store)")
    source.add_argument(
        "--checkpoint",
        help="a `taq export` .safetensors file instead of a store (its activation plan, if "
        "any, is the .actplan.safetensors file next to it)",
    )
    parser.add_argument("--prompt", help='e.g. "digit 3" for tiny-digits')
    parser.add_argument("--output", required=True, help="PNG to write")
    parser.add_argument(
        "--weights",
        default=None,
        help="store only: the weight method whose `weights/<method>` group to run (installed "
        f"methods: {', '.join(installed_names()) or 'none; any group the store has reads'}) "
        f"[{DEFAULT_WEIGHTS}]",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--cfg", type=float, default=None, help="default: the preset's")
    parser.add_argument(
        "--act",
        default="auto",
        choices=("auto", *ACT_MODES),
        help="activation fake-quant: timestep (quant_config), static (AdaRound's learned "
        "scales), none; auto: timestep if the store has a quant_config, else static if the "
        "weights carry scales, else none",
    )
    parser.add_argument(
        "--act-fallback",
        choices=("nearest", "static"),
        default=None,
        help="when quant_config's timesteps differ from the schedule: use the nearest "
        "calibrated step, or the static scales (never chosen silently)",
    )
    parser.add_argument(
        "--smoothquant", action="store_true", help="--act timestep: the SmoothQuant variant"
    )
    parser.add_argument("--compare", action="store_true", help="also run FP, side-by-side PNG")
    parser.add_argument("--diff-stats", action="store_true", help="MSE/PSNR/max abs vs FP")
    parser.add_argument(
        "--scale-dtype",
        choices=tuple(SCALE_DTYPES),
        default=None,
        help="store only: keep the W4 scales/biases in this dtype (default: as the artifact "
        "has them)",
    )
    parser.add_argument(
        "--other-dtype",
        choices=("float32", "float16"),
        default=None,
        help="store only: dtype the non-quantized weights are kept in (compute stays float32)",
    )
    parser.add_argument(
        "--modulation-bits",
        type=int,
        default=None,
        help="store only: also round the adaLN linears to nearest at these bits, as "
        "`taq export` does (0: float) [0]",
    )
    parser.add_argument(
        "--allow-stale",
        action="store_true",
        help="use weights / tiers made from a calibration that changed since (refused otherwise)",
    )
    parser.add_argument(
        "--local-ckpt",
        default=None,
        help="MLX checkpoint of sd3-medium, sd3.5-large or flux-schnell",
    )
    return parser


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run(args: argparse.Namespace) -> int:
    if not args.prompt or not args.prompt.strip():
        raise UsageError('--prompt is required, e.g. --prompt "digit 3"')
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.cfg is not None and not (math.isfinite(args.cfg) and args.cfg >= 0):
        raise UsageError(f"--cfg must be a finite number >= 0 (0: no guidance), got {args.cfg}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}")
    if args.smoothquant and args.act in ("static", "none"):
        raise UsageError(
            f"--smoothquant is a variant of the time-aware tiers: use it with --act timestep "
            f"(or auto), not --act {args.act}"
        )
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise UsageError(f"--output must be a .png path, got {output}")
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory: pass a .png file path")
    writable_dir(output.parent, "--output's directory")

    if args.modulation_bits not in (None, *MODULATION_BITS):
        raise UsageError(
            f"--modulation-bits must be one of {', '.join(map(str, MODULATION_BITS))}, "
            f"got {args.modulation_bits}"
        )
    fp_latents: list[mx.array] = []

    def run_fp(fp_handle) -> None:  # the FP model, same prompt and seed, before packing
        fp_handle.validate_prompts([args.prompt])
        fp_latents.append(fp_handle.generate([args.prompt], [args.seed], args.steps, args.cfg))
        mx.eval(fp_latents[-1])

    common = {
        "act": args.act,
        "act_fallback": args.act_fallback,
        "smoothquant": args.smoothquant,
        "before_install": run_fp if args.compare or args.diff_stats else None,
    }
    if args.checkpoint:
        store_only = ("weights", "scale_dtype", "other_dtype", "modulation_bits")
        given = [f"--{n.replace('_', '-')}" for n in store_only if getattr(args, n) is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)} apply to --store only: a checkpoint's weights and dtypes "
                "were fixed by `taq export`"
            )
        checkpoint = read_checkpoint(args.checkpoint)
        handle = load_preset(checkpoint.identity.preset, local_ckpt=args.local_ckpt)
        handle.validate_prompts([args.prompt])
        num_steps = args.steps or handle.default_steps
        model = load_checkpoint(checkpoint, handle, num_steps=num_steps, **common)
    else:
        store, handle = open_run(args.store, mode="r", local_ckpt=args.local_ckpt)
        handle.validate_prompts([args.prompt])
        model = load_quantized(
            handle,
            store,
            weights=args.weights or DEFAULT_WEIGHTS,
            num_steps=args.steps or handle.default_steps,
            scale_dtype=args.scale_dtype,
            other_dtype=args.other_dtype or "float32",
            modulation_bits=args.modulation_bits or 0,
            allow_stale=args.allow_stale,
            **common,
        )
    act_note = model.prepare(args.steps)
    latents = model.generate([args.prompt], [args.seed], args.steps, args.cfg)
    mx.eval(latents)

    layers = model.layer_bytes()
    kernel = resolve_kernel("auto")
    device = "GPU (Metal)" if mx.default_device() == mx.gpu else f"CPU, {blas_info().name} BLAS"
    print(
        f"real:      packed W{model.weights.bits} ({model.weights.method}, group "
        f"{model.weights.group_size}) in {len(model.layers)} layers: {_megabytes(layers)} "
        f"resident ({100 * layers / model.float16_layer_bytes():.1f} % of float16); whole "
        f"MMDiT {_megabytes(model_bytes(handle.mmdit))}; matmul "
        f"{'mx.quantized_matmul' if kernel == 'quantized' else 'per-layer dequantize -> fp32 GEMM'}"
        f" on {device}"
    )
    if model.act == "none":
        print("simulated: nothing (no activation quantization)")
    else:
        print(
            f"simulated: activation fake-quant ({model.act}: {act_note}) as quantize-dequantize "
            "in float32; MLX has no integer activation matmul"
        )

    images = handle.to_images(latents)
    save_png(images[0], output, upscale=upscale_for(images[0]))
    print(f"wrote {output}")
    if fp_latents:
        if args.diff_stats:
            print(latent_diff(fp_latents[0], latents))
        if args.compare:
            pair = np.concatenate([handle.to_images(fp_latents[0]), images])
            side = output.with_name(output.stem + ".compare.png")
            save_png(image_grid(pair, columns=2), side, upscale=upscale_for(images[0]))
            print(f"wrote {side} (left: FP, right: W{model.weights.bits} {model.act})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()

    def entry() -> int:
        return run(parser.parse_args(argv))

    return run_cli(entry, user_errors=(StoreError, InferenceError))


if __name__ == "__main__":
    sys.exit(main())
