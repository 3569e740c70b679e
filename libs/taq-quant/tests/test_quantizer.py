import mlx.core as mx
import pytest

from taq_quant import (
    WeightQuantConfig,
    dequantize_codes,
    init_grid,
    minmax_grid,
    mse_grid,
    quantize_codes,
    rtn_quantize,
)
from taq_quant.quantizer import to_groups


@pytest.mark.parametrize("bits", [1, 9, 4.0])
def test_config_rejects_bits_outside_2_to_8(bits):
    with pytest.raises(ValueError, match="bits"):
        WeightQuantConfig(bits=bits)


def test_config_rejects_group_size_not_dividing_width():
    config = WeightQuantConfig(group_size=48)
    with pytest.raises(ValueError, match="does not divide the input width 256"):
        config.group_width(256)


@pytest.mark.parametrize("field", [{"group_size": 0}, {"scale_method": "percentile"}])
def test_config_rejects_bad_fields(field):
    with pytest.raises(ValueError):
        WeightQuantConfig(**field)


CONFIGS = [
    WeightQuantConfig(bits=bits, group_size=group, symmetric=sym, scale_method=method)
    for bits in (2, 4, 8)
    for group in (32, None)
    for sym in (False, True)
    for method in ("minmax", "mse")
]


def _id(config: WeightQuantConfig) -> str:
    group = config.group_size or "chan"
    return f"w{config.bits}-g{group}-{'sym' if config.symmetric else 'aff'}-{config.scale_method}"


@pytest.mark.parametrize("config", CONFIGS, ids=_id)
def test_codes_in_range_and_grid_shapes(weight, config):
    grid = init_grid(weight, config)
    groups = 256 // (config.group_size or 256)
    assert grid.scale.shape == grid.bias.shape == (48, groups)
    assert grid.scale.dtype == mx.float32
    codes = quantize_codes(weight, grid)
    assert codes.shape == weight.shape and codes.dtype == mx.uint8
    assert codes.max().item() <= 2**config.bits - 1


@pytest.mark.parametrize("config", [c for c in CONFIGS if c.scale_method == "minmax"], ids=_id)
def test_minmax_rtn_error_bounded_by_half_scale(weight, config):
    grid = minmax_grid(weight, config)
    error = to_groups(mx.abs(rtn_quantize(weight, grid) - weight), grid.group_size)
    bound = grid.scale[..., None] / 2 * (1 + 1e-5) + 1e-7
    assert mx.all(error <= bound).item()


def test_symmetric_grid_has_zero_on_grid(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4, symmetric=True))
    zero = mx.zeros_like(weight)
    assert mx.array_equal(rtn_quantize(zero, grid), zero).item()


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_mse_search_never_worse_than_minmax(weight, bits, symmetric):
    config = WeightQuantConfig(bits=bits, group_size=64, symmetric=symmetric)

    def group_mse(grid):
        return mx.square(to_groups(rtn_quantize(weight, grid) - weight, 64)).mean(axis=-1)

    mse, minmax = group_mse(mse_grid(weight, config)), group_mse(minmax_grid(weight, config))
    assert mx.all(mse <= minmax).item()
    assert mx.mean(mse).item() < mx.mean(minmax).item()  # outliers make clipping pay off


def test_constant_group_is_exact():
    w = mx.full((2, 64), 0.3)
    grid = minmax_grid(w, WeightQuantConfig(bits=4))
    assert mx.array_equal(rtn_quantize(w, grid), w).item()


def test_dequantize_codes_is_scale_times_code_plus_bias(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4, group_size=128))
    codes = quantize_codes(weight, grid)
    expected = codes[:, 130].astype(mx.float32) * grid.scale[:, 1] + grid.bias[:, 1]
    assert mx.array_equal(dequantize_codes(codes, grid)[:, 130], expected).item()
