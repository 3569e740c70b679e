import math

import mlx.core as mx
import pytest

from taq_quant import (
    RoundingSchedule,
    WeightQuantConfig,
    floor_codes,
    hard_codes,
    hard_quantize,
    init_rounding_logits,
    minmax_grid,
    rectified_sigmoid,
    rounding_regularizer,
    soft_quantize,
)
from taq_quant.quantizer import from_groups, scaled_weight


def test_rectified_sigmoid_bounds():
    v = mx.linspace(-50, 50, 1001)
    h = rectified_sigmoid(v)
    assert mx.all((h >= 0) & (h <= 1)).item()
    assert h[0].item() == 0.0 and h[-1].item() == 1.0  # the stretch reaches 0 and 1 exactly
    assert rectified_sigmoid(mx.array(0.0)).item() == pytest.approx(0.5)


def test_init_makes_soft_weight_equal_float_weight(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4))
    v = init_rounding_logits(weight, grid)
    codes = from_groups(scaled_weight(weight, grid))
    assert mx.allclose(rectified_sigmoid(v), codes - mx.floor(codes), atol=1e-5).item()
    assert mx.allclose(soft_quantize(floor_codes(weight, grid), v, grid), weight, atol=1e-5).item()


def test_hard_rounding_is_floor_or_ceil(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4))
    v = mx.random.normal(weight.shape, key=mx.random.key(3)) * 4
    codes = hard_codes(weight, v, grid).astype(mx.float32)
    exact = from_groups(scaled_weight(weight, grid))
    floor = mx.clip(mx.floor(exact), 0, 15)
    ceil = mx.clip(mx.floor(exact) + 1, 0, 15)
    assert mx.all((codes == floor) | (codes == ceil)).item()
    assert mx.array_equal(codes == ceil, (v >= 0) | (floor == ceil)).item()


def test_hard_equals_soft_once_rounding_is_decided(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4))
    v = mx.where(mx.random.uniform(shape=weight.shape, key=mx.random.key(4)) > 0.5, 30.0, -30.0)
    soft = soft_quantize(floor_codes(weight, grid), v, grid)
    assert mx.array_equal(hard_quantize(weight, v, grid), soft).item()


def test_soft_quantize_gradient_flows_to_logits(weight):
    grid = minmax_grid(weight, WeightQuantConfig(bits=4))
    v = init_rounding_logits(weight, grid)
    grad = mx.grad(lambda v: mx.sum(soft_quantize(floor_codes(weight, grid), v, grid) ** 2))(v)
    assert bool(mx.all(mx.isfinite(grad)).item()) and mx.any(grad != 0).item()


@pytest.mark.parametrize(
    ("h", "beta", "expected"),
    [(0.5, 2.0, 1.0), (0.0, 2.0, 0.0), (1.0, 20.0, 0.0), (0.75, 2.0, 0.75), (0.75, 1.0, 0.5)],
)
def test_regularizer_at_known_points(h, beta, expected):
    # invert the stretched sigmoid, staying clear of the clipped ends
    if h in (0.0, 1.0):
        v = mx.array([-100.0 if h == 0.0 else 100.0])
    else:
        v = mx.array([-math.log(1.2 / (h + 0.1) - 1)])
    assert rounding_regularizer(v, beta).item() == pytest.approx(expected, abs=1e-5)


def test_regularizer_sums_over_weights():
    assert rounding_regularizer(mx.zeros((3, 4)), 2.0).item() == pytest.approx(12.0)


@pytest.mark.parametrize("beta", [2.0, 7.3, 20.0])
def test_regularizer_gradient_is_that_of_the_plain_power(beta):
    """The custom gradient (reusing the power) equals autodiff through `mx.power`."""
    v = 3.0 * mx.random.normal((64, 64), key=mx.random.key(5))
    v[0, 0] = 0.0  # h = 0.5 exactly: the base of the power is 0

    def plain(v):
        return mx.sum(1.0 - mx.power(mx.abs(2.0 * rectified_sigmoid(v) - 1.0), beta))

    reused = mx.grad(mx.compile(lambda v: rounding_regularizer(v, beta)))(v)
    assert mx.allclose(reused, mx.grad(plain)(v), rtol=1e-5, atol=1e-6).item()


def test_schedule_values():
    schedule = RoundingSchedule(total_steps=1000)
    assert schedule.beta(0) == 20.0 and not schedule.regularizer_on(0)
    assert schedule.beta(199) == 20.0 and not schedule.regularizer_on(199)
    assert schedule.beta(200) == 20.0 and schedule.regularizer_on(200)
    assert schedule.beta(600) == pytest.approx(11.0)
    assert schedule.beta(1000) == pytest.approx(2.0)


def test_schedule_validation():
    with pytest.raises(ValueError, match="warmup"):
        RoundingSchedule(total_steps=10, warmup=1.0)
