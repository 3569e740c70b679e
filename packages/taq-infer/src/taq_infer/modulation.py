"""The adaLN modulation linears: what sampling reloads, and their optional RTN quantization.

DiffusionKit's modulation caching (`taq_model.blocks`) empties every adaLN linear after
computing the modulation for one prompt, and taq's sampler puts them back from the handle's
source (`ModelHandle.modulation_weights`) before the next one. When the in-memory adaLN differs
from that source (cast to float16, quantized, or read from an exported checkpoint), the
source must be the in-memory arrays: `pin_modulation` makes it so.

The adaLN linears are a third of an MMDiT's parameters (tiny-digits: 0.76 M of 2.31 M;
SD3-Medium about the same share), so a deployable checkpoint quantizes them too, as
DiffusionKit's own 4-bit checkpoints do: `quantize_modulation` rounds them to nearest on
MLX's affine grid (`nn.QuantizedLinear`). TaQ-DiT's AdaRound and activation plan never
touch them.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from taq_model.blocks import is_modulation_linear, modulation_parameters
from taq_model.presets import ModelHandle


def pin_modulation(handle: ModelHandle) -> None:
    """Make the arrays the adaLN linears hold now the ones sampling reloads after caching."""
    items = modulation_parameters(handle.mmdit)
    handle.modulation_weights = lambda: list(items)  # instance attribute: shadows the source


def quantize_modulation(handle: ModelHandle, bits: int, group_size: int) -> list[str]:
    """Round every adaLN linear to nearest at `bits` (MLX's `nn.quantize`), in place.

    Returns the module paths quantized. Scales and biases take the weights' dtype.
    """
    modules = handle.mmdit.named_modules()
    paths = [path for path, module in modules if is_modulation_linear(path, module)]
    nn.quantize(
        handle.mmdit,
        group_size=group_size,
        bits=bits,
        class_predicate=is_modulation_linear,
    )
    mx.eval(handle.mmdit.parameters())
    pin_modulation(handle)
    return sorted(paths)
