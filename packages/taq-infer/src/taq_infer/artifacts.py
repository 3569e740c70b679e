"""Read the `weights` and `quant_config` groups of a store into taq-infer's own types.

Everything taq-infer knows about the on-disk layout is in this module: the rest of the
package works on `WeightSet` (packed codes per layer, MLX `QuantizedLinear` format) and
`ActivationPlan` (per calibrated step and layer: bits, scale, zero point, shift,
smoothing). The groups' specs are `taq_io.schema.GROUPS["weights"]` and
`GROUPS["quant_config"]` (written by taq-adaround and taq-actstats; docs/schema.md).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from taq_infer.activations import ActivationQuant
from taq_infer.model import ActivationPlan, InferenceError, WeightSet
from taq_io import GROUPS, Store

WEIGHT_METHODS = ("adaround", "rtn")
_ROLE_PATH = {
    "q_proj": "attn.q_proj",
    "k_proj": "attn.k_proj",
    "v_proj": "attn.v_proj",
    "o_proj": "attn.o_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}


def _kind_ready(kind: str) -> bool:
    spec = GROUPS.get(kind)
    return spec is not None and bool(spec.arrays)


def has_quant_config(store: Store) -> bool:
    """Whether the store holds a `quant_config` group (complete or not)."""
    return any(group.spec.kind == "quant_config" for group in store.groups())


def read_weight_set(store: Store, method: str) -> WeightSet:
    """The packed W4 layers of `method` (adaround | rtn) from the store's `weights` group."""
    if method not in WEIGHT_METHODS:
        raise InferenceError(f"--weights must be one of {', '.join(WEIGHT_METHODS)}")
    group = store.require_group("weights", method)  # refuses missing / incomplete / stale
    config = group.meta.config
    bits, group_size = int(config["bits_w"]), None
    streams = group.read("stream_names").tolist()
    roles = group.read("role_names").tolist()
    blocks = group.read("block_names").tolist()
    present = group.read("present")
    layers: dict[str, nn.QuantizedLinear] = {}
    static: dict[str, ActivationQuant] = {}
    bits_a = int(config.get("bits_a", 0))
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


def read_activation_plan(store: Store) -> ActivationPlan:
    """Per calibrated step and layer activation quantizers from `quant_config`."""
    group = store.require_group("quant_config")
    if not _kind_ready("quant_config"):
        raise InferenceError(
            f"this taq-io does not define the `quant_config` layout yet ({group.path})"
        )
    raise InferenceError("quant_config layout not wired")  # pragma: no cover
