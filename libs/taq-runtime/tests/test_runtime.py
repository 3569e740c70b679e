"""taq-runtime: the BLAS-first launcher, CLI helpers and the PNG writer."""

import argparse
import importlib.util
import os
import struct
import subprocess
import sys
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from taq_runtime.cli import config_from_flags
from taq_runtime.png import image_grid, save_png

ROOT = Path(__file__).resolve().parents[3]


def console_scripts() -> list[tuple[str, str]]:
    scripts = []
    for pyproject in sorted(ROOT.glob("*/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        scripts += sorted(project.get("scripts", {}).items())
    return scripts


@pytest.mark.parametrize("name, target", console_scripts(), ids=lambda v: v)
def test_every_command_starts_through_the_launcher_before_mlx(name, target):
    """Importing a console script's module must not import MLX: `launch` loads the BLAS
    first, whatever order the imports of the command's own modules are in."""
    module, _, function = target.partition(":")
    assert module.endswith(".__main__"), target
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{name} is not installed in this environment")
    code = (
        f"import sys, {module}; "
        "assert 'mlx.core' not in sys.modules, 'mlx imported before the launcher'; "
        f"assert 'launch(' in open({module}.__file__).read()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_launch_loads_blas_then_runs_the_command():
    code = (
        "import sys; from taq_runtime.launcher import launch; "
        "sys.argv = ['x']; rc = launch('taq_runtime.blas:blas_info'); "
        "from taq_runtime.blas import _INFO; assert _INFO is not None; print(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("BlasInfo(")


@pytest.mark.parametrize(("given", "threads"), [(None, 1), ("3", 3)])
def test_blas_runs_one_thread_unless_the_user_sets_another_count(given, threads):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given:
        env["OPENBLAS_NUM_THREADS"] = given
    code = "from taq_runtime.blas import load_optimised_blas as b; print(b().threads)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == str(threads), out.stderr


def decode_png(data: bytes) -> np.ndarray:
    """Read back what `encode_png` writes (8-bit, filter 0), checking every chunk's CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = {}, 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3}[color]
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert depth == 8 and (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels)


def test_png_round_trips_grayscale_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    for channels in (1, 3):
        image = rng.integers(0, 256, (5, 7, channels), dtype=np.uint8)
        path = save_png(image, tmp_path / f"c{channels}.png", upscale=2)
        np.testing.assert_array_equal(
            decode_png(path.read_bytes()), image.repeat(2, 0).repeat(2, 1)
        )


def test_image_grid_tiles_with_padding():
    images = np.zeros((3, 2, 2, 1), np.uint8)
    grid = image_grid(images, columns=2, pad=1)
    assert grid.shape == (5, 5, 1) and grid[2, 0, 0] == 255 and grid[0, 0, 0] == 0


@dataclass(frozen=True)
class Example:
    iters: int = 10
    lr: float = 0.1
    seed: int = 0


def test_config_from_flags_takes_named_fields_and_keeps_defaults():
    flags = argparse.Namespace(iters=3, lr=0.5, store="ignored")
    assert config_from_flags(Example, flags) == Example(iters=3, lr=0.5, seed=0)
    assert config_from_flags(Example, flags, seed=7).seed == 7
