"""Replace an MMDiT's quantizable linears with packed W4 layers and sample with them.

The layer map comes from the artifact (or from RTN for benchmarks): every entry names a
`taq_model.taxonomy` layer (`mm3.image.mlp.fc2`) and carries its packed arrays. Placement
replays that map with `update_modules`, as mlx-lm's `load` replays a saved quantization
map, so parameter paths stay those of DiffusionKit's `nn.Linear`s and nothing else in the
model changes. One `StepContext` is shared by every layer; `generate` hands its `on_step`
to the sampler, which is how the current timestep reaches the layers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from taq_infer.activations import ActivationQuant, StepContext
from taq_infer.modulation import pin_modulation, quantize_modulation
from taq_infer.packed import PackedLinear
from taq_model.blocks import is_modulation_path, model_parameters
from taq_model.presets import ModelHandle
from taq_model.sampling import timesteps_for
from taq_model.taxonomy import LayerRef, get_module, quantizable_layers

ActMode = Literal["none", "static", "timestep"]
ACT_MODES: tuple[str, ...] = ("none", "static", "timestep")
Fallback = Literal["nearest", "static"]
TIMESTEP_TOLERANCE = 1e-3  # timesteps are sigma * 1000 in float32


class InferenceError(Exception):
    """Artifacts or flags that cannot give a quantized model; the message names the fix."""


@dataclass(frozen=True)
class WeightSet:
    """Packed W4 weights for some layers, by taq layer name (from a `weights` group or RTN)."""

    method: str  # adaround | rtn
    bits: int
    group_size: int
    layers: Mapping[str, nn.QuantizedLinear]
    static_activations: Mapping[str, ActivationQuant] = field(default_factory=dict)
    """AdaRound's learned static activation quantizers (empty when none were learned)."""


@dataclass(frozen=True)
class ActivationPlan:
    """`quant_config`: per calibrated step `t` and layer, the input quantizer of row `t`."""

    timesteps: np.ndarray  # (rows,) float32, sigma * 1000
    layers: Mapping[str, ActivationQuant]
    smoothing: bool = False


def rtn_weight_set(
    handle: ModelHandle, bits: int = 4, group_size: int = 64, pattern: str | None = None
) -> WeightSet:
    """Round-to-nearest W4 of every quantizable layer with MLX's own `mx.quantize`."""
    layers = {}
    for ref in quantizable_layers(handle.mmdit, pattern):
        linear = get_module(handle.mmdit, ref.path)
        layer = nn.QuantizedLinear.from_linear(linear, group_size=group_size, bits=bits)
        layer.freeze()
        layers[ref.name] = layer
    mx.eval([tree_flatten(layer.parameters()) for layer in layers.values()])
    return WeightSet("rtn", bits, group_size, layers)


def check_layer_map(mmdit: nn.Module, weights: WeightSet) -> list[LayerRef]:
    """The model's layers the weights cover, after checking names and shapes match."""
    refs = {ref.name: ref for ref in quantizable_layers(mmdit)}
    unknown = sorted(set(weights.layers) - set(refs))
    if unknown:
        raise InferenceError(
            f"the weights name layers this model does not have ({', '.join(unknown[:3])}"
            f"{', ...' if len(unknown) > 3 else ''}): they were made for another model preset"
        )
    covered = []
    for name, layer in weights.layers.items():
        linear = get_module(mmdit, refs[name].path)
        out_dims, in_dims = linear.weight.shape
        words = in_dims * layer.bits // 32
        groups = in_dims // layer.group_size if in_dims % layer.group_size == 0 else -1
        expected = {"weight": (out_dims, words), "scales": (out_dims, groups)}
        for key, shape in expected.items():
            if tuple(layer[key].shape) != shape:
                raise InferenceError(
                    f"{name}: packed {key} has shape {tuple(layer[key].shape)}, this model's "
                    f"layer ({out_dims}x{in_dims}) at {layer.bits} bits, group {layer.group_size}"
                    f" needs {shape}: the weights were made for another preset or group size"
                )
        covered.append(refs[name])
    return covered


def install_packed(
    mmdit: nn.Module, weights: WeightSet, scale_dtype: mx.Dtype | None = None
) -> dict[str, PackedLinear]:
    """Swap the covered `nn.Linear`s for `PackedLinear`s, in place; returns them by name.

    The old float weights are dropped with the modules they belonged to.
    """
    refs = check_layer_map(mmdit, weights)
    for ref in refs:  # stores keep only the quantized part; the additive bias is the model's
        linear, layer = get_module(mmdit, ref.path), weights.layers[ref.name]
        if "bias" in linear and "bias" not in layer:
            layer.bias = linear.bias
    packed = {
        ref.name: PackedLinear.from_quantized(weights.layers[ref.name], scale_dtype) for ref in refs
    }
    mmdit.update_modules(tree_unflatten([(ref.path, packed[ref.name]) for ref in refs]))
    return packed


def keep_other_weights(mmdit: nn.Module, dtype: mx.Dtype) -> None:
    """Store the non-quantized float weights in `dtype` (float16 halves them).

    Activations stay float32: MLX promotes a float16 weight to float32 inside each op, so
    the upcast copy is transient like the packed layers' dequantized buffers.
    """
    params = [
        (path, value.astype(dtype))
        for path, value in tree_flatten(mmdit.parameters())
        if mx.issubdtype(value.dtype, mx.floating)
        and not _is_packed_path(mmdit, path)
        and value.size
    ]
    mmdit.load_weights(params, strict=False)
    mx.eval(mmdit.parameters())


def _is_packed_path(mmdit: nn.Module, path: str) -> bool:
    parent = get_module(mmdit, path.rsplit(".", 1)[0])
    return isinstance(parent, PackedLinear)


def plan_rows(plan: ActivationPlan, timesteps: np.ndarray, fallback: Fallback | None) -> tuple:
    """The plan row of each requested step; refuses a mismatch unless a fallback was asked.

    Returns `(rows, note)`; `rows` is None for the static fallback.
    """
    calibrated = np.asarray(plan.timesteps, np.float64)
    asked = np.asarray(timesteps, np.float64)
    if len(calibrated) == len(asked) and np.allclose(
        calibrated, asked, atol=TIMESTEP_TOLERANCE, rtol=0
    ):
        return tuple(range(len(asked))), "timesteps match the schedule"
    if fallback == "static":
        return None, "quant_config's timesteps differ: static activation scales (asked)"
    if fallback == "nearest":
        rows = tuple(int(np.argmin(np.abs(calibrated - t))) for t in asked)
        worst = float(np.max(np.abs(calibrated[list(rows)] - asked)))
        return rows, f"nearest calibrated step per step (asked; largest gap {worst:.1f})"
    raise InferenceError(
        f"quant_config was calibrated for {len(calibrated)} steps (timesteps "
        f"{_brief(calibrated)}), you asked for {len(asked)} ({_brief(asked)}): pass "
        f"--steps {len(calibrated)}, or choose a fallback explicitly with "
        "--act-fallback nearest (nearest calibrated step) or --act-fallback static"
    )


def _brief(values: np.ndarray) -> str:
    shown = ", ".join(f"{v:.0f}" for v in values[:3])
    return f"{shown}, ..." if len(values) > 3 else shown


def check_activations(
    weights: WeightSet,
    plan: ActivationPlan | None,
    act: str,
    fallback: Fallback | None,
    names: Sequence[str],
) -> None:
    """Refuse an activation mode the artifacts cannot serve, naming the fix."""
    if act not in ACT_MODES:
        raise InferenceError(f"--act must be one of {', '.join(ACT_MODES)}, got {act!r}")
    if fallback not in (None, "nearest", "static"):
        raise InferenceError(f"--act-fallback must be nearest or static, got {fallback!r}")
    if act == "timestep" and plan is None:
        raise InferenceError(
            "--act timestep needs a quant_config group: run `taq-actstats analyze` first, "
            "or pass --act static|none"
        )
    if act == "static" or (act == "timestep" and fallback == "static"):
        missing = sorted(set(names) - set(weights.static_activations))
        if missing:
            raise InferenceError(
                f"the {weights.method} weights have no learned activation scales (e.g. "
                f"{missing[0]}): pass --act none, or --act timestep with a quant_config"
            )
    if act == "timestep":
        missing = sorted(set(names) - set(plan.layers))
        if missing:
            raise InferenceError(
                f"quant_config has no entry for {missing[0]}: rerun `taq-actstats analyze`"
            )


@dataclass
class QuantizedModel:
    """A preset whose quantizable linears are packed W4, with its activation plan."""

    handle: ModelHandle
    weights: WeightSet
    layers: dict[str, PackedLinear]
    act: ActMode = "none"
    plan: ActivationPlan | None = None
    fallback: Fallback | None = None
    context: StepContext = field(default_factory=StepContext)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_activations(self.weights, self.plan, self.act, self.fallback, list(self.layers))
        self._apply("static" if self.act == "static" else "none")

    def _apply(self, mode: str) -> None:
        smoothed = getattr(self, "_smoothed", False)
        if mode == "static" and smoothed:
            raise InferenceError(
                "SmoothQuant is already folded into the weights: load the model again to use "
                "static activation scales"
            )
        for name, layer in self.layers.items():
            if mode == "none":
                quant = None
            elif mode == "static":
                quant = self.weights.static_activations[name]
            else:
                quant = self.plan.layers[name]
                if quant.smoothing is not None and not smoothed:
                    layer.fold_smoothing(quant.smoothing)
            layer.set_activation(quant, self.context)
        self._smoothed = smoothed or mode == "timestep"
        self._mode = mode

    def schedule(self, num_steps: int | None = None) -> tuple[mx.array, int]:
        num_steps = num_steps or self.handle.default_steps
        return self.handle.sigmas(num_steps), num_steps

    def prepare(self, num_steps: int | None = None) -> str:
        """Bind the activation quantizers for a schedule of `num_steps`; a line saying how."""
        sigmas, num_steps = self.schedule(num_steps)
        if self.act != "timestep":
            self.context.start(())
            return {"none": "no activation quantization", "static": "static scales"}[self.act]
        timesteps = np.array(timesteps_for(sigmas))[:num_steps]
        rows, note = plan_rows(self.plan, timesteps, self.fallback)
        if rows is None:
            self._apply("static")
            self.context.start(())
        else:
            if self._mode != "timestep":
                self._apply("timestep")
            self.context.start(rows)
        return note

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_steps: int | None = None,
        cfg: float | None = None,
    ) -> mx.array:
        """Final latents (N, H, W, C), one run per (prompt, seed): `ModelHandle.generate`
        with the activation quantizers bound to the schedule and told each step."""
        self.prepare(num_steps)
        return self.handle.generate(prompts, seeds, num_steps, cfg, on_step=self.context.on_step)

    def layer_bytes(self) -> int:
        """Resident bytes of the packed layers: codes, scales, biases, bias, act grids."""
        return sum(
            sum(v.nbytes for _, v in tree_flatten(layer.parameters())) + layer.activation_nbytes()
            for layer in self.layers.values()
        )

    def float16_layer_bytes(self) -> int:
        """What the same layers weigh as float16 `nn.Linear`s (weight and bias)."""
        total = 0
        for layer in self.layers.values():
            total += layer.input_dims * layer.output_dims * 2
            total += layer.output_dims * 2 if "bias" in layer else 0
        return total


def sampling_parameters(mmdit: nn.Module) -> list[mx.array]:
    """The MMDiT's distinct weight arrays while it samples: adaLN excluded (modulation
    caching empties it, and leaves a list of the emptied linears on the model, which
    `model_parameters` skips); arrays are deduplicated."""
    seen, arrays = set(), []
    for path, value in model_parameters(mmdit):
        if is_modulation_path(path) or id(value) in seen:
            continue
        seen.add(id(value))
        arrays.append(value)
    return arrays


def model_bytes(mmdit: nn.Module) -> int:
    """Bytes of the weights the MMDiT holds while sampling (adaLN dropped by caching)."""
    return sum(value.nbytes for value in sampling_parameters(mmdit))


def load_weight_set(
    handle: ModelHandle,
    weights: WeightSet,
    *,
    act: ActMode = "none",
    plan: ActivationPlan | None = None,
    fallback: Fallback | None = None,
    scale_dtype: mx.Dtype | None = None,
    other_dtype: mx.Dtype | None = None,
    modulation_bits: int = 0,
) -> QuantizedModel:
    """Install `weights` into `handle`'s MMDiT (in place) and bind the activation mode.

    `modulation_bits` > 0 also rounds the adaLN linears to nearest (`modulation.py`).
    """
    layers = install_packed(handle.mmdit, weights, scale_dtype)
    if other_dtype is not None:
        keep_other_weights(handle.mmdit, other_dtype)
        if other_dtype != mx.float32:  # sampling must reload the cast adaLN, not the source's
            pin_modulation(handle)
    if modulation_bits:
        quantize_modulation(handle, modulation_bits, weights.group_size)
    mx.eval(handle.mmdit.parameters())
    return QuantizedModel(handle, weights, layers, act=act, plan=plan, fallback=fallback)
