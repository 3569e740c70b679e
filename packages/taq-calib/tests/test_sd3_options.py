"""`taq-calib`'s SD3 options from the command line: one-line refusals, nothing written."""

import os
import subprocess
import sys


def calib(*args, env=None):
    cmd = [sys.executable, "-m", "taq_calib", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})


def one_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_refuses_a_size_not_a_multiple_of_16(tmp_path):
    line = one_line(calib("--store", tmp_path / "s.zarr", "--model", "sd3-medium", "--height", 500))
    assert "multiple of 16" in line and "496" in line
    assert not (tmp_path / "s.zarr").exists()


def test_cli_t5_without_its_files_names_them(tmp_path):
    empty_cache = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    out = calib("--store", tmp_path / "s.zarr", "--model", "sd3-medium", "--t5", env=empty_cache)
    line = one_line(out)
    assert "t5/t5xxl.safetensors" in line and "google/t5-v1_1-xxl/spiece.model" in line
    assert "--no-t5" in line
    assert not (tmp_path / "s.zarr").exists()
