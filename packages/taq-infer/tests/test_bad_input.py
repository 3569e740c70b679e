"""Bad input: one clear line and exit code 2, from the real CLI and from the library."""

import subprocess
import sys

import numpy as np
import pytest

from taq_infer import InferenceError, WeightSet, load_weight_set
from taq_infer.cli import main
from taq_infer.model import plan_rows
from taq_infer.testing import STEPS, activation_plan, packed_weights
from taq_io import ModelIdentity, Store
from taq_model.testing import tiny_random_handle
from taq_run.runs import model_identity
from taq_run.weight_methods import weight_methods


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taq_infer", *args],
        capture_output=True,
        text=True,
        env={"TAQ_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"},
    )


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, needle",
    [
        pytest.param(["--store", "S", "--output", "o.png"], "--prompt is required", id="no-prompt"),
        pytest.param(
            ["--store", "S", "--prompt", " ", "--output", "o.png"], "--prompt", id="blank"
        ),
        pytest.param(["--prompt", "digit 3", "--output", "o.png"], "--store", id="no-store"),
        pytest.param(
            ["--store", "S", "--prompt", "digit 3", "--output", "o.png"],
            "no taq store",
            id="missing-store",
        ),
        pytest.param(
            ["--store", "S", "--prompt", "d", "--output", "o.png", "--act", "x"],
            "invalid choice",
            id="bad-act",
        ),
    ],
)
def test_cli_refuses_with_one_line(tmp_path, args, needle):
    args = [str(tmp_path / "none") if a == "S" else a for a in args]
    result = _cli(*args)
    assert result.returncode == 2
    assert needle in _one_error_line(result.stderr)


@pytest.fixture
def tiny_store(tmp_path, monkeypatch):
    """A real store for a tiny random MMDiT, which the CLI builds as its preset."""
    import taq_run.runs

    handle = tiny_random_handle(seed=3)
    monkeypatch.setattr(taq_run.runs, "load_preset", lambda *a, **k: tiny_random_handle(seed=3))
    return Store.create(tmp_path / "run", model_identity(handle))


def test_store_without_weights_names_the_command(tiny_store, tmp_path, capsys):
    code = main(
        ["--store", str(tiny_store.path), "--prompt", "a", "--output", str(tmp_path / "o.png")]
    )
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    installed = weight_methods()  # the stage packages, where this environment has them
    command = installed["adaround"].command if "adaround" in installed else "taq run --weights"
    assert "weights" in line and command in line


def test_store_of_another_model_is_refused(tmp_path, monkeypatch, capsys):
    import taq_run.runs

    monkeypatch.setattr(taq_run.runs, "load_preset", lambda *a, **k: tiny_random_handle(seed=3))
    Store.create(tmp_path / "run", ModelIdentity("tiny-random", "0123456789abcdef"))
    code = main(
        ["--store", str(tmp_path / "run"), "--prompt", "a", "--output", str(tmp_path / "o.png")]
    )
    assert code == 2
    assert "re-run from `taq-calib`" in _one_error_line(capsys.readouterr().err)


def test_weights_of_another_group_size_are_refused():
    handle = tiny_random_handle(seed=3)
    weights = packed_weights(handle, group_size=32)
    wrong = WeightSet(
        "adaround", 4, 64, {name: _relabel(layer, 64) for name, layer in weights.layers.items()}
    )
    with pytest.raises(InferenceError, match="another preset or group size"):
        load_weight_set(handle, wrong)


def _relabel(layer, group_size):
    layer.group_size = group_size  # scales say 32, the record says 64
    return layer


def test_weights_of_another_model_are_refused():
    small = tiny_random_handle(seed=3, hidden=64)
    wide = tiny_random_handle(seed=3, hidden=128)
    with pytest.raises(InferenceError, match="another preset or group size"):
        load_weight_set(wide, packed_weights(small))
    deeper = tiny_random_handle(seed=3, depth=3)
    shallow = tiny_random_handle(seed=3, depth=2)
    with pytest.raises(InferenceError, match="another model preset"):
        load_weight_set(shallow, packed_weights(deeper))


def test_mismatched_timesteps_are_refused_naming_both_fallbacks():
    handle = tiny_random_handle(seed=3)
    model = load_weight_set(
        handle, packed_weights(handle), act="timestep", plan=activation_plan(handle)
    )
    with pytest.raises(InferenceError) as error:
        model.prepare(STEPS + 2)
    message = str(error.value)
    assert f"--steps {STEPS}" in message
    assert "--act-fallback nearest" in message and "--act-fallback static" in message


def test_fallbacks_are_explicit_and_reported():
    plan = activation_plan(tiny_random_handle(seed=3))
    asked = np.linspace(1000, 100, 7)
    rows, note = plan_rows(plan, asked, "nearest")
    assert rows[0] == 0 and rows[-1] == len(plan.timesteps) - 1
    assert list(rows) == sorted(rows) and "nearest" in note
    rows, note = plan_rows(plan, asked, "static")
    assert rows is None and "static" in note


def test_activation_modes_need_their_artifacts():
    handle = tiny_random_handle(seed=3)
    bare = packed_weights(handle, with_static=False)
    with pytest.raises(InferenceError, match="needs a quant_config"):
        load_weight_set(handle, bare, act="timestep")
    handle = tiny_random_handle(seed=3)
    with pytest.raises(InferenceError, match="no learned activation scales"):
        load_weight_set(handle, bare, act="static")
