"""The block I/O cache: replaying a block reproduces what it produced during sampling."""

import numpy as np

from taq_hooks import hook_blocks, replay_block
from taq_io import Store
from taq_model.taxonomy import block_names, get_block
from taq_run.runs import forward_calibration


def test_replay_reproduces_every_block_with_two_prompts(digits, calib_store):
    store = Store.open(calib_store)
    calib = store.require_group("calib")
    names = block_names(digits.mmdit)
    with hook_blocks(digits.mmdit, names) as hooks:
        for forward in forward_calibration(digits, calib, images=[0, 1], steps=[0, 3]):
            hooks.flush(forward.output)
    calls = {name: hooks[name].flush() for name in names}
    digits.reload_modulation_weights()
    for name in names:
        assert len(calls[name]) == 4  # 2 images (prompts 'digit 2', 'digit 7') x 2 steps
        for call in calls[name]:
            replayed = replay_block(get_block(digits.mmdit, name), call)
            for got, want in zip(replayed, call.outputs, strict=True):
                if want is None:
                    assert got is None
                    continue
                want = np.array(want)
                err = np.abs(np.array(got) - want).max() / np.abs(want).max()
                assert err < 1e-6, (name, err)


def test_cache_holds_float16_copies_of_the_fp_block_io(digits, cached_store):
    store = Store.open(cached_store)
    group = store.require_group("blockio", "mm1")
    assert group.total_units == 3 * 3 * 2  # images x (6 steps / stride 2) x CFG halves
    assert group.read("image_in").shape == (18, 64, 128)
    assert group.read("step_index").tolist()[:4] == [0, 0, 2, 2]
    last = store.require_group("blockio", "mm3")
    assert last.read("text_out").shape == (18, 0, 128)  # the last block's text is unused
    mod = group.read("image_modulation")
    assert mod.shape == (18, 6 * 128) and np.isfinite(mod).all()
    # the two CFG halves of a pass see the same latents but different conditioning
    image_in = group.read("image_in")
    assert np.abs(image_in[0] - image_in[1]).max() > 0
