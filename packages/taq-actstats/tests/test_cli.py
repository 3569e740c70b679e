"""collect -> analyze -> plot from the command line; resume after SIGKILL; refusals."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from taq_io import ModelIdentity, Store
from taq_runtime.testing import HANG_GUARD_S


def one_line_error(out) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_collect_analyze_plot(store_copy, cli, tmp_path):
    out = cli("collect", "--store", store_copy)
    assert out.returncode == 0, out.stderr
    out = cli("analyze", "--store", store_copy)
    assert out.returncode == 0, out.stderr
    assert "A4" in out.stdout and "average" in out.stdout and "simulated" in out.stdout
    config = Store.open(store_copy).require_group("quant_config")
    bits = config.read("bits")
    assert set(np.unique(bits)) <= {4, 6, 8} and bits.shape == (6, 45)
    assert (config.read("scale") > 0).all()
    assert config.meta.config["rule"]["rule"] == "sqnr"
    gelu = config.read("post_gelu")
    stats = Store.open(store_copy).require_group("actstats")
    calib_max = stats.read("absmax").max(axis=0).T  # (step, layer), over images
    np.testing.assert_allclose(config.read("absmax"), calib_max, rtol=1e-6)
    assert config.meta.config["range_method"] == "mse"  # the default: least-error clips
    assert (config.read("quant_absmax")[:, ~gelu] <= calib_max[:, ~gelu] * (1 + 1e-6)).all()
    out = cli("analyze", "--store", store_copy, "--range-method", "max", "--overwrite")
    assert out.returncode == 0, out.stderr
    widest = Store.open(store_copy).require_group("quant_config")
    assert "range_method" not in widest.meta.config  # max: configs hash as before mse
    np.testing.assert_allclose(widest.read("quant_absmax")[:, ~gelu], 1.5 * calib_max[:, ~gelu])
    out = cli("analyze", "--store", store_copy, "--rule", "absolute", "--overwrite")
    assert out.returncode == 0, out.stderr
    paper = Store.open(store_copy).require_group("quant_config")
    assert paper.meta.config["rule"]["gelu_a4"] == 5.0
    assert paper.read("bits").mean() < bits.mean()  # TaQ-DiT's thresholds: mostly A4 here
    out = cli("plot", "--store", store_copy, "--out", tmp_path / "plots", "--quant-config")
    assert out.returncode == 0, out.stderr
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert pngs == ["heatmap.png", "snapshot.png", "temporal.png", "variability.png"]
    distributions = ("--plot-distributions", "--layers", "mm1.*.mlp.fc2")
    out = cli("plot", "--store", store_copy, "--out", tmp_path / "plots", "--quant-config",
              "--snapshot-steps", "0,5", *distributions)  # fmt: skip
    assert out.returncode == 0, out.stderr
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert sorted(p.name for p in pngs if "-mm" in p.name) == [
        "channels-mm1.image.mlp.fc2.png",
        "channels-mm1.text.mlp.fc2.png",
        "histograms-mm1.image.mlp.fc2.png",
        "histograms-mm1.text.mlp.fc2.png",
    ]
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32)
        assert pixels.std() > 5, png.name  # not blank
    snapshot = Image.open(tmp_path / "plots" / "snapshot.png")
    assert snapshot.height > 600  # one row per snapshot step
    for args, message in (
        (("--snapshot-steps", "9"), "--snapshot-steps 9 is not a stored step: use 0..5"),
        (("--snapshot-steps", "a,b"), "is not a list of step indices"),
        (("--layers", "mm1.*"), "add --plot-distributions"),
        (("--plot-distributions", "--layers", "zz*"), "matches no layer"),
    ):
        error = one_line_error(cli("plot", "--store", store_copy, *args))
        assert message in error


def test_sigkill_then_resume_is_identical(calib_store, cli, tmp_path):
    import shutil

    reference, killed = tmp_path / "ref.zarr", tmp_path / "killed.zarr"
    shutil.copytree(calib_store, reference)
    shutil.copytree(calib_store, killed)
    assert cli("collect", "--store", reference).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "taq_actstats", "collect", "--store", str(killed)]
    )
    done = killed / "actstats" / "done" / "c"
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not (done.exists() and any(done.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cli("collect", "--store", killed, "--resume").returncode == 0
    a = Store.open(reference).require_group("actstats")
    b = Store.open(killed).require_group("actstats")
    for name in a.spec.unit_arrays():
        np.testing.assert_array_equal(a.read(name), b.read(name), err_msg=name)


def test_missing_calib_names_the_command(calib_store, cli, tmp_path):
    bare = tmp_path / "bare.zarr"
    Store.create(bare, Store.open(calib_store).model)
    assert "taq-calib" in one_line_error(cli("collect", "--store", bare))
    assert "taq-actstats collect" in one_line_error(cli("analyze", "--store", bare))


def test_store_of_another_model_or_schema(cli, tmp_path):
    other = tmp_path / "other.zarr"
    Store.create(other, ModelIdentity("tiny-digits", "0123456789abcdef"))  # other weights
    error = one_line_error(cli("collect", "--store", other))
    assert "0123456789abcdef" in error and "taq-calib" in error
    meta = other / "zarr.json"
    record = json.loads(meta.read_text())
    record["attributes"]["taq"]["schema_version"] = "7.0"
    meta.write_text(json.dumps(record))
    assert "7." in one_line_error(cli("collect", "--store", other))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--layers", "mm9.*"), "selects no quantizable layer"),
        (("--num-images", "9"), "--num-images must be in 1..3"),
        (("--resume", "--overwrite"), "exclude each other"),
    ],
    ids=["empty-layers", "too-many-images", "resume-overwrite"],
)
def test_bad_flags(store_copy, cli, args, message):
    assert message in one_line_error(cli("collect", "--store", store_copy, *args))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--range-margin", "0.5"), "--range-margin 0.5 clips the calibration range"),
        (("--rule", "paper"), "invalid choice: 'paper'"),
    ],
    ids=["margin-below-one", "unknown-rule"],
)
def test_bad_analyze_flags(store_copy, cli, args, message):
    out = cli("analyze", "--store", store_copy, *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr
