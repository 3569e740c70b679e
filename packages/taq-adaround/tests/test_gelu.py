"""The fused GELU of reconstruction: exact GELU to float32 rounding, and the rounding it
trains on one block is the one the model's own GELU trains."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_adaround.gelu import FusedGELU, fused_gelu, gelu
from taq_adaround.layers import install_adaround, restore_linears
from taq_adaround.optimize import load_block_data
from taq_adaround.reconstruct import AdaRoundConfig, set_mode, train_rounding
from taq_io import Store
from taq_model.taxonomy import block_layers, block_streams, get_block, get_module


def test_gelu_and_its_gradient_equal_exact_gelu_within_float32_rounding():
    x = mx.linspace(-10, 10, 200_001)
    assert mx.abs(gelu(x) - nn.gelu(x)).max().item() < 5e-7
    exact = mx.grad(lambda x: nn.gelu(x).sum())(x)
    fused = mx.grad(mx.compile(lambda x: gelu(x).sum()))(x)
    assert mx.abs(fused - exact).max().item() < 5e-7


def test_fused_gelu_swaps_every_exact_gelu_and_restores_it(digits):
    block = get_block(digits.mmdit, "mm1")
    path = "image_transformer_block.mlp.act_fn"
    original = get_module(block, path)
    with fused_gelu(block):
        assert isinstance(get_module(block, path), FusedGELU)
    assert get_module(block, path) is original


def test_training_with_the_fused_gelu_gives_the_losses_and_codes_of_exact_gelu(
    digits, cached_store
):
    data = load_block_data(Store.open(cached_store), "mm1")
    config = AdaRoundConfig(iters=60, batch_size=8)
    block, streams = get_block(digits.mmdit, "mm1"), block_streams(digits.mmdit, "mm1")
    refs = block_layers(digits.mmdit, "mm1")
    runs = []
    for fused in (False, True):
        layers = install_adaround(digits.mmdit, refs, config.weight_config, config.bits_a)
        try:
            set_mode(layers, "soft")
            rng = np.random.RandomState(config.seed)
            if fused:
                with fused_gelu(block):
                    losses = train_rounding(block, streams, layers, data, config, rng)
            else:
                losses = train_rounding(block, streams, layers, data, config, rng)
            codes = {k: np.array(layer.codes("adaround")) for k, layer in layers.items()}
            runs.append((losses, codes))
        finally:
            restore_linears(digits.mmdit, refs, layers)
    (exact_losses, exact_codes), (fused_losses, fused_codes) = runs
    np.testing.assert_allclose(fused_losses, exact_losses, rtol=1e-4)
    for name, codes in exact_codes.items():
        np.testing.assert_array_equal(fused_codes[name], codes, err_msg=name)
