"""Read the `weights` and `quant_config` groups of a store into taq-infer's own types.

Everything taq-infer knows about the on-disk layout is in this module: the rest of the
package works on `WeightSet` (packed codes per layer, MLX `QuantizedLinear` format) and
`ActivationPlan` (per calibrated step and layer: bits, scale, zero point, shift,
smoothing). The groups' specs are `taq_io.schema.GROUPS["weights"]` and
`GROUPS["quant_config"]` (written by taq-adaround and taq-actstats; docs/schema.md), decoded
by their owners `taq_run.weights` and `taq_run.quant_config`. Every weight method writes
the same layout, so any method's weights read here without that method's package.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_infer.activations import ActivationQuant
from taq_infer.model import ActivationPlan, InferenceError, WeightSet
from taq_io import MISSING, StageGroup, StaleGroupError, Store
from taq_run.quant_config import QuantPlan, read_quant_plan, require_quant_config
from taq_run.weight_methods import weight_methods
from taq_run.weights import (
    grid_of,
    has_weights,
    read_layers,
    require_weights,
    weight_methods_in,
)

DEFAULT_WEIGHTS = "adaround"  # the method `taq-infer` and `taq export` read unless told


def has_quant_config(store: Store) -> bool:
    """Whether the store holds a `quant_config` group (complete or not: `Store.state`)."""
    return store.state("quant_config").state != MISSING


def _require(store: Store, kind: str, name: str | None, allow_stale: bool) -> StageGroup:
    """The group, refusing missing / incomplete / corrupt ones and stale ones (made from a
    calibration that changed since) unless `allow_stale`."""
    try:
        if kind == "weights":
            return require_weights(store, name, allow_stale=allow_stale)
        return require_quant_config(store, allow_stale=allow_stale)
    except StaleGroupError as error:
        raise StaleGroupError(f"{error}, or pass --allow-stale to use it anyway") from None


def read_weight_set(store: Store, method: str, allow_stale: bool = False) -> WeightSet:
    """The packed layers of `weights/<method>` (any weight method: one layout for all);
    stale weights (see `Store.state`) are refused unless `allow_stale`."""
    if not has_weights(store, method):
        present = weight_methods_in(store)
        have = f"it has {', '.join(present)}" if present else "it has no weights"
        installed = weight_methods()
        # a lean taq-infer install has no stage packages: name the pipeline's command then
        command = (
            installed[method].command if method in installed else f"taq run --weights {method}"
        )
        raise InferenceError(
            f"{store.path} has no `weights/{method}`: {have} (pass --weights with one of "
            f"them, or run `{command}` on the store)"
        )
    group = _require(store, "weights", method, allow_stale)
    grid = grid_of(group)
    layers: dict[str, nn.QuantizedLinear] = {}
    static: dict[str, ActivationQuant] = {}
    group_size = None
    for name, packed in read_layers(group):
        out_dims, words = packed.weight.shape
        in_dims = words * 32 // grid.bits_w
        group_size = in_dims // packed.scales.shape[1]
        layer = nn.QuantizedLinear(
            in_dims, out_dims, bias=False, group_size=group_size, bits=grid.bits_w
        )
        layer.weight = mx.array(packed.weight)
        layer.scales = mx.array(packed.scales)
        layer.biases = mx.array(packed.biases)
        layer.freeze()
        layers[name] = layer
        if grid.bits_a:
            scale = np.array([packed.act_scale], dtype=np.float32)
            static[name] = ActivationQuant((grid.bits_a,), scale, np.zeros(1, np.float32))
    if not layers:
        raise InferenceError(f"`weights/{method}` in {store.path} holds no layers")
    return WeightSet(method, grid.bits_w, int(group_size), layers, static)


def read_activation_plan(
    store: Store, smoothquant: bool = False, allow_stale: bool = False
) -> ActivationPlan:
    """Per calibrated step and layer activation quantizers from `quant_config`.

    `smoothquant` picks the SmoothQuant variant (`sq_bits`/`sq_scale` and the per-channel
    `smoothing`); without it the plain time-aware tiers (`bits`/`scale`), no smoothing.
    """
    group = _require(store, "quant_config", None, allow_stale)
    return activation_plan_from(read_quant_plan(group), smoothquant)


def activation_plan_from(plan: QuantPlan, smoothquant: bool = False) -> ActivationPlan:
    """taq-infer's `ActivationPlan` from a `quant_config` plan (a store's, or a checkpoint's
    sidecar)."""
    widths, post_gelu = plan.in_features, plan.post_gelu
    bits = plan.sq_bits if smoothquant else plan.bits
    scale = plan.sq_scale if smoothquant else plan.scale
    shift, smoothing = plan.shift, plan.smoothing
    layers = {}
    for i, name in enumerate(plan.layer_names):
        width = int(widths[i])
        layer_smoothing = smoothing[i, :width] if smoothquant else None
        if layer_smoothing is not None and np.all(layer_smoothing == 1.0):
            layer_smoothing = None
        layers[name] = ActivationQuant(
            tuple(int(b) for b in bits[:, i]),
            scale[:, i].astype(np.float32),
            np.zeros(len(bits), np.float32),
            True,
            shift[:, i, :width].astype(np.float32) if post_gelu[i] else None,
            layer_smoothing,
        )
    return ActivationPlan(plan.timesteps, layers, smoothing=smoothquant)
