"""Round-to-nearest on the method's grid: the baseline every other weight method is
judged against (`taq eval`'s claims, the sweep's pairs), and the cheapest."""

from __future__ import annotations

import time

import mlx.nn as nn

from taq_adaround.layers import install_adaround, packed_layer
from taq_adaround.reconstruct import (
    BlockData,
    block_mse,
    restoring,
    set_mode,
    stream_modulation,
)
from taq_model.taxonomy import block_layers, block_streams, get_block
from taq_run.weight_methods import WeightMethod
from taq_run.weights import BlockWeights, GridConfig


def rtn_weights(mmdit: nn.Module, block_name: str, data: BlockData, config: GridConfig):
    """The method's per-block entry (`taq_run.weight_methods`): every weight rounded to
    the nearest point of its grid (with `bits_a`, each layer's static input scale min-max
    over every cached sample); the block's output error measured on the cached samples."""
    start = time.perf_counter()
    refs = block_layers(mmdit, block_name)
    streams = block_streams(mmdit, block_name)
    block = get_block(mmdit, block_name)
    layers = install_adaround(mmdit, refs, config.weight_config, config.bits_a)
    with stream_modulation(block), restoring(mmdit, refs, layers):
        set_mode(layers, "rtn")
        if config.bits_a:
            for layer in layers.values():
                layer.observe = True
            block_mse(block, streams, data)
            for layer in layers.values():
                layer.observe = False
                layer.init_act_scale()
        mse = block_mse(block, streams, data)
    packed = [
        packed_layer(
            ref,
            layers[ref.name].codes("rtn"),
            layers[ref.name].grid,
            layers[ref.name].act_scale.item() if config.bits_a else 0.0,
        )
        for ref in refs
    ]
    return BlockWeights(packed, mse, mse, time.perf_counter() - start)


METHOD = WeightMethod(
    name="rtn",
    label="RTN",
    config=GridConfig,
    quantize_block=rtn_weights,
    summary="round every weight to the nearest point of its grid (the baseline)",
    order=10,
)
