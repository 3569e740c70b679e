"""GPTQ: the column loop against a direct, unoptimised one, better than RTN, and the
method through the registry (a real block on the block I/O cache, resumable per block)."""

import shutil

import numpy as np
import pytest

from taq_adaround.gptq import GPTQConfig, gptq_codes
from taq_io import STALE, Store
from taq_run.weights import read_layers, require_weights


def _dampened(hessian: np.ndarray, damp: float) -> np.ndarray:
    h = hessian.copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    return h + damp * np.mean(np.diag(h)) * np.eye(len(h))


def reference_codes(weight, hessian, scale, bias, bits, damp):
    """GPTQ's column loop as the paper's equations state it, one column at a time: round
    column i, spread its error over the later columns through `H⁻¹`, then drop column i
    from `H⁻¹` by one step of Gaussian elimination (no Cholesky, no lazy batches)."""
    w = weight.astype(np.float64).copy()
    hinv = np.linalg.inv(_dampened(hessian.astype(np.float64), damp))
    codes = np.zeros(w.shape)
    for i in range(w.shape[1]):
        codes[:, i] = np.clip(np.round((w[:, i] - bias[:, i]) / scale[:, i]), 0, 2**bits - 1)
        error = (w[:, i] - (codes[:, i] * scale[:, i] + bias[:, i])) / hinv[i, i]
        w[:, i + 1 :] -= np.outer(error, hinv[i, i + 1 :])
        hinv = hinv - np.outer(hinv[:, i], hinv[i, :]) / hinv[i, i]
    return codes


def _layer(seed: int, out: int = 48, width: int = 192, tokens: int = 512):
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(out, width)) / np.sqrt(width)
    mixing = rng.normal(size=(width, width)) * 0.3 + np.eye(width)  # correlated inputs
    x = rng.normal(size=(tokens, width)) @ mixing
    x[:, 5] = 0.0  # a dead input column
    low = weight.reshape(out, -1, 64).min(-1)
    high = weight.reshape(out, -1, 64).max(-1)
    scale = np.repeat((high - low) / 15, 64, axis=1)
    bias = np.repeat(low, 64, axis=1)
    return weight, x, scale, bias


def _output_error(weight, codes, scale, bias, x) -> float:
    return float(np.sum((x @ (weight - (codes * scale + bias)).T) ** 2))


@pytest.mark.parametrize("block_columns", [1, 32, 128, 1000], ids=lambda b: f"lazy{b}")
def test_column_loop_matches_the_direct_one_and_beats_rtn(block_columns):
    weight, x, scale, bias = _layer(0)
    hessian = x.T @ x
    codes = gptq_codes(weight, hessian, scale, bias, 4, 0.01, block_columns)
    reference = reference_codes(weight, hessian, scale, bias, 4, 0.01)
    ours = _output_error(weight, codes, scale, bias, x)
    direct = _output_error(weight, reference, scale, bias, x)
    rtn = _output_error(weight, np.clip(np.round((weight - bias) / scale), 0, 15), scale, bias, x)
    assert ours == pytest.approx(direct, rel=1e-6)
    assert np.mean(codes == reference) > 0.999
    assert ours < 0.8 * rtn
    assert codes.dtype == np.uint8 and codes.max() <= 15


def test_act_order_matches_the_direct_loop_on_permuted_columns():
    weight, x, scale, bias = _layer(1)
    hessian = x.T @ x
    h = _dampened(hessian, 0.01)
    order = np.argsort(-np.diag(h), kind="stable")
    codes = gptq_codes(weight, hessian, scale, bias, 3, 0.01, 32, act_order=True)
    permuted = reference_codes(
        weight[:, order], hessian[np.ix_(order, order)], scale[:, order], bias[:, order], 3, 0.01
    )
    np.testing.assert_allclose(
        _output_error(weight, codes, scale, bias, x),
        _output_error(weight[:, order], permuted, scale[:, order], bias[:, order], x[:, order]),
        rtol=1e-6,
    )


def test_config_refuses_bad_flags():
    with pytest.raises(ValueError, match="--damp must be in"):
        GPTQConfig(damp=0.0)
    with pytest.raises(ValueError, match="--block-columns"):
        GPTQConfig(block_columns=0)


def test_stage_writes_gptq_weights_better_than_rtn_in_mlx_format(cached_store, tmp_path, cli):
    """`taq-adaround gptq` (the method through the registry): every block's output error
    below round-to-nearest's on the same grid, codes on that grid (same scales and biases as
    `taq-adaround rtn`), a rerun redoes nothing, and new block I/O makes the weights stale."""
    path = tmp_path / "run.zarr"
    shutil.copytree(cached_store, path)
    for command in ("gptq", "rtn"):
        out = cli(command, "--store", path, "--bits-w", "3")
        assert out.returncode == 0, out.stderr
    assert "GPTQ MSE" in cli("gptq", "--store", path, "--overwrite", "--bits-w", "3").stdout
    store = Store.open(path)
    gptq, rtn = require_weights(store, "gptq"), require_weights(store, "rtn")
    assert (gptq.read("mse") < 0.9 * rtn.read("mse")).all()
    np.testing.assert_allclose(gptq.read("rtn_mse"), rtn.read("mse"), rtol=1e-4)
    layers = dict(read_layers(rtn))
    for name, layer in read_layers(gptq):
        np.testing.assert_array_equal(layer.scales, layers[name].scales, err_msg=name)
        np.testing.assert_array_equal(layer.biases, layers[name].biases, err_msg=name)
        assert layer.weight.dtype == np.uint32 and not np.array_equal(
            layer.weight, layers[name].weight
        )
    again = cli("gptq", "--store", path, "--bits-w", "3", "--resume")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    out = cli("cache", "--store", path, "--stride", "3", "--overwrite")
    assert out.returncode == 0, out.stderr
    assert Store.open(path).state("weights", "gptq").state == STALE
