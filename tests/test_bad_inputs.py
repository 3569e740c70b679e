"""Bad input to every entry point: exit code 2, one line naming the problem, no traceback,
the store unchanged. One table; a flag a CLI grows must join it (or ACCEPTED, with why).

Placeholders in argv: STORE (a copy of a finished minimal run, shared: no case may change
it), NEW (a path where nothing exists), FILE (a regular file), BINARY (a file of random
bytes), LONG (a file holding one 10,000-character prompt), FULL (a .png path that is a link
to /dev/full, a device that is always out of space), BARE (a zarr group, not a taq store),
V2 (STORE's root record in a `zarr_format: 2` root), LINKED (a store whose `weights` is a
link to OUTSIDE, a folder holding someone else's file), LOCKLINK (a store whose lock is a
link to that file), BLOCKED (a store whose report folder's place holds a file), EXISTING (a
.safetensors file that exists), DIR (a directory named like a .safetensors file), TOO_LONG
(a path with a 300-character name). No case may change OUTSIDE either.
"""

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from taq_actstats.cli import build_parser as actstats_parser
from taq_actstats.cli import main as actstats
from taq_adaround.cli import build_parser as adaround_parser
from taq_adaround.cli import main as adaround
from taq_calib.cli import build_parser as calib_parser
from taq_calib.cli import main as calib
from taq_infer.cli import build_parser as infer_parser
from taq_infer.cli import main as infer
from taq_io.lock import LOCK_FILE
from taq_model.cli import build_parser as model_parser
from taq_model.cli import main as model
from taq_pipeline.cli import build_parser as taq_parser
from taq_pipeline.cli import main as taq
from taq_pipeline.sweep import VARIED
from taq_run.weight_methods import weight_methods

# every weight method's flags with a bad value: its stage command, `taq run`, `taq sweep`
METHOD_FLAGS = [
    ("iters", "0", "--iters must be at least 1"),
    ("batch-size", "0", "--batch-size must be at least 1"),
    ("micro-batch", "-1", "--micro-batch must be at least 0"),
    ("bits-w", "7", "--bits-w 7 is not supported"),
    ("bits-a", "9", "--bits-a must be 0 (off) or 2..8"),
    ("group-size", "48", "--group-size 48 is not supported"),
    ("scale-method", "max", "--scale-method 'max' is unknown"),
    ("lr", "nan", "--lr must be finite"),
    ("lr-act", "-1", "--lr-act must be finite and >= 0"),
    ("reg-weight", "inf", "--reg-weight must be finite"),
    ("warmup", "1", "--warmup must be in [0, 1)"),
    ("beta-start", "1", "--beta-end must be > 0 and at most --beta-start (1.0)"),
    ("beta-end", "0", "--beta-end must be > 0"),
    ("seed", "-1", "--seed must be >= 0"),
    ("damp", "0", "--damp must be in (0, 1)"),
    ("block-columns", "0", "--block-columns must be at least 1"),
]
SWITCHES = ("bias-correction", "act-order", "sequential")
STAGES = {m.subcommand or m.name: m for m in weight_methods().values()}


def method_flag_cases(method, skip=()) -> list[tuple[str, str, str]]:
    flags = [f.replace("_", "-") for f in method.flags() if f not in skip]
    return [case for case in METHOD_FLAGS if case[0] in flags]


def every_method_flag_case(skip=()) -> dict[str, tuple[str, str, str]]:
    return {c[0]: c for m in weight_methods().values() for c in method_flag_cases(m, skip)}


CLIS = {
    "taq-calib": (calib, calib_parser),
    "taq-adaround": (adaround, adaround_parser),
    "taq-actstats": (actstats, actstats_parser),
    "taq-infer": (infer, infer_parser),
    "taq": (taq, taq_parser),
    "taq-model": (model, model_parser),
}
LONG_PROMPT = "digit 3 " * 1250
TOO_LONG = "n" * 300
OUT = ("--output", "NEW/x.png")
INFER = ("--store", "STORE", "--prompt", "digit 3", *OUT)

# (cli, argv, what the one line must say); the id is "cli [subcommand] --flag[-what]"
CASES = {
    # taq-calib
    "taq-calib --store-file": ("taq-calib", ["--store", "FILE"], "is not a taq store"),
    "taq-calib --model": ("taq-calib", ["--store", "NEW", "--model", "sd9"], "unknown model"),
    "taq-calib --model-other": (
        "taq-calib",
        ["--store", "STORE", "--model", "sd3-medium-random"],
        "is for model tiny-digits",
    ),
    "taq-calib --local-ckpt": (
        "taq-calib",
        ["--store", "NEW", "--model", "sd3-medium", "--local-ckpt", "NEW/none.safetensors"],
        "does not exist",
    ),
    "taq-calib --store-empty": ("taq-calib", ["--store", ""], "--store is empty"),
    "taq-calib --store-too-long": ("taq-calib", ["--store", "TOO_LONG"], "too long for the"),
    "taq-calib --store-zarr-v2": ("taq-calib", ["--store", "V2", "--resume"], "not a zarr v3"),
    "taq-calib --store-lock-link": (
        "taq-calib",
        ["--store", "LOCKLINK", "--resume"],
        "holds a link leading out of the store: taq-writer.lock",
    ),
    "taq-calib --prompts-binary": ("taq-calib", ["--store", "NEW", "--prompts", "BINARY"], "UTF-8"),
    "taq-calib --prompts-missing": ("taq-calib", ["--store", "NEW", "--prompts", "NEW"], "cannot"),
    "taq-calib --prompts-long": (
        "taq-calib",
        ["--store", "NEW", "--prompts", "LONG"],
        "(9999 characters)",
    ),
    "taq-calib --num-images": ("taq-calib", ["--store", "NEW", "--num-images", "0"], "at least 1"),
    "taq-calib --num-steps": ("taq-calib", ["--store", "NEW", "--num-steps", "0"], "at least 1"),
    "taq-calib --cfg-nan": ("taq-calib", ["--store", "STORE", "--cfg", "nan"], "--cfg must be"),
    "taq-calib --cfg-inf": ("taq-calib", ["--store", "STORE", "--cfg", "inf"], "--cfg must be"),
    "taq-calib --seed": ("taq-calib", ["--store", "STORE", "--seed", "-1"], "--seed must be"),
    "taq-calib --stride": ("taq-calib", ["--store", "NEW", "--stride", "0"], "--stride must be"),
    "taq-calib --resume": (
        "taq-calib",
        ["--store", "STORE", "--resume", "--overwrite"],
        "exclude each other",
    ),
    "taq-calib --overwrite": (
        "taq-calib",
        ["--store", "STORE"],
        "already has calib: pass --resume",
    ),
    "taq-calib --t5": ("taq-calib", ["--store", "NEW", "--t5"], "--t5"),
    "taq-calib --height": ("taq-calib", ["--store", "NEW", "--height", "100"], "--height"),
    "taq-calib --width": ("taq-calib", ["--store", "NEW", "--width", "-16"], "--width"),
    # taq-adaround
    "taq-adaround cache --store": ("taq-adaround", ["cache", "--store", "NEW"], "no taq store"),
    "taq-adaround cache --blocks": (
        "taq-adaround",
        ["cache", "--store", "STORE", "--blocks", "mm9", "--overwrite"],
        "unknown block",
    ),
    "taq-adaround cache --blocks-twice": (
        "taq-adaround",
        ["cache", "--store", "STORE", "--blocks", "mm0,mm0", "--overwrite"],
        "--blocks names mm0 more than once",
    ),
    "taq-adaround cache --num-images": (
        "taq-adaround",
        ["cache", "--store", "STORE", "--num-images", "0"],
        "--num-images must be",
    ),
    "taq-adaround cache --stride": (
        "taq-adaround",
        ["cache", "--store", "STORE", "--stride", "0"],
        "--stride must be",
    ),
    "taq-adaround cache --resume": (
        "taq-adaround",
        ["cache", "--store", "STORE", "--resume", "--overwrite"],
        "exclude each other",
    ),
    "taq-adaround cache --overwrite": (
        "taq-adaround",
        ["cache", "--store", "STORE"],
        "already has blockio",
    ),
    **{
        f"taq-adaround {command} --{flag}": (
            "taq-adaround",
            [command, "--store", "STORE", f"--{flag}", value],
            message,
        )
        for command, method in STAGES.items()
        for flag, value, message in [
            *method_flag_cases(method),
            ("store", "FILE", "is not a taq store"),
        ]
    },
    **{
        f"taq-adaround {command} --{flag}": ("taq-adaround", [command, *args], message)
        for command in STAGES
        for flag, args, message in [
            ("blocks", ["--store", "STORE", "--blocks", "mm9", "--overwrite"], "mm9"),
            ("resume", ["--store", "STORE", "--resume", "--overwrite"], "exclude each other"),
            ("overwrite", ["--store", "STORE"], "already has weights"),
        ]
    },
    "taq-adaround optimize --store-linked": (
        "taq-adaround",
        ["optimize", "--store", "LINKED", "--overwrite"],
        "holds a link leading out of the store: weights ->",
    ),
    # taq-actstats
    "taq-actstats collect --store": ("taq-actstats", ["collect", "--store", "NEW"], "no taq store"),
    "taq-actstats collect --num-images": (
        "taq-actstats",
        ["collect", "--store", "STORE", "--num-images", "0"],
        "--num-images must be",
    ),
    "taq-actstats collect --stride": (
        "taq-actstats",
        ["collect", "--store", "STORE", "--stride", "0"],
        "--stride must be",
    ),
    "taq-actstats collect --layers": (
        "taq-actstats",
        ["collect", "--store", "STORE", "--layers", "nothing*", "--overwrite"],
        "nothing*",
    ),
    "taq-actstats collect --resume": (
        "taq-actstats",
        ["collect", "--store", "STORE", "--resume", "--overwrite"],
        "exclude each other",
    ),
    "taq-actstats collect --overwrite": (
        "taq-actstats",
        ["collect", "--store", "STORE"],
        "already has actstats",
    ),
    **{
        f"taq-actstats analyze --{flag}": (
            "taq-actstats",
            ["analyze", "--store", "STORE", f"--{flag}", value, "--overwrite"],
            message,
        )
        for flag, value, message in [
            ("rule", "paper", "invalid choice: 'paper'"),
            ("target-db", "nan", "--target-db must be a finite number > 0"),
            ("gelu-a4", "-1", "--gelu-a4 must be a finite number > 0"),
            ("gelu-a6", "inf", "--gelu-a6 must be a finite number > 0"),
            ("other-a4", "0", "--other-a4 must be a finite number > 0"),
            ("other-a6", "nan", "--other-a6 must be a finite number > 0"),
            ("outlier-ratio", "0", "--outlier-ratio must be a finite number > 0"),
            ("range-margin", "0.5", "--range-margin 0.5 clips"),
            ("range-method", "minmax", "invalid choice: 'minmax'"),
            ("smooth-alpha", "2", "--smooth-alpha must be in 0..1"),
            ("smooth-alpha", "2", "--smooth-alpha must be in 0..1"),
            ("bits-w", "7", "--bits-w 7 is not supported"),
            ("group-size", "48", "--group-size 48 is not supported"),
            ("store", "NEW", "no taq store"),
            ("recipe", "paper", "invalid choice: 'paper'"),
            ("smooth-max-outliers", "0", "--smooth-max-outliers is a share of channels"),
            ("smooth-min-spike", "0.5", "--smooth-min-spike must be a finite ratio >= 1"),
            ("avg-bits", "3", "--avg-bits must be in 4..8, got 3"),
            ("plan", "static", "--plan static needs a budget: pass --avg-bits B"),
        ]
    },
    "taq-actstats analyze --target-db-negative": (
        "taq-actstats",
        ["analyze", "--store", "STORE", "--target-db", "-1"],
        "--target-db must be a finite number > 0",
    ),
    "taq-actstats analyze --overwrite": (
        "taq-actstats",
        ["analyze", "--store", "STORE", "--target-db", "30"],
        "--overwrite",
    ),
    "taq-actstats plot --store": ("taq-actstats", ["plot", "--store", "NEW"], "no taq store"),
    "taq-actstats plot --out": (
        "taq-actstats",
        ["plot", "--store", "STORE", "--out", "FILE"],
        "is a file, not a directory",
    ),
    "taq-actstats plot --snapshot-steps": (
        "taq-actstats",
        ["plot", "--store", "STORE", "--snapshot-steps", "9"],
        "--snapshot-steps 9 is not a stored step",
    ),
    "taq-actstats plot --layers": (
        "taq-actstats",
        ["plot", "--store", "STORE", "--plot-distributions", "--layers", "zz*"],
        "--layers 'zz*' matches no layer",
    ),
    "taq-actstats plot --layers-without-distributions": (
        "taq-actstats",
        ["plot", "--store", "STORE", "--layers", "mm0.*"],
        "add --plot-distributions",
    ),
    "taq-actstats plot --out-under-file": (
        "taq-actstats",
        ["plot", "--store", "STORE", "--out", "FILE/plots"],
        "cannot be created",
    ),
    # taq-infer
    "taq-infer --store": ("taq-infer", ["--store", "NEW", "--prompt", "digit 3", *OUT], "no taq"),
    "taq-infer --prompt": ("taq-infer", ["--store", "STORE", "--prompt", "cat", *OUT], "'cat'"),
    "taq-infer --prompt-long": (
        "taq-infer",
        ["--store", "STORE", "--prompt", LONG_PROMPT, *OUT],
        "(10000 characters)",
    ),
    "taq-infer --output": (
        "taq-infer",
        ["--store", "STORE", "--prompt", "digit 3", "--output", "FILE/x.png"],
        "is a file, not a directory",
    ),
    "taq-infer --output-not-png": (
        "taq-infer",
        ["--store", "STORE", "--prompt", "digit 3", "--output", "NEW/x.txt"],
        "must be a .png",
    ),
    "taq-infer --output-disk-full": (
        "taq-infer",
        ["--store", "STORE", "--prompt", "digit 3", "--steps", "4", "--output", "FULL"],
        "no space left on the device",
    ),
    "taq-infer --checkpoint": (
        "taq-infer",
        ["--checkpoint", "NEW/x.safetensors", "--prompt", "digit 3", *OUT],
        "no checkpoint at",
    ),
    "taq-infer --checkpoint-not-one": (
        "taq-infer",
        ["--checkpoint", "FILE", "--prompt", "digit 3", *OUT],
        "is not a readable safetensors file",
    ),
    "taq-infer --modulation-bits": ("taq-infer", [*INFER, "--modulation-bits", "7"], "--modul"),
    "taq-infer --weights": ("taq-infer", [*INFER, "--weights", "sq"], "has no `weights/sq`"),
    "taq-infer --seed": ("taq-infer", [*INFER, "--seed", "-1"], "--seed must be"),
    "taq-infer --steps": ("taq-infer", [*INFER, "--steps", "0"], "--steps must be"),
    "taq-infer --cfg": ("taq-infer", [*INFER, "--cfg", "nan"], "--cfg must be"),
    "taq-infer --act": ("taq-infer", [*INFER, "--act", "int8"], "invalid choice"),
    "taq-infer --act-fallback": ("taq-infer", [*INFER, "--act-fallback", "x"], "invalid choice"),
    "taq-infer --act-fallback-needed": ("taq-infer", [*INFER, "--steps", "7"], "--act-fallback"),
    "taq-infer --smoothquant": (
        "taq-infer",
        [*INFER, "--smoothquant", "--act", "none"],
        "use it with --act timestep",
    ),
    "taq-infer --scale-dtype": ("taq-infer", [*INFER, "--scale-dtype", "int8"], "invalid choice"),
    "taq-infer --other-dtype": ("taq-infer", [*INFER, "--other-dtype", "int8"], "invalid choice"),
    # taq
    **{
        f"taq run --{flag}": ("taq", ["run", "--store", "NEW", f"--{flag}", value], message)
        for flag, value, message in [
            ("store", "FILE", "is not a taq store"),
            ("prompts", "BINARY", "is not UTF-8 text"),
            ("num-images", "0", "--num-images must be at least 1"),
            ("num-steps", "0", "--num-steps must be at least 1"),
            ("cfg", "nan", "--cfg must be a finite number"),
            ("cache-stride", "0", "--cache-stride must be at least 1"),
            *every_method_flag_case(skip=("seed",)).values(),
            ("weights", "sq", "weight method 'sq' is not installed"),
            ("rule", "paper", "--rule 'paper' is unknown"),
            ("target-db", "-1", "--target-db must be a finite number > 0"),
            ("gelu-a4", "nan", "--gelu-a4 must be a finite number > 0"),
            ("gelu-a6", "0", "--gelu-a6 must be a finite number > 0"),
            ("other-a4", "-2", "--other-a4 must be a finite number > 0"),
            ("other-a6", "inf", "--other-a6 must be a finite number > 0"),
            ("range-margin", "0.5", "--range-margin 0.5 clips"),
            ("range-method", "minmax", "--range-method 'minmax' is unknown"),
            ("smooth-alpha", "2", "--smooth-alpha must be in 0..1"),
            ("recipe", "paper", "--recipe 'paper' is unknown"),
            ("avg-bits", "3", "--avg-bits must be in 4..8"),
            ("plan", "static", "--plan static needs a budget: pass --avg-bits B"),
            ("eval-samples", "1", "--eval-samples must be at least 2"),
            ("seed", "-1", "--seed must be"),
            ("model", "sd9", "unknown model preset"),
        ]
    },
    "taq run --prompts-long": ("taq", ["run", "--store", "NEW", "--prompts", "LONG"], "(9999 c"),
    "taq run --model-other": (
        "taq",
        ["run", "--store", "STORE", "--model", "sd3-medium-random"],
        "is for model tiny-digits",
    ),
    "taq run --local-ckpt": (
        "taq",
        ["run", "--store", "NEW", "--model", "sd3-medium", "--local-ckpt", "NEW/x.safetensors"],
        "does not exist",
    ),
    "taq run --overwrite": ("taq", ["run", "--store", "STORE", "--num-images", "3"], "--overwrite"),
    "taq run --t5": ("taq", ["run", "--store", "NEW", "--t5"], "--t5"),
    "taq run --height": ("taq", ["run", "--store", "NEW", "--height", "100"], "--height"),
    "taq run --width": ("taq", ["run", "--store", "NEW", "--width", "0"], "--width"),
    "taq export --store": (
        "taq",
        ["export", "--store", "NEW", "--output", "NEW/m.safetensors"],
        "no taq",
    ),
    "taq export --output": (
        "taq",
        ["export", "--store", "STORE", "--output", "FILE/m.safetensors"],
        "is a file, not a directory",
    ),
    "taq export --output-exists": (
        "taq",
        ["export", "--store", "STORE", "--output", "EXISTING"],
        "exists: pass --overwrite to replace it",
    ),
    "taq export --output-directory": (
        "taq",
        ["export", "--store", "STORE", "--output", "DIR"],
        "is a directory: pass a .safetensors file path",
    ),
    "taq export --output-in-store": (
        "taq",
        ["export", "--store", "STORE", "--output", "STORE/weights/m.safetensors"],
        "is inside the zarr store",
    ),
    "taq export --output-too-long": (
        "taq",
        ["export", "--store", "STORE", "--output", "NEW/TOO_LONG.safetensors"],
        "is too long for the file system",
    ),
    "taq export --weights": (
        "taq",
        ["export", "--store", "STORE", "--output", "NEW/m.safetensors", "--weights", "sq"],
        "has no `weights/sq`",
    ),
    "taq export --dtype": (
        "taq",
        ["export", "--store", "STORE", "--output", "NEW/m.safetensors", "--dtype", "int8"],
        "invalid choice",
    ),
    "taq export --modulation-bits": (
        "taq",
        ["export", "--store", "STORE", "--output", "NEW/m.safetensors", "--modulation-bits", "7"],
        "--modulation-bits",
    ),
    "taq eval --store": ("taq", ["eval", "--store", "NEW"], "no taq store"),
    "taq eval --eval-samples": ("taq", ["eval", "--store", "STORE", "--eval-samples", "0"], "at l"),
    "taq eval --store-report-blocked": (
        "taq",
        ["eval", "--store", "BLOCKED/run.zarr"],
        "is a file, not a directory: taq writes its results beside the store",
    ),
    "taq eval --split": ("taq", ["eval", "--store", "STORE", "--split", "test"], "is unknown"),
    "taq run --eval-split": ("taq", ["run", "--store", "NEW", "--eval-split", "x"], "unknown"),
    "taq report --store": ("taq", ["report", "--store", "NEW"], "no taq store"),
    **{
        f"taq sweep --{flag}": ("taq", ["sweep", "--store", "STORE", f"--{flag}", value], message)
        for flag, value, message in [
            ("weight-bits", "4,x", "is not a comma-separated list"),
            ("avg-bits", "3", "--avg-bits must be in 4..8"),
            ("plans", "dynamic", "--plans 'dynamic' is unknown"),
            ("recipes", "paper", "--recipes 'paper' is unknown"),
            *every_method_flag_case(skip=VARIED).values(),
            ("eval-samples", "1", "--eval-samples must be at least 2"),
            ("split", "test", "--split 'test' is unknown"),
        ]
    },
    "taq sweep --weight-bits-unsupported": (
        "taq",
        ["sweep", "--store", "STORE", "--weight-bits", "9"],
        "--weight-bits 9 is not supported",
    ),
    "taq sweep --store": ("taq", ["sweep", "--store", "NEW"], "no taq store"),
    "taq doctor --store": ("taq", ["doctor", "--store", "NEW"], "no store at"),
    "taq launch --ranks": ("taq", ["launch", "-n", "0", "--", "true"], "-n must be at least 1"),
    "taq doctor --store-file": ("taq", ["doctor", "--store", "FILE"], "is not a taq store"),
    "taq doctor --store-no-root-record": ("taq", ["doctor", "--store", "BARE"], "not a taq store"),
    "taq doctor --store-zarr-v2": ("taq", ["doctor", "--store", "V2"], "not a zarr v3 group"),
    "taq doctor --store-linked": ("taq", ["doctor", "--store", "LINKED"], "leading out of"),
    "taq doctor --verify": ("taq", ["doctor", "--verify"], "--verify checks a store"),
    # taq-model
    "taq-model sample --model": ("taq-model", ["sample", "--model", "sd9", *OUT], "unknown model"),
    "taq-model sample --prompt": ("taq-model", ["sample", "--prompt", "cat", *OUT], "'cat'"),
    "taq-model sample --seed": ("taq-model", ["sample", "--seed", "-1", *OUT], "--seed must be"),
    "taq-model sample --steps": ("taq-model", ["sample", "--steps", "0", *OUT], "--steps must be"),
    "taq-model sample --cfg": ("taq-model", ["sample", "--cfg", "inf", *OUT], "--cfg must be"),
    "taq-model sample --local-ckpt": (
        "taq-model",
        ["sample", "--model", "sd3-medium", "--local-ckpt", "NEW/x", *OUT],
        "does not exist",
    ),
    "taq-model sample --output": (
        "taq-model",
        ["sample", "--output", "FILE/x.png"],
        "is a file, not a directory",
    ),
}

ACCEPTED = {
    **{f"{cli} --version": "prints the version" for cli in CLIS},
    "taq export --local-ckpt": "a path read only for the real-weight presets",
    "taq-adaround cache --local-ckpt": "a path read only for the real-weight presets",
    **{
        f"taq-adaround {command} --local-ckpt": "a path read only for the real-weight presets"
        for command in STAGES
    },
    **{
        f"taq-adaround {command} --{switch}": "a switch: any value is valid"
        for command, method in STAGES.items()
        for switch in SWITCHES
        if switch.replace("-", "_") in method.flags()
    },
    **{
        f"taq {c} --{switch}": "a switch: any value is valid"
        for c in ("run", "sweep")
        for switch in SWITCHES
    },
    "taq-actstats analyze --no-static-cap": "a switch: any value is valid",
    "taq-actstats analyze --no-gelu-shift": "a switch: any value is valid",
    "taq run --static-cap": "a switch: any value is valid",
    "taq run --gelu-shift": "a switch: any value is valid",
    "taq-actstats collect --local-ckpt": "a path read only for the real-weight presets",
    "taq-actstats analyze --local-ckpt": "a path read only for the real-weight presets",
    "taq-actstats plot --quant-config": "a switch (its missing group: `taq-actstats analyze`)",
    "taq-actstats plot --plot-distributions": "a switch: any value is valid",
    "taq-infer --compare": "a switch: any value is valid",
    "taq-infer --diff-stats": "a switch: any value is valid",
    "taq-infer --allow-stale": "a switch: any value is valid",
    "taq-infer --local-ckpt": "a path read only for the real-weight presets",
    "taq eval --local-ckpt": "a path read only for the real-weight presets",
    "taq export --overwrite": "a switch: any value is valid",
    "taq-model doctor --json": "a switch: any value is valid",
}


def _flags(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    found = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= _flags(sub, f"{prefix}{name} ")
        elif action.option_strings and action.dest != "help":
            found.add(prefix + next(s for s in action.option_strings if s.startswith("--")))
    return found


def _case_flag(case_id: str) -> str:
    """`taq-calib --prompts-binary` -> `taq-calib --prompts`: the flag a case is about."""
    words = case_id.split(" ")
    cli, command, last = words[0], " ".join(words[1:-1]), words[-1]
    flags = [
        f.split(" ")[-1] for f in _flags(CLIS[cli][1]()) if " ".join(f.split(" ")[:-1]) == command
    ]
    matches = [f for f in flags if last == f or last.startswith(f + "-")]
    assert matches, f"case {case_id!r} names no flag of `{cli} {command}`"
    return " ".join([*words[:-1], max(matches, key=len)])


def test_every_flag_of_every_cli_has_a_bad_input_case():
    covered = {_case_flag(case_id) for case_id in CASES}
    for cli, (_, build) in CLIS.items():
        for flag in sorted(_flags(build())):
            name = f"{cli} {flag}"
            assert name in covered or name in ACCEPTED, f"no bad-input case for `{name}`"


@pytest.fixture(scope="module")
def places(finished, tmp_path_factory):
    """The placeholders' paths, STORE being one copy of the finished run for every case."""
    root = tmp_path_factory.mktemp("bad")
    store = root / "run.zarr"
    shutil.copytree(finished[0], store)
    (root / "file").write_text("not a store\n")
    (root / "binary").write_bytes(np.random.default_rng(0).bytes(512))
    (root / "long").write_text(LONG_PROMPT + "\n")
    (root / "bare").mkdir()
    (root / "bare" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    os.symlink("/dev/full", root / "full.png")
    outside = root / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("someone else's file\n")
    for name in ("v2", "linked", "locklink"):
        (root / name).mkdir()
        shutil.copy(store / "zarr.json", root / name / "zarr.json")
    v2 = root / "v2" / "zarr.json"
    v2.write_text(v2.read_text().replace('"zarr_format": 3', '"zarr_format": 2'))
    os.symlink(outside, root / "linked" / "weights")
    os.symlink(outside / "notes.txt", root / "locklink" / LOCK_FILE)
    (root / "blocked").mkdir()
    os.symlink(store, root / "blocked" / "run.zarr")
    (root / "blocked" / "run-report").write_text("a file where the report folder goes\n")
    (root / "existing.safetensors").write_text("mine\n")
    (root / "dir.safetensors").mkdir()
    return {
        "STORE": store,
        "FILE": root / "file",
        "BINARY": root / "binary",
        "LONG": root / "long",
        "BARE": root / "bare",
        "FULL": root / "full.png",
        "NEW": root / "new",
        "V2": root / "v2",
        "LINKED": root / "linked",
        "LOCKLINK": root / "locklink",
        "BLOCKED": root / "blocked",
        "EXISTING": root / "existing.safetensors",
        "DIR": root / "dir.safetensors",
        "OUTSIDE": outside,
        "TOO_LONG": root / TOO_LONG,
    }


def _snapshot(store: Path) -> dict:
    return {
        str(p.relative_to(store)): (p.stat().st_size, hash(p.read_bytes()))
        for p in sorted(store.rglob("*"))
        if p.is_file() and p.name != LOCK_FILE
    }


def _expand(arg: str, places: dict) -> str:
    for key in sorted(places, key=len, reverse=True):
        if arg == key or arg.startswith(key + "/"):
            arg = str(places[key]) + arg[len(key) :]
            break
    return arg.replace("TOO_LONG", TOO_LONG)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, places, capsys, monkeypatch):
    monkeypatch.setenv("TAQ_NO_PROGRESS", "1")
    cli, argv, message = CASES[case]
    main = CLIS[cli][0]
    before = _snapshot(places["STORE"]), _snapshot(places["OUTSIDE"])
    try:
        code = main([_expand(a, places) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert code == 2 and message in lines[0], lines[0]
    assert len(lines[0]) < 600, "the error echoes too much"
    assert (_snapshot(places["STORE"]), _snapshot(places["OUTSIDE"])) == before
    assert not places["NEW"].exists() or not any(places["NEW"].iterdir())
