"""Read the `weights` and `quant_config` groups of a store into taq-infer's own types.

Everything taq-infer knows about the on-disk layout is in this module: the rest of the
package works on `WeightSet` (packed codes per layer, MLX `QuantizedLinear` format) and
`ActivationPlan` (per calibrated step and layer: bits, scale, zero point, shift,
smoothing). The groups' specs are `taq_io.schema.GROUPS["weights"]` and
`GROUPS["quant_config"]` (written by taq-adaround and taq-actstats; docs/schema.md), read
through their owners `taq_run.weights` and `taq_run.quant_config`.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_infer.activations import ActivationQuant
from taq_infer.model import ActivationPlan, InferenceError, WeightSet
from taq_io import MISSING, StageGroup, StaleGroupError, Store
from taq_io.schema import role_key
from taq_model.taxonomy import LAYER_ROLES
from taq_run.quant_config import require_quant_config
from taq_run.weights import adaround_config_of, require_weights

WEIGHT_METHODS = ("adaround", "rtn")
_ROLE_PATH = {role_key(role): role for role in LAYER_ROLES}  # `fc2` -> `mlp.fc2`


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
    """The packed W4 layers of `method` (adaround | rtn) from the store's `weights` group;
    stale weights (see `Store.state`) are refused unless `allow_stale`."""
    if method not in WEIGHT_METHODS:
        raise InferenceError(f"--weights must be one of {', '.join(WEIGHT_METHODS)}")
    group = _require(store, "weights", method, allow_stale)
    config = adaround_config_of(group)
    bits, group_size = config.bits_w, None
    streams = group.read("stream_names").tolist()
    roles = group.read("role_names").tolist()
    blocks = group.read("block_names").tolist()
    present = group.read("present")
    layers: dict[str, nn.QuantizedLinear] = {}
    static: dict[str, ActivationQuant] = {}
    bits_a = config.bits_a
    for r, role in enumerate(roles):
        weight = group.read(f"{role}_weight")
        scales, biases = group.read(f"{role}_scales"), group.read(f"{role}_biases")
        act_scale = group.read(f"{role}_act_scale")
        for b, block in enumerate(blocks):
            for s, stream in enumerate(streams):
                if not present[b, s, r]:
                    continue
                name = f"{block}.{stream}.{_ROLE_PATH[role]}"
                out_dims, words = weight.shape[2:]
                in_dims = words * 32 // bits
                group_size = in_dims // scales.shape[3]
                layer = nn.QuantizedLinear(
                    in_dims, out_dims, bias=False, group_size=group_size, bits=bits
                )
                layer.weight = mx.array(weight[b, s])
                layer.scales = mx.array(scales[b, s])
                layer.biases = mx.array(biases[b, s])
                layer.freeze()
                layers[name] = layer
                if bits_a:
                    scale = np.array([act_scale[b, s]], dtype=np.float32)
                    static[name] = ActivationQuant((bits_a,), scale, np.zeros(1, np.float32))
    if not layers:
        raise InferenceError(f"`weights/{method}` in {store.path} holds no layers")
    return WeightSet(method, bits, int(group_size), layers, static)


def read_activation_plan(
    store: Store, smoothquant: bool = False, allow_stale: bool = False
) -> ActivationPlan:
    """Per calibrated step and layer activation quantizers from `quant_config`.

    `smoothquant` picks the SmoothQuant variant (`sq_bits`/`sq_scale` and the per-channel
    `smoothing`); without it the plain time-aware tiers (`bits`/`scale`), no smoothing.
    """
    return activation_plan_from(
        _require(store, "quant_config", None, allow_stale).read, smoothquant
    )


PLAN_ARRAYS = (
    "timesteps",
    "layer_names",
    "in_features",
    "post_gelu",
    "bits",
    "scale",
    "sq_bits",
    "sq_scale",
    "shift",
    "smoothing",
)
"""The `quant_config` arrays an activation plan is made of (also what `taq export` copies)."""


def activation_plan_from(
    read: Callable[[str], np.ndarray], smoothquant: bool = False
) -> ActivationPlan:
    """An `ActivationPlan` from `quant_config`'s arrays, `read(name)` returning each one."""
    names = read("layer_names").tolist()
    widths = read("in_features")
    post_gelu = read("post_gelu")
    bits = read("sq_bits" if smoothquant else "bits")
    scale = read("sq_scale" if smoothquant else "scale")
    shift, smoothing = read("shift"), read("smoothing")
    layers = {}
    for i, name in enumerate(names):
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
    return ActivationPlan(read("timesteps"), layers, smoothing=smoothquant)
