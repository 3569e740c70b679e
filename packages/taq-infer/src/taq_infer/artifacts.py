"""Read the `weights` and `quant_config` groups of a store into taq-infer's own types.

Everything taq-infer knows about the on-disk layout is in this module: the rest of the
package works on `WeightSet` (packed codes per layer, MLX `QuantizedLinear` format) and
`ActivationPlan` (per calibrated step and layer: bits, scale, zero point, shift,
smoothing). The groups' specs are `taq_io.schema.GROUPS["weights"]` and
`GROUPS["quant_config"]` (written by taq-adaround and taq-actstats; docs/schema.md).
"""

from __future__ import annotations

from taq_infer.model import ActivationPlan, InferenceError, WeightSet
from taq_io import GROUPS, Store

WEIGHT_METHODS = ("adaround", "rtn")


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
    group = store.require_group("weights")  # refuses missing / incomplete / stale
    if not _kind_ready("weights"):
        raise InferenceError(f"this taq-io does not define the `weights` layout yet ({group.path})")
    raise InferenceError("weights layout not wired")  # pragma: no cover


def read_activation_plan(store: Store) -> ActivationPlan:
    """Per calibrated step and layer activation quantizers from `quant_config`."""
    group = store.require_group("quant_config")
    if not _kind_ready("quant_config"):
        raise InferenceError(
            f"this taq-io does not define the `quant_config` layout yet ({group.path})"
        )
    raise InferenceError("quant_config layout not wired")  # pragma: no cover
