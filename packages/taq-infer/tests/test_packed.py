"""The packed layer holds only packed codes, is frozen, and matches the exported grid."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from taq_infer import PackedLinear, load_weight_set, model_bytes, rtn_weight_set
from taq_infer.testing import packed_weights
from taq_model.taxonomy import get_module, quantizable_layers
from taq_model.testing import tiny_random_handle
from taq_quant import dequantize_linear_weight


def test_packed_layer_holds_only_codes_scales_and_biases():
    handle = tiny_random_handle(seed=3)
    weights = packed_weights(handle)
    model = load_weight_set(handle, weights)
    for name, layer in model.layers.items():
        params = dict(tree_flatten(layer.parameters()))
        assert set(params) <= {"weight", "scales", "biases", "bias"}
        assert params["weight"].dtype == mx.uint32
        assert not tree_flatten(layer.trainable_parameters())
        exported = dequantize_linear_weight(weights.layers[name])
        assert mx.array_equal(layer.dequantized_weight(), exported)
    paths = {ref.path for ref in quantizable_layers(handle.mmdit)}
    assert all(isinstance(get_module(handle.mmdit, p), PackedLinear) for p in paths)


def test_float16_scales_put_w4_under_30_percent_of_float16():
    handle = tiny_random_handle(seed=3, hidden=128)
    fp16_whole = sum(a.size * 2 for a in _float_weights(handle))
    model = load_weight_set(
        handle, rtn_weight_set(handle), scale_dtype=mx.float16, other_dtype=mx.float16
    )
    assert model.layer_bytes() <= 0.30 * model.float16_layer_bytes()
    assert model_bytes(handle.mmdit) < 0.5 * fp16_whole


def _float_weights(handle):
    return [v for k, v in tree_flatten(handle.mmdit.parameters()) if "adaLN_modulation" not in k]


def test_from_linear_round_trips_through_mlx_quantize():
    linear = nn.Linear(128, 32)
    packed = PackedLinear.from_linear(linear, group_size=64, bits=4, scale_dtype=mx.float32)
    q, s, b = mx.quantize(linear.weight, group_size=64, bits=4)
    assert mx.array_equal(packed.dequantized_weight(), mx.dequantize(q, s, b, 64, 4))
    x = mx.random.normal((3, 128))
    PackedLinear.kernel = "quantized"
    fast = packed(x)
    PackedLinear.kernel = "dequantize"
    assert mx.allclose(fast, packed(x), atol=1e-5)
