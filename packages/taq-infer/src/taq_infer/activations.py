"""Time-aware activation fake-quant for inference (TaQ-DiT, arXiv 2411.14172, Sec. 4).

MLX has no integer activation matmul, so activation quantization is *simulated*: each
quantized linear rounds its input onto a uniform grid and maps it back to float32
(quantize-dequantize) before its real packed-W4 matmul. The grid may change with the
sampler step (A4/A6/A8 tiers and per-step scales from `quant_config`), so every layer reads
the current step from one shared `StepContext` that the sampler's `on_step` callback moves
forward; DiffusionKit's block code is untouched.

Per layer the input goes through, in this order:

1. post-GELU shift (`fc2` inputs): `x - shift_t`, compensated through the bias
   (`b'_t = b + W' @ (shift_t / s)`), so the layer's function is unchanged before rounding,
2. SmoothQuant: `* 1/s` per input channel (`W' = W * s` is folded into the packed weights
   at load, see `PackedLinear.fold_smoothing`),
3. quantize-dequantize with step `t`'s bits, scale and zero point (scales are in the
   shifted, smoothed space).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np


@dataclass
class StepContext:
    """Which row of the activation plan the current sampler step uses.

    `rows[i]` is the plan row for sampler step `i` (the identity when `quant_config`'s
    timesteps match the schedule, the nearest calibrated step under `--act-fallback
    nearest`). `on_step` is the sampler's callback.
    """

    rows: tuple[int, ...] = ()
    row: int = 0
    step: int | None = None
    steps_seen: list[int] = field(default_factory=list)

    def start(self, rows: tuple[int, ...]) -> None:
        self.rows, self.row, self.step = tuple(rows), 0, None
        self.steps_seen.clear()

    def on_step(self, step: int, x: mx.array | None = None) -> None:
        self.step = step
        self.row = self.rows[step] if self.rows else 0
        self.steps_seen.append(step)


@dataclass(frozen=True)
class ActivationQuant:
    """How one layer's input is fake-quantized, one row per plan step.

    `bits` has one entry per row; `scale` and `zero_point` are `(rows,)` (per tensor) or
    `(rows, in)` (per channel); `shift` is `(rows, in)` or None; `smoothing` is `(in,)`.
    A static quantizer (AdaRound's learned scale) has a single row used at every step.
    """

    bits: tuple[int, ...]
    scale: np.ndarray
    zero_point: np.ndarray
    signed: bool = True
    shift: np.ndarray | None = None
    smoothing: np.ndarray | None = None

    def __post_init__(self) -> None:
        rows = len(self.bits)
        for name in ("scale", "zero_point", "shift"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != rows:
                raise ValueError(f"{name} has {value.shape[0]} rows, bits has {rows}")
        if np.any(~np.isfinite(self.scale)) or np.any(self.scale <= 0):
            raise ValueError("activation scales must be finite and positive")

    @property
    def rows(self) -> int:
        return len(self.bits)

    @classmethod
    def static(cls, scale: float, bits: int, zero_point: float = 0.0, signed: bool = True):
        return cls(
            bits=(int(bits),),
            scale=np.array([scale], np.float32),
            zero_point=np.array([zero_point], np.float32),
            signed=signed,
        )


def code_limits(bits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def quantize_dequantize(
    x: mx.array, scale: mx.array, zero_point: mx.array, bits: int, signed: bool
) -> mx.array:
    """`s * (clip(round(x / s) + z, qmin, qmax) - z)`: rounding only, no STE (inference)."""
    qmin, qmax = code_limits(bits, signed)
    codes = mx.clip(mx.round(x / scale) + zero_point, qmin, qmax)
    return (codes - zero_point) * scale
