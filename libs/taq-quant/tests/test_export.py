import mlx.core as mx
import mlx.nn as nn
import pytest

from taq_quant import (
    WeightQuantConfig,
    dequantize_codes,
    dequantize_linear_weight,
    export_quantized_linear,
    hard_codes,
    minmax_grid,
    mlx_group_size,
    mse_grid,
    pack_codes,
    quantize_codes,
    unpack_codes,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
def test_pack_matches_mx_quantize(bits):
    w = mx.random.normal((8, 256), key=mx.random.key(bits))
    packed, scales, biases = mx.quantize(w, 64, bits)
    # codes as MLX sees them: dequantize with unit scales and zero biases
    codes = mx.dequantize(packed, mx.ones_like(scales), mx.zeros_like(biases), 64, bits)
    codes = codes.astype(mx.uint8)
    assert mx.array_equal(pack_codes(codes, bits), packed).item()
    assert mx.array_equal(unpack_codes(packed, bits), codes).item()


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match="exceed 2 bits"):
        pack_codes(mx.full((1, 32), 4, dtype=mx.uint8), 2)


CASES = [(bits, group) for bits in (2, 3, 4, 6, 8) for group in (32, 64, 128, None)]


@pytest.mark.parametrize(("bits", "group"), CASES, ids=[f"w{b}-g{g or 'chan'}" for b, g in CASES])
def test_export_is_bit_exact(bits, group):
    linear = nn.Linear(256, 24)
    config = WeightQuantConfig(bits=bits, group_size=group, scale_method="mse")
    grid = mse_grid(linear.weight, config)
    # learned codes, not RTN: random rounding decisions
    v = mx.random.normal(linear.weight.shape, key=mx.random.key(bits)) * 3
    codes = hard_codes(linear.weight, v, grid)
    layer = export_quantized_linear(codes, grid, linear.bias)

    assert isinstance(layer, nn.QuantizedLinear)
    assert layer.weight.dtype == mx.uint32 and layer.bits == bits and layer.mode == "affine"
    assert layer.group_size == (group or 128)
    assert mx.array_equal(dequantize_linear_weight(layer), dequantize_codes(codes, grid)).item()
    assert set(layer.trainable_parameters()) == set()
    x = mx.random.normal((3, 256), key=mx.random.key(7))
    reference = x @ dequantize_codes(codes, grid).T + linear.bias
    assert mx.allclose(layer(x), reference, atol=1e-4).item()


def test_export_rtn_codes_without_bias():
    w = mx.random.normal((16, 64), key=mx.random.key(2))
    grid = minmax_grid(w, WeightQuantConfig(bits=4, group_size=64))
    layer = export_quantized_linear(quantize_codes(w, grid), grid)
    assert "bias" not in layer


@pytest.mark.parametrize(
    ("bits", "group", "width", "match"),
    [(7, 64, 128, "7-bit"), (4, 16, 128, "group sizes"), (4, None, 80, "group sizes")],
)
def test_export_refuses_what_mlx_cannot_hold(bits, group, width, match):
    w = mx.random.normal((4, width), key=mx.random.key(0))
    grid = minmax_grid(w, WeightQuantConfig(bits=bits, group_size=group))
    with pytest.raises(ValueError, match=match):
        export_quantized_linear(quantize_codes(w, grid), grid)


def test_per_channel_uses_largest_supported_group():
    grid = minmax_grid(mx.zeros((2, 96)), WeightQuantConfig(group_size=None))
    assert mlx_group_size(grid) == 32
