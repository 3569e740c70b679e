"""The block adapter: a block run on cached inputs (`run_block`) gives what it gave inside the
MMDiT's own forward, for MM and unified blocks with RoPE; modulation is recorded, installed
and restored where DiffusionKit's blocks read it."""

import mlx.core as mx
import numpy as np
import pytest

from taq_model.blocks import (
    cache_modulation,
    call_timestep_key,
    call_tokens,
    clear_modulation,
    forward_block,
    install_modulation,
    modulation_parameters,
    positional_encodings,
    recorded_modulation,
    restore_modulation,
    run_block,
    saved_modulation,
)
from taq_model.families import tiny_family_handle
from taq_model.sampling import timesteps_for
from taq_model.taxonomy import get_block


@pytest.fixture(scope="module")
def flux():
    """FLUX-like tiny model (MM and unified blocks, RoPE) with modulation cached for one
    prompt at two timesteps; the adaLN weights are back after the module's tests."""
    handle = tiny_family_handle("flux-schnell")
    conditioning = handle.encode(["a cat"])
    timesteps = timesteps_for(handle.sigmas(2))[:2]
    cache_modulation(handle.mmdit, conditioning.pooled, timesteps)
    yield handle, conditioning, timesteps
    handle.reload_modulation_weights()
    clear_modulation(handle.mmdit)


def _inputs(handle, conditioning, seed: int):
    """Random image tokens and the prompt's text tokens, `(1, L, 1, D)` as blocks take them."""
    hidden = handle.mmdit.config.hidden_size
    height, width, _ = handle.latent_shape
    patches = (height // 2) * (width // 2)
    image = mx.random.normal((1, patches, 1, hidden), key=mx.random.key(seed))
    text = handle.mmdit.context_embedder(conditioning.tokens)[:, :, None, :]
    return image, text


@pytest.mark.parametrize("name", ["mm0", "uni1"])
def test_run_block_on_cached_inputs_gives_the_blocks_own_output(flux, name):
    handle, conditioning, timesteps = flux
    image, text = _inputs(handle, conditioning, seed=3)
    rope = positional_encodings(handle.mmdit, text.shape[1], handle.latent_shape)
    block = get_block(handle.mmdit, name)
    timestep = timesteps[1:2]
    tokens = (image, text) if name.startswith("mm") else (mx.concatenate([text, image], 1),)
    want = forward_block(block, tokens, timestep, rope)
    key = call_timestep_key(block, (*tokens, timestep), {"positional_encodings": rope})
    assert key == timestep.item()
    modulation = {s: m.reshape(1, -1) for s, m in recorded_modulation(block, key).items()}
    saved = saved_modulation(block)
    image_out, text_out = run_block(block, image[:, :, 0], text[:, :, 0], modulation, rope)
    restore_modulation(block, saved)
    if name.startswith("mm"):
        want_image, want_text = want
    else:
        want_image, want_text = want[:, text.shape[1] :], want[:, : text.shape[1]]
    np.testing.assert_allclose(np.array(image_out), np.array(want_image[:, :, 0]), atol=1e-6)
    np.testing.assert_allclose(np.array(text_out), np.array(want_text[:, :, 0]), atol=1e-6)
    assert set(recorded_modulation(block, timesteps[0].item())) == set(modulation)  # restored


def test_call_tokens_read_positional_and_keyword_calls(flux):
    handle, conditioning, timesteps = flux
    image, text = _inputs(handle, conditioning, seed=4)
    mm, uni = get_block(handle.mmdit, "mm1"), get_block(handle.mmdit, "uni0")
    assert call_tokens(mm, (image, text, timesteps), {}) == (image, text)
    keywords = {"token_level_text_embeddings": text, "timestep": timesteps}
    assert call_tokens(mm, (image,), keywords) == (image, text)
    assert call_tokens(uni, (text,), {"timestep": timesteps}) == (text,)
    assert call_timestep_key(uni, (text, timesteps), {}) == timesteps[0].item()


def test_install_modulation_keeps_the_other_timesteps(flux):
    handle, _, timesteps = flux
    block = get_block(handle.mmdit, "mm1")
    saved = saved_modulation(block)
    before = recorded_modulation(block, timesteps[0].item())
    install_modulation(block, -1.0, {"image": mx.zeros(3), "text": mx.ones(3)})
    assert recorded_modulation(block, -1.0)["text"].tolist() == [1.0, 1.0, 1.0]
    after = recorded_modulation(block, timesteps[0].item())
    assert all(after[stream] is before[stream] for stream in before)
    restore_modulation(block, saved)


def test_caching_empties_the_adaln_parameters_and_reloading_restores_them():
    handle = tiny_family_handle("flux-schnell")
    sizes = [v.size for _, v in modulation_parameters(handle.mmdit)]
    assert sizes and min(sizes) > 0
    cache_modulation(handle.mmdit, handle.encode(["a dog"]).pooled, mx.array([1000.0]))
    assert all(v.size == 0 for _, v in modulation_parameters(handle.mmdit))
    handle.reload_modulation_weights()
    clear_modulation(handle.mmdit)
    assert [v.size for _, v in modulation_parameters(handle.mmdit)] == sizes
