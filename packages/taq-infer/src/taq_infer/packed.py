"""A packed 4-bit linear layer that really holds 4-bit weights (TaQ-DiT's W4, Sec. 5).

`PackedLinear` follows MLX's `QuantizedLinear` protocol and parameter layout (affine mode:
`weight` uint32 words of packed codes, `scales` and `biases` per (row, group), `w = scale *
q + bias`, plus the linear `bias`), so `from_quantized` takes an exported
`nn.QuantizedLinear` as it is, and the parameter paths are those of the `nn.Linear` it
replaces. Its parameters are frozen.

The matmul kernel depends on the device:

- Metal (`mx.gpu`): `mx.quantized_matmul`, MLX's native W4 kernel.
- CPU: MLX's `quantized_matmul` runs at ~2 GFLOP/s there, the fp32 GEMM with an optimised
  BLAS at ~150. The layer dequantizes its own weight into a transient float32 buffer right
  before the GEMM; the buffer is a node of the lazy graph, freed once the GEMM has run, so
  only one layer's float weight exists at a time and the resident weights stay packed.

The input may first be fake-quantized per timestep (`activations.py`): that part is
simulated, the W4 storage and matmul are real.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_infer.activations import ActivationQuant, StepContext, quantize_dequantize

Kernel = Literal["auto", "quantized", "dequantize"]


@partial(mx.compile, shapeless=False)
def _unpack_dequantize(
    weight: mx.array, scales: mx.array, biases: mx.array, shifts: mx.array
) -> mx.array:
    """`scale * q + bias` in float32 from uint32 words, for bit widths dividing 32.

    Compiled into one fused kernel: about twice as fast on CPU as `mx.dequantize`, which
    matters for small layers where the dequantization is not negligible next to the GEMM.
    """
    bits = 32 // shifts.size
    out_dims, num_groups = scales.shape
    codes = (weight[..., None] >> shifts) & (2**bits - 1)
    codes = codes.astype(mx.float32).reshape(out_dims, num_groups, -1)
    weights = codes * scales.astype(mx.float32)[..., None] + biases.astype(mx.float32)[..., None]
    return weights.reshape(out_dims, -1)


def resolve_kernel(kernel: Kernel) -> str:
    """`auto`: MLX's quantized matmul on the GPU (Metal), dequantize + fp32 GEMM on CPU."""
    if kernel != "auto":
        return kernel
    return "quantized" if mx.default_device() == mx.gpu else "dequantize"


class PackedLinear(nn.Module):
    """`y = x @ dequant(weight).T + bias` from packed codes; optional activation fake-quant."""

    kernel: Kernel = "auto"
    """Class-wide matmul kernel; tests force `quantized` to check it against `dequantize`."""

    def __init__(
        self,
        input_dims: int,
        output_dims: int,
        bias: bool = True,
        group_size: int = 64,
        bits: int = 4,
        scale_dtype: mx.Dtype = mx.float32,
    ):
        super().__init__()
        if (input_dims * bits) % 32 or input_dims % group_size:
            raise ValueError(
                f"{input_dims} inputs do not pack into {bits}-bit words / groups of {group_size}"
            )
        self.group_size, self.bits, self.mode = group_size, bits, "affine"
        self.weight = mx.zeros((output_dims, input_dims * bits // 32), dtype=mx.uint32)
        self.scales = mx.zeros((output_dims, input_dims // group_size), dtype=scale_dtype)
        self.biases = mx.zeros((output_dims, input_dims // group_size), dtype=scale_dtype)
        if bias:
            self.bias = mx.zeros((output_dims,))
        self.freeze()
        self._act: _LayerActivation | None = None

    @property
    def input_dims(self) -> int:
        return self["weight"].shape[1] * 32 // self.bits

    @property
    def output_dims(self) -> int:
        return self["weight"].shape[0]

    def _extra_repr(self) -> str:
        act = "none" if self._act is None else f"{self._act.quant.rows} step(s)"
        return (
            f"input_dims={self.input_dims}, output_dims={self.output_dims}, "
            f"bias={'bias' in self}, group_size={self.group_size}, bits={self.bits}, "
            f"activations={act}"
        )

    @classmethod
    def from_quantized(
        cls, layer: nn.QuantizedLinear, scale_dtype: mx.Dtype | None = None
    ) -> PackedLinear:
        """Take an exported affine `nn.QuantizedLinear`'s packed arrays as they are.

        `scale_dtype` (e.g. float16, MLX's usual storage) recasts scales and biases;
        None keeps the exported dtype (float32 keeps the exported codes bit-exact).
        """
        if layer.mode != "affine":
            raise ValueError(f"only affine QuantizedLinear layers pack, got {layer.mode}")
        out_dims, words = layer.weight.shape
        scale_dtype = scale_dtype or layer.scales.dtype
        packed = cls(
            words * 32 // layer.bits,
            out_dims,
            bias="bias" in layer,
            group_size=layer.group_size,
            bits=layer.bits,
            scale_dtype=scale_dtype,
        )
        packed.weight = layer.weight
        packed.scales = layer.scales.astype(scale_dtype)
        packed.biases = layer.biases.astype(scale_dtype)
        if "bias" in layer:
            packed.bias = layer.bias
        packed.freeze()
        return packed

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        group_size: int = 64,
        bits: int = 4,
        scale_dtype: mx.Dtype = mx.float16,
    ) -> PackedLinear:
        """Round-to-nearest `linear` with MLX's own `mx.quantize` (benchmarks, baselines)."""
        weight = linear.weight.astype(mx.float32)
        q, scales, biases = mx.quantize(weight, group_size=group_size, bits=bits)
        out_dims, in_dims = weight.shape
        packed = cls(in_dims, out_dims, "bias" in linear, group_size, bits, scale_dtype)
        packed.weight = q
        packed.scales = scales.astype(scale_dtype)
        packed.biases = biases.astype(scale_dtype)
        if "bias" in linear:
            packed.bias = linear.bias
        packed.freeze()
        return packed

    def dequantized_weight(self) -> mx.array:
        """The float32 weight `(out, in)` the packed codes represent."""
        if 32 % self.bits == 0:
            shifts = mx.arange(0, 32, self.bits, dtype=mx.uint32)
            return _unpack_dequantize(self["weight"], self["scales"], self["biases"], shifts)
        return mx.dequantize(
            self["weight"],
            self["scales"].astype(mx.float32),
            self["biases"].astype(mx.float32),
            group_size=self.group_size,
            bits=self.bits,
        )

    def set_activation(self, quant: ActivationQuant | None, context: StepContext) -> None:
        """Fake-quantize this layer's input with `quant`, reading the step from `context`.

        The post-GELU shift is compensated through the bias: one bias row per plan row,
        `b + W @ shift_t`, computed here from the layer's own (dequantized) weight.
        """
        self._act = make_layer_activation(self, quant, context)

    def fold_smoothing(self, smoothing: np.ndarray) -> None:
        """SmoothQuant at load: `W <- W * s` (per input channel), re-packed on the same grid.

        The codes were rounded for the unsmoothed `W`; a per-column factor is not expressible
        on a per-(row, group) affine grid, so the smoothed weight is re-derived by
        round-to-nearest (MLX's `mx.quantize`, same bits and group size). This gives up the
        learned rounding of smoothed layers in exchange for a real, deployable W4 layer.
        """
        scale = mx.array(np.asarray(smoothing, np.float32))
        if scale.shape != (self.input_dims,):
            raise ValueError(
                f"smoothing of shape {scale.shape}, layer has {self.input_dims} inputs"
            )
        weight = self.dequantized_weight() * scale[None, :]
        dtype = self["scales"].dtype
        self.weight, scales, biases = mx.quantize(weight, self.group_size, self.bits)
        self.scales, self.biases = scales.astype(dtype), biases.astype(dtype)
        self.freeze()
        mx.eval(self.parameters())

    def activation_nbytes(self) -> int:
        """Bytes held for activation quantization (per-step grids and compensated biases)."""
        return 0 if self._act is None else self._act.nbytes()

    def __call__(self, x: mx.array) -> mx.array:
        bias = self.get("bias")
        if self._act is not None:
            x, bias = self._act(x, bias)
        if resolve_kernel(self.kernel) == "quantized":
            y = mx.quantized_matmul(
                x,
                self["weight"],
                scales=self["scales"].astype(x.dtype),
                biases=self["biases"].astype(x.dtype),
                transpose=True,
                group_size=self.group_size,
                bits=self.bits,
            )
            return y if bias is None else y + bias
        weight = self.dequantized_weight().astype(x.dtype)  # transient: freed after the GEMM
        return x @ weight.T if bias is None else mx.addmm(bias, x, weight.T)


class DequantizedLinear(nn.Linear):
    """The reference: a float32 `nn.Linear` holding a `PackedLinear`'s dequantized weight,
    with the same activation fake-quant. Packed and reference must agree to float rounding."""

    @classmethod
    def from_packed(cls, packed: PackedLinear) -> DequantizedLinear:
        layer = cls(packed.input_dims, packed.output_dims, bias="bias" in packed)
        layer.weight = packed.dequantized_weight()
        if "bias" in packed:
            layer.bias = packed["bias"]
        layer.freeze()
        layer._act = packed._act and make_layer_activation(
            layer, packed._act.quant, packed._act.context
        )
        return layer

    def __call__(self, x: mx.array) -> mx.array:
        bias = self.get("bias")
        act = getattr(self, "_act", None)
        if act is not None:
            x, bias = act(x, bias)
        return x @ self["weight"].T if bias is None else mx.addmm(bias, x, self["weight"].T)


def make_layer_activation(
    layer: nn.Module, quant: ActivationQuant | None, context: StepContext
) -> _LayerActivation | None:
    """A layer's activation quantizer; the post-GELU shift's bias rows `b + W @ shift_t`
    (in the smoothed input space) come from the layer's own float weight."""
    if quant is None:
        return None
    in_dims = quant.smoothing.shape[0] if quant.smoothing is not None else None
    weight = layer.dequantized_weight() if isinstance(layer, PackedLinear) else layer["weight"]
    if in_dims is not None and in_dims != weight.shape[1]:
        raise ValueError(f"smoothing of width {in_dims}, layer has {weight.shape[1]} inputs")
    if quant.scale.ndim > 1 and quant.scale.shape[1] != weight.shape[1]:
        raise ValueError(f"per-channel scales of width {quant.scale.shape[1]}")
    step_bias = None
    if quant.shift is not None:
        shift = quant.shift.astype(np.float64)
        if quant.smoothing is not None:
            shift = shift / quant.smoothing.astype(np.float64)
        base = np.array(layer["bias"], np.float64) if "bias" in layer else 0.0
        step_bias = mx.array(base + shift @ np.array(weight, np.float64).T, mx.float32)
    return _LayerActivation(quant, context, step_bias)


class _LayerActivation:
    """A layer's activation quantizer as MLX arrays, and the step context it reads."""

    def __init__(self, quant: ActivationQuant, context: StepContext, step_bias: mx.array | None):
        self.quant = quant
        self.context = context
        self.scale = mx.array(quant.scale, mx.float32)
        self.zero_point = mx.array(quant.zero_point, mx.float32)
        self.shift = None if quant.shift is None else mx.array(quant.shift, mx.float32)
        self.inverse_smoothing = (
            None if quant.smoothing is None else mx.array(1.0 / quant.smoothing, mx.float32)
        )
        self.step_bias = step_bias

    def nbytes(self) -> int:
        arrays = (self.scale, self.zero_point, self.shift, self.inverse_smoothing, self.step_bias)
        return sum(a.nbytes for a in arrays if a is not None)

    def __call__(self, x: mx.array, bias: mx.array | None) -> tuple[mx.array, mx.array | None]:
        row = self.context.row if self.quant.rows > 1 else 0
        if row >= self.quant.rows:
            raise IndexError(f"activation plan has {self.quant.rows} rows, step wants {row}")
        if self.shift is not None:
            x = x - self.shift[row]
            bias = self.step_bias[row]
        if self.inverse_smoothing is not None:
            x = x * self.inverse_smoothing
        x = quantize_dequantize(
            x, self.scale[row], self.zero_point[row], self.quant.bits[row], self.quant.signed
        )
        return x, bias
