"""Packed weights and activation plans for tests of taq-infer and its users (no store).

`packed_weights` exports W4 codes through taq-quant's bit-exact `export_quantized_linear`,
as taq-adaround does; `activation_plan` makes a per-step A4/A6/A8 plan with a post-GELU
shift on every fc2 and SmoothQuant on every fc1.
"""

from __future__ import annotations

import numpy as np

from taq_infer.activations import ActivationQuant
from taq_infer.model import ActivationPlan, WeightSet
from taq_model.sampling import timesteps_for
from taq_model.taxonomy import get_module, quantizable_layers
from taq_quant import WeightQuantConfig, export_quantized_linear, minmax_grid, quantize_codes

STEPS = 4


def packed_weights(handle, method="adaround", group_size=64, with_static=True) -> WeightSet:
    """Packed W4 of every layer through taq-quant's bit-exact export (as taq-adaround does),
    with learned-like static activation scales (8-bit, from the weight's input width)."""
    config = WeightQuantConfig(bits=4, group_size=group_size)
    layers, static = {}, {}
    for ref in quantizable_layers(handle.mmdit):
        linear = get_module(handle.mmdit, ref.path)
        grid = minmax_grid(linear.weight, config)
        codes = quantize_codes(linear.weight, grid)
        layers[ref.name] = export_quantized_linear(codes, grid, linear.get("bias"))
        if with_static:
            static[ref.name] = ActivationQuant.static(scale=4.0 / 127, bits=8)
    return WeightSet(method, 4, group_size, layers, static)


def activation_plan(handle, steps=STEPS, smoothing=True, seed=0) -> ActivationPlan:
    """Per-step A4/A6/A8 tiers and scales; post-GELU shift on fc2; SmoothQuant on fc1."""
    rng = np.random.default_rng(seed)
    timesteps = np.array(timesteps_for(handle.sigmas(steps)))[:steps]
    tiers = (8, 6, 4)
    layers = {}
    for ref in quantizable_layers(handle.mmdit):
        width = get_module(handle.mmdit, ref.path).weight.shape[1]
        bits = tuple(tiers[(i + len(ref.name)) % 3] for i in range(steps))
        scale = np.array([6.0 / (2 ** (b - 1) - 1) for b in bits], np.float32)
        shift = smooth = None
        if ref.is_post_gelu:
            shift = rng.uniform(0.0, 0.3, (steps, width)).astype(np.float32)
        if smoothing and ref.role == "mlp.fc1":
            smooth = rng.uniform(0.5, 2.0, width).astype(np.float32)
        layers[ref.name] = ActivationQuant(
            bits, scale, np.zeros(steps, np.float32), True, shift, smooth
        )
    return ActivationPlan(timesteps, layers, smoothing=smoothing)


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
