"""`taq-calib` from the command line: outputs, resume after SIGKILL, and refusals."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from taq_io import ModelIdentity, Store
from taq_runtime.testing import HANG_GUARD_S

SMALL = ("--num-images", "2", "--num-steps", "4")


def read_calib(path):
    group = Store.open(path).require_group("calib")
    names = ["latents", "final_latents", "cond_tokens", "cond_pooled", "prompts", "seeds"]
    return {name: group.read(name) for name in names + ["sigmas", "timesteps"]}


def test_writes_calib_group_and_summary(calib_cli, tmp_path):
    out = calib_cli("--store", tmp_path / "a.zarr", *SMALL)
    assert out.returncode == 0, out.stderr
    assert "calib: wrote 2 image(s) x 4 step(s)" in out.stdout
    data = read_calib(tmp_path / "a.zarr")
    assert data["latents"].shape == (2, 4, 16, 16, 1)
    assert data["prompts"].tolist() == ["digit 0", "digit 1"]
    assert np.isfinite(data["latents"]).all()


def test_existing_store_needs_resume_or_overwrite(calib_cli, tmp_path):
    store = tmp_path / "a.zarr"
    assert calib_cli("--store", store, *SMALL).returncode == 0
    again = calib_cli("--store", store, *SMALL)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    resumed = calib_cli("--store", store, *SMALL, "--resume")
    assert resumed.returncode == 0
    assert "wrote 0 image(s)" in resumed.stdout and "2 already done" in resumed.stdout


def test_sigkill_then_resume_is_identical_to_uninterrupted(calib_cli, tmp_path):
    args = ("--num-images", "6", "--num-steps", "20", "--prompts")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("digit 3\ndigit 7\n")
    reference = tmp_path / "ref.zarr"
    assert calib_cli("--store", reference, *args, prompts).returncode == 0

    killed = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "taq_calib", "--store", str(killed), *args, str(prompts)]
    proc = subprocess.Popen(cmd, env={**os.environ, "TAQ_NO_PROGRESS": "1"})
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline:
        done = killed / "calib" / "done" / "c"
        if done.exists() and len(list(done.iterdir())) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Store.open(killed).groups()[0]
    assert not partial.meta.complete and 0 < len(partial.done_units()) < 6

    resumed = calib_cli("--store", killed, *args, prompts, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ref, got = read_calib(reference), read_calib(killed)
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)


def write_foreign_store(path, preset="sd3-medium-random", version=None):
    Store.create(path, ModelIdentity(preset, "0123456789abcdef"))
    if version:
        meta = path / "zarr.json"
        record = json.loads(meta.read_text())
        record["attributes"]["taq"]["schema_version"] = version
        meta.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--model", "sd4"), "unknown model preset 'sd4'"),
        (("--num-steps", "0"), "--num-steps must be at least 1"),
        (("--num-images", "0"), "--num-images must be at least 1"),
        (("--model", "sd3-medium", "--local-ckpt", "/nonexistent.safetensors"), "--local-ckpt"),
        (("--resume", "--overwrite"), "exclude each other"),
    ],
    ids=["unknown-preset", "zero-steps", "zero-images", "sd3-no-weights", "resume-overwrite"],
)
def test_bad_flags_exit_2_with_one_line(calib_cli, tmp_path, args, message):
    out = calib_cli("--store", tmp_path / "s.zarr", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_bad_prompt_lists_accepted_prompts(calib_cli, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("digit 3\na cat\n")
    out = calib_cli("--store", tmp_path / "s.zarr", "--prompts", prompts)
    assert out.returncode == 2
    assert "digit 0" in out.stderr and "digit 9" in out.stderr and "a cat" in out.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_empty_prompt_file(calib_cli, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n  \n")
    out = calib_cli("--store", tmp_path / "s.zarr", "--prompts", prompts)
    assert out.returncode == 2 and "is empty" in out.stderr


def test_store_of_another_model(calib_cli, tmp_path):
    write_foreign_store(tmp_path / "s.zarr")
    out = calib_cli("--store", tmp_path / "s.zarr", *SMALL)
    assert out.returncode == 2 and "sd3-medium-random" in out.stderr and "--store" in out.stderr


def test_store_of_unknown_schema_version(calib_cli, tmp_path):
    write_foreign_store(tmp_path / "s.zarr", preset="tiny-digits", version="9.0")
    out = calib_cli("--store", tmp_path / "s.zarr", *SMALL)
    assert out.returncode == 2 and "9." in out.stderr


def test_unwritable_store_path(calib_cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = calib_cli("--store", blocker / "s.zarr", *SMALL)
    assert out.returncode == 2 and "--store" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_flux_family_calibrates_with_its_schedule_and_no_cfg(calib_cli, tmp_path):
    from taq_model.presets import load_preset

    store = tmp_path / "flux.zarr"
    out = calib_cli("--store", store, "--model", "flux-schnell-tiny", "--num-images", "2")
    assert out.returncode == 0, out.stderr
    data = read_calib(store)
    handle = load_preset("flux-schnell-tiny")
    assert data["latents"].shape == (2, 4, 8, 8, 16)  # FLUX.1-schnell's 4 steps
    np.testing.assert_array_equal(data["sigmas"], np.array(handle.sigmas(4)))
    assert data["sigmas"][-1] == 0 and data["sigmas"][-2] > 0  # FluxSampler's, not SD3's
    assert data["cond_tokens"].shape[-2:] == (256, 4096)  # T5 tokens at FLUX's width
    final = np.array(handle.generate([data["prompts"][0]], [int(data["seeds"][0])])[0])
    np.testing.assert_allclose(data["final_latents"][0], final, rtol=1e-5, atol=1e-5)
