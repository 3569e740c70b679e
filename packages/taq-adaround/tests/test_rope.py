"""FLUX's MM blocks (rotary positions) through the block cache and AdaRound reconstruction.

Unified blocks are not cached yet; this covers the RoPE half of FLUX-like models."""

from taq_model.presets import load_preset
from taq_model.runs import forward_calibration
from taq_model.taxonomy import block_streams, get_block

import numpy as np
import pytest

from taq_adaround.optimize import load_block_data
from taq_adaround.reconstruct import _forward, positional_encodings
from taq_calib import CalibConfig, calibrate
from taq_hooks import hook_blocks
from taq_io import Store

BLOCKS = "mm0,mm1"


@pytest.fixture(scope="module")
def flux(tmp_path_factory, cli):
    handle = load_preset("flux-schnell-tiny")
    path = tmp_path_factory.mktemp("flux") / "run.zarr"
    config = CalibConfig(
        model=handle.name, prompts=("a cat", "a dog"), num_images=2, num_steps=4, cfg=0.0
    )
    calibrate(handle, Store.create(path, handle.identity), config)
    out = cli("cache", "--store", path, "--blocks", BLOCKS)
    assert out.returncode == 0, out.stderr
    handle.reload_modulation_weights()
    return handle, path


def test_rebuilt_rope_table_is_what_sampling_passed_and_replays_exactly(flux):
    handle, path = flux
    store = Store.open(path)
    with hook_blocks(handle.mmdit, ["mm1"]) as hooks:
        for forward in forward_calibration(handle, store.require_group("calib"), [1], [2]):
            hooks.flush(forward.output)
    (call,) = hooks["mm1"].flush()
    handle.reload_modulation_weights()
    data = load_block_data(store, "mm1")
    rope = positional_encodings(handle.mmdit, data.text_in.shape[1], handle.latent_shape)
    np.testing.assert_array_equal(np.array(rope), np.array(call.kwargs["positional_encodings"]))
    assert positional_encodings(load_preset("tiny-digits").mmdit, 4, (16, 16, 1)) is None

    image_in, text_in = (x[:, :, 0, :] for x in call.args[:2])
    modulation = [call.modulation[s].reshape(1, -1) for s in ("image", "text")]
    batch = (image_in, text_in, *modulation, *(x[:, :, 0, :] for x in call.outputs))
    block, streams = get_block(handle.mmdit, "mm1"), block_streams(handle.mmdit, "mm1")
    got = _forward(block, streams, (*batch, rope))
    for out, want in zip(got, batch[4:], strict=True):
        assert np.abs(np.array(out) - np.array(want)).max() <= 1e-6 * np.abs(want).max()
    with pytest.raises(AssertionError):  # DiffusionKit's RoPE blocks insist on the table
        _forward(block, streams, batch)
    # the cache holds the same sample (image 1, step 2) in float16
    sample = int(np.flatnonzero((data_index(store) == (1, 2)).all(axis=1))[0])
    np.testing.assert_allclose(data.image_out[sample], batch[4][0], rtol=1e-2, atol=1e-3)


def data_index(store):
    group = store.require_group("blockio", "mm1")
    return np.stack([group.read("image_index"), group.read("step_index")], axis=1)


def test_optimize_learns_flux_mm_blocks_better_than_rtn(flux, cli):
    _, path = flux
    out = cli("optimize", "--store", path, "--blocks", "mm1", "--iters", "30", "--batch-size", "8")
    assert out.returncode == 0, out.stderr
    store = Store.open(path)
    ada, rtn = store.require_group("weights", "adaround"), store.require_group("weights", "rtn")
    assert ada.read("block_names").tolist() == ["mm1"]
    assert (ada.read("mse") < rtn.read("mse")).all()
    # FLUX's last MM block feeds unified blocks: its text stream keeps every layer
    assert ada.read("present").all()


def test_unified_blocks_are_refused_in_one_line_before_any_work(flux, cli):
    _, path = flux
    out = cli("cache", "--store", path, "--blocks", "mm0,uni0", "--overwrite")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "unified blocks (uni0) are not cached yet" in line
    Store.open(path).require_group("blockio", "mm0")  # still complete: nothing lost
