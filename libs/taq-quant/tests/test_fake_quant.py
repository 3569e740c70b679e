import mlx.core as mx
import pytest

from taq_quant import activation_scale, code_range, fake_quant


@pytest.mark.parametrize(
    ("bits", "signed", "expected"), [(8, True, (-128, 127)), (4, False, (0, 15))]
)
def test_code_range(bits, signed, expected):
    assert code_range(bits, signed) == expected


def test_fake_quant_values_on_grid_and_clipped():
    x = mx.array([-10.0, -0.26, 0.0, 0.24, 0.51, 10.0])
    y = fake_quant(x, mx.array(0.25), 4)
    assert y.tolist() == [-2.0, -0.25, 0.0, 0.25, 0.5, 1.75]


def test_fake_quant_shift_and_zero_point():
    x = mx.array([-1.0, -0.17, 0.0, 1.0, 5.0])
    y = fake_quant(x, 0.25, 4, zero_point=2.0, shift=-0.17, signed=False)
    # codes round((x + 0.17) / 0.25) + 2 = [-1, 2, 3, 7, 23] clip to [0, 15]; back: (q - 2) s - 0.17
    assert mx.allclose(y, mx.array([-0.67, -0.17, 0.08, 1.08, 3.08])).item()


def test_gradients_are_straight_through_and_lsq():
    x = mx.array([-10.0, -0.3, 0.1, 0.62, 10.0])
    scale = mx.array(0.25)

    def loss(x, scale):
        return mx.sum(fake_quant(x, scale, 4))

    grad_x, grad_scale = mx.grad(loss, argnums=(0, 1))(x, scale)
    assert grad_x.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # STE inside, zero where clipped
    # LSQ: d/ds = qmin | round(x/s) - x/s | qmax
    expected = -8 + (-1 + 1.2) + (0 - 0.4) + (2 - 2.48) + 7
    assert grad_scale.item() == pytest.approx(expected, abs=1e-5)


def test_usable_compiled_under_value_and_grad():
    x = mx.random.normal((4, 16), key=mx.random.key(1))

    @mx.compile
    def step(scale):
        return mx.value_and_grad(lambda s: mx.mean((fake_quant(x, s, 8) - x) ** 2))(scale)

    loss, grad = step(mx.array([0.01]))
    assert mx.isfinite(loss).item() and mx.all(mx.isfinite(grad)).item()


def test_activation_scale_covers_range():
    scale, zero_point = activation_scale(mx.array(-1.0), mx.array(3.0), 8, signed=True)
    assert scale.item() == pytest.approx(3.0 / 127) and zero_point.item() == 0
    scale, zero_point = activation_scale(mx.array(-0.17), mx.array(3.0), 4, signed=False)
    assert scale.item() == pytest.approx(3.17 / 15)
    x = mx.array([-0.17, 3.0])
    assert mx.allclose(
        fake_quant(x, scale, 4, zero_point=zero_point, signed=False), x, atol=0.06
    ).item()
