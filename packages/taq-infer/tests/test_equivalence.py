"""Packed W4 sampling equals sampling with the dequantized weights, act quant off and on."""

import mlx.core as mx
import pytest

from taq_infer import PackedLinear, load_weight_set
from taq_infer.packed import DequantizedLinear
from taq_infer.testing import STEPS, activation_plan, packed_weights, relative_error
from taq_model.testing import tiny_random_handle


def _reference(model):
    """Swap every PackedLinear for a float32 nn.Linear holding its dequantized weight."""
    from mlx.utils import tree_unflatten

    from taq_model.taxonomy import quantizable_layers

    refs = {r.name: r for r in quantizable_layers(model.handle.mmdit)}
    model.handle.mmdit.update_modules(
        tree_unflatten(
            [
                (refs[n].path, DequantizedLinear.from_packed(layer))
                for n, layer in model.layers.items()
            ]
        )
    )


def _run(act, kernel, reference):
    handle = tiny_random_handle(seed=3)
    weights = packed_weights(handle)
    plan = activation_plan(handle) if act == "timestep" else None
    model = load_weight_set(handle, weights, act=act, plan=plan)
    PackedLinear.kernel = kernel
    model.prepare(STEPS)  # binds the plan (and folds SmoothQuant) before any swap
    if reference:
        _reference(model)
    latents = model.generate(["a cat", "a dog"], [0, 1], STEPS, cfg=4.0)
    return latents, model


@pytest.mark.parametrize("act", ["none", "static", "timestep"])
def test_packed_sampling_equals_dequantized_reference(act):
    packed, model = _run(act, "dequantize", reference=False)
    reference, _ = _run(act, "dequantize", reference=True)
    assert model.context.steps_seen == list(range(STEPS)) * 2
    assert relative_error(packed, reference) <= 1e-6


@pytest.mark.parametrize("act", ["none", "timestep"])
def test_mlx_quantized_matmul_kernel_agrees_with_the_reference(act):
    # MLX's W4 kernel (Metal's path) sums in another order: float32 rounding level only
    packed, _ = _run(act, "quantized", reference=False)
    reference, _ = _run(act, "dequantize", reference=True)
    assert relative_error(packed, reference) <= 1e-6


def test_quantization_changes_the_output_measurably():
    handle = tiny_random_handle(seed=3)
    fp = handle.generate(["a cat"], [0], STEPS, 4.0)
    packed, _ = _run("timestep", "dequantize", reference=False)
    error = relative_error(packed[:1], fp)
    assert 1e-4 < error < 1.0
    assert mx.all(mx.isfinite(packed)).item()
