"""AdaRound optimisation: hard codes, exact export, better than RTN, resume, refusals."""

import shutil
import signal
import subprocess
import sys
import time

import mlx.core as mx
import numpy as np
import pytest

from taq_adaround.layers import install_adaround, restore_linears
from taq_adaround.optimize import load_block_data
from taq_adaround.reconstruct import AdaRoundConfig, adaround_block, make_train_step, set_mode
from taq_io import Store
from taq_model.taxonomy import block_layers, block_streams, get_block, get_layer
from taq_quant import export_quantized_linear
from taq_quant.quantizer import scaled_weight
from taq_runtime.testing import HANG_GUARD_S

FAST = ("--iters", "60", "--batch-size", "8")


def test_learned_rounding_is_hard_and_exports_exactly(digits, cached_store):
    data = load_block_data(Store.open(cached_store), "mm1")
    result = adaround_block(digits.mmdit, "mm1", data, AdaRoundConfig(iters=60, batch_size=8))
    assert result.adaround_mse < result.rtn_mse
    for name, layer in result.layers.items():
        layer.mode = "hard"
        codes = np.array(layer.codes("adaround")).astype(np.float32)
        real = np.array(scaled_weight(layer.weight, layer.grid)).reshape(codes.shape)
        lo = np.clip(np.floor(real), 0, layer.grid.qmax)
        hi = np.clip(np.ceil(real), 0, layer.grid.qmax)
        assert np.all((codes == lo) | (codes == hi)), name

        packed = export_quantized_linear(layer.codes("adaround"), layer.grid)
        dq = mx.dequantize(packed.weight, packed.scales, packed.biases, packed.group_size, 4)
        np.testing.assert_array_equal(np.array(dq), np.array(layer.quantized_weight()))
    # the model got its own linears back
    assert type(get_layer(digits.mmdit, "mm1.image.mlp.fc2")).__name__ == "Linear"


def test_warmup_step_without_regulariser_is_the_zero_weighted_update(digits, cached_store):
    """The warm-up leaves the regulariser out of the graph (`reg_weight=None`): the same
    rounding logits and activation scales, bit for bit, as weighting it by 0."""
    data = load_block_data(Store.open(cached_store), "mm1")
    config = AdaRoundConfig(iters=10, batch_size=8)
    block, streams = get_block(digits.mmdit, "mm1"), block_streams(digits.mmdit, "mm1")
    refs = block_layers(digits.mmdit, "mm1")
    trained = []
    for reg_weight in (None, mx.array(0.0)):
        layers = install_adaround(digits.mmdit, refs, config.weight_config, config.bits_a)
        try:
            set_mode(layers, "soft")
            initial = {k: np.array(layer.v) for k, layer in layers.items()}
            step, state = make_train_step(block, streams, layers, config, compile_step=True)
            for it in range(4):
                step(data.batch(np.arange(it, it + 8)), mx.array(20.0), reg_weight)
                mx.eval(state)
            trained.append({k: (np.array(v.v), np.array(v.act_scale)) for k, v in layers.items()})
        finally:
            restore_linears(digits.mmdit, refs, layers)
    for name, (v, act) in trained[0].items():
        assert not np.array_equal(v, initial[name]), name  # the steps did train
        np.testing.assert_array_equal(v, trained[1][name][0], err_msg=name)
        np.testing.assert_array_equal(act, trained[1][name][1], err_msg=name)


def test_micro_batches_give_the_whole_batchs_update(digits, cached_store):
    """`--micro-batch` sums the gradient over micro-batches (here 3 + 3 + 2 samples, the
    regulariser once): the same losses and trained variables as one pass over the batch,
    to float32 summation order."""
    data = load_block_data(Store.open(cached_store), "mm1")
    block, streams = get_block(digits.mmdit, "mm1"), block_streams(digits.mmdit, "mm1")
    refs = block_layers(digits.mmdit, "mm1")
    trained, losses = [], []
    for micro_batch in (0, 3):
        config = AdaRoundConfig(iters=10, batch_size=8, micro_batch=micro_batch)
        layers = install_adaround(digits.mmdit, refs, config.weight_config, config.bits_a)
        try:
            for layer in layers.values():
                layer.act_scale = mx.array(0.5)
            set_mode(layers, "soft")
            step, state = make_train_step(block, streams, layers, config, compile_step=True)
            run = []
            for it, reg_weight in enumerate((None, None, mx.array(0.01), mx.array(0.01))):
                loss, rec = step(data.batch(np.arange(it, it + 8)), mx.array(20.0), reg_weight)
                mx.eval(loss, rec, state)
                run.append((loss.item(), rec.item()))
            losses.append(run)
            trained.append({k: (np.array(v.v), np.array(v.act_scale)) for k, v in layers.items()})
        finally:
            restore_linears(digits.mmdit, refs, layers)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for name, (v, act) in trained[0].items():
        np.testing.assert_allclose(trained[1][name][0], v, rtol=0, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(trained[1][name][1], act, rtol=1e-5, err_msg=name)


def test_optimize_writes_weights_better_than_rtn(cached_store, tmp_path, cli, against_rtn):
    path = tmp_path / "run.zarr"
    shutil.copytree(cached_store, path)
    out = cli("optimize", "--store", path, "--blocks", "mm0,mm3", *FAST)
    assert out.returncode == 0, out.stderr
    assert "AdaRound MSE" in out.stdout and "weights/adaround" in out.stdout
    out = cli("rtn", "--store", path, "--blocks", "mm0,mm3", "--bits-a", "8")
    assert out.returncode == 0, out.stderr
    store = Store.open(path)
    ada, rtn = store.require_group("weights", "adaround"), store.require_group("weights", "rtn")
    assert ada.read("block_names").tolist() == ["mm0", "mm3"]
    against_rtn(ada.read("mse"), ada.read("rtn_mse"), total_at_most=0.99)
    assert np.isfinite(rtn.read("fc2_act_scale")[:, 0]).all()  # RTN's own A8 scales, min-max
    present = ada.read("present")
    assert present[0].all() and present[1, 1].tolist() == [1, 1, 1, 0, 0, 0]
    assert ada.read("q_proj_weight").dtype == np.uint32
    assert ada.read("fc1_weight").shape == (2, 2, 512, 128 * 4 // 32)
    assert np.isfinite(ada.read("fc2_act_scale")[:, 0]).all()


def test_kill_mid_block_then_resume(cached_store, tmp_path, cli):
    path = tmp_path / "run.zarr"
    shutil.copytree(cached_store, path)
    args = [
        "optimize",
        "--store",
        str(path),
        "--blocks",
        "mm0,mm1",
        "--iters",
        "200",
        "--batch-size",
        "8",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "taq_adaround", *args])
    done = path / "weights" / "adaround" / "done" / "c"
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not (done.exists() and any(done.iterdir())):
        time.sleep(0.1)
    time.sleep(1.0)  # well inside the second block
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = Store.open(path).groups()
    ada = next(g for g in partial if g.path == "weights/adaround")
    assert not ada.meta.complete and ada.done_mask().tolist() == [True, False]
    first_seconds = ada.read("seconds", [0])
    out = cli(*args[:-4], "--iters", "200", "--batch-size", "8", "--resume")
    assert out.returncode == 0, out.stderr
    assert "mm0" not in out.stdout.split("AdaRound MSE")[1]  # block 0 was not redone
    ada = Store.open(path).require_group("weights", "adaround")
    np.testing.assert_array_equal(ada.read("seconds", [0]), first_seconds)
    assert np.isfinite(ada.read("mse")).all()


def one_line_error(out) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--blocks", "mm9"), "unknown block(s) mm9: this model has mm0, mm1, mm2, mm3"),
        (("--bits-w", "9"), "--bits-w 9 is not supported"),
        (("--bits-w", "7"), "--bits-w 7 is not supported"),
        (("--group-size", "48"), "48"),
        (("--bits-a", "12"), "--bits-a must be"),
    ],
    ids=["unknown-block", "bits-9", "bits-7", "group-48", "bits-a-12"],
)
def test_bad_flags(cached_store, tmp_path, cli, args, message):
    path = tmp_path / "run.zarr"
    shutil.copytree(cached_store, path)
    assert message in one_line_error(cli("optimize", "--store", path, *FAST, *args))


def test_missing_stages_name_the_command(calib_store, tmp_path, cli):
    bare = tmp_path / "empty.zarr"
    Store.create(bare, Store.open(calib_store).model)
    assert "taq-calib" in one_line_error(cli("cache", "--store", bare))
    path = tmp_path / "run.zarr"
    shutil.copytree(calib_store, path)
    assert "taq-adaround cache" in one_line_error(cli("optimize", "--store", path, *FAST))


def test_nan_in_cached_data_is_refused(cached_store, tmp_path, cli):
    path = tmp_path / "run.zarr"
    shutil.copytree(cached_store, path)
    import zarr

    array = zarr.open_array(str(path / "blockio" / "mm0" / "image_in"), mode="r+")
    array[0, 0, 0] = np.nan
    error = one_line_error(cli("optimize", "--store", path, "--blocks", "mm0", *FAST))
    assert "NaN" in error and "taq-adaround cache" in error
