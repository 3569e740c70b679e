"""AdaRound: learned up/down rounding of weights on a fixed grid.

TaQ-DiT (arXiv 2411.14172, Sec. 3-4) reconstructs each block with AdaRound (Nagel et al.
2020) as in BRECQ: every weight gets a logit `V`, and its code is `floor((w - bias) / s)`
plus a soft rounding offset `h(V)` in [0, 1], the rectified sigmoid

    h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),   zeta = 1.1, gamma = -0.1

(stretched so that h reaches exactly 0 and 1). The regulariser `sum(1 - |2h - 1|^B)` pushes
every `h` to 0 or 1 while `B` is annealed from 20 to 2 after a 20 % warm-up during which the
regulariser is off. The final (hard) code rounds up exactly where `h >= 0.5`, i.e. `V >= 0`.

Everything here is on the affine grid of `quantizer.py` (`w = scale * q + bias`), so the
hard codes export to MLX's `QuantizedLinear` unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlx.core as mx

from taq_quant.quantizer import QuantGrid, dequantize_codes, from_groups, scaled_weight

ZETA = 1.1
GAMMA = -0.1


def rectified_sigmoid(v: mx.array) -> mx.array:
    """h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)."""
    return mx.clip(mx.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def floor_codes(w: mx.array, grid: QuantGrid) -> mx.array:
    """`floor((w - bias) / s)`, float32, shape of `w`: the codes AdaRound rounds up from."""
    return from_groups(mx.floor(scaled_weight(w, grid)))


def init_rounding_logits(w: mx.array, grid: QuantGrid) -> mx.array:
    """Logits `V` (float32, shape of `w`) with `h(V)` equal to the fractional part of the code.

    The soft weight at initialisation is then the unquantized weight wherever it lies
    inside the grid's range.
    """
    codes = from_groups(scaled_weight(w, grid))
    fraction = codes - mx.floor(codes)
    # Inverse of the stretched sigmoid: sigmoid(V) = (fraction - gamma) / (zeta - gamma).
    return -mx.log((ZETA - GAMMA) / (fraction - GAMMA) - 1.0)


def soft_quantize(floor: mx.array, v: mx.array, grid: QuantGrid) -> mx.array:
    """The soft-rounded weight `s * clip(floor + h(V), 0, qmax) + b`, `floor` the weight's
    `floor_codes` (computed once, not on every step: the weight does not train).

    Differentiable in `v` (and in the grid's scale and bias through the dequantization,
    with the floor held fixed).
    """
    codes = mx.clip(mx.stop_gradient(floor) + rectified_sigmoid(v), 0.0, float(grid.qmax))
    return dequantize_codes(codes, grid)


def hard_codes(w: mx.array, v: mx.array, grid: QuantGrid) -> mx.array:
    """Final integer codes: floor, plus one where `h(V) >= 0.5`; uint8 in `[0, qmax]`."""
    up = (rectified_sigmoid(v) >= 0.5).astype(mx.float32)
    return mx.clip(floor_codes(w, grid) + up, 0, grid.qmax).astype(mx.uint8)


def hard_quantize(w: mx.array, v: mx.array, grid: QuantGrid) -> mx.array:
    """The weight with hard (learned) rounding, float32."""
    return dequantize_codes(hard_codes(w, v, grid), grid)


@mx.custom_function
def _power(base: mx.array, exponent: mx.array) -> mx.array:
    return mx.power(base, exponent)


@_power.vjp
def _power_vjp(primals, cotangent, output):
    """`exponent * base^(exponent - 1)` from the power the forward pass computed (`output /
    base`), not a second `pow`: the power is the regulariser's costliest operation."""
    base, exponent = primals
    slope = mx.where(base > 0, exponent * output / base, 0.0)
    return cotangent * slope, mx.zeros_like(exponent)


def rounding_regularizer(v: mx.array, beta: float | mx.array) -> mx.array:
    """`sum(1 - |2 h(V) - 1|^beta)`: zero when every `h` is 0 or 1, largest at `h = 0.5`.

    Its gradient in `v` reuses the power (for `beta > 1`, where the slope at 0 is 0)."""
    base = mx.abs(2.0 * rectified_sigmoid(v) - 1.0)
    return mx.sum(1.0 - _power(base, mx.array(beta, dtype=mx.float32)))


@dataclass(frozen=True)
class RoundingSchedule:
    """BRECQ's linear temperature decay for the regulariser's exponent `B`.

    During the first `warmup` fraction of `total_steps` the regulariser is off and `B`
    holds at `beta_start`; then `B` falls linearly to `beta_end` at the last step.
    """

    total_steps: int
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0

    def __post_init__(self) -> None:
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")

    @property
    def warmup_steps(self) -> int:
        return math.ceil(self.warmup * self.total_steps)

    def regularizer_on(self, step: int) -> bool:
        return step >= self.warmup_steps

    def beta(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.beta_start
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return self.beta_end + (self.beta_start - self.beta_end) * max(0.0, 1.0 - progress)
