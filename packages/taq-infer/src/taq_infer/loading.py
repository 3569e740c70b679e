"""Load a store's quantized model: the library entry the CLI and the pipeline share.

`load_quantized(handle, store, weights="adaround", act="timestep")` reads the `weights`
group (and `quant_config` when the activation mode needs it) through taq-io, refuses
artifacts of another model, group size or schedule with a one-line `InferenceError` /
`StoreError`, and packs the handle's MMDiT in place.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np

from taq_infer.artifacts import has_quant_config, read_activation_plan, read_weight_set
from taq_infer.model import (
    ACT_MODES,
    ActivationPlan,
    Fallback,
    InferenceError,
    QuantizedModel,
    WeightSet,
    check_activations,
    check_layer_map,
    load_weight_set,
    plan_rows,
)
from taq_io import ModelMismatchError, Store
from taq_model.presets import ModelHandle
from taq_model.sampling import timesteps_for
from taq_run.runs import model_identity

SCALE_DTYPES = {"float32": mx.float32, "float16": mx.float16}


def _dtype(value: str | mx.Dtype | None) -> mx.Dtype | None:
    if value is None or isinstance(value, mx.Dtype):
        return value
    if value not in SCALE_DTYPES:
        raise InferenceError(f"dtype must be one of {', '.join(SCALE_DTYPES)}, got {value!r}")
    return SCALE_DTYPES[value]


def resolve_act(act: str, has_plan: bool, has_static: bool) -> str:
    """`auto` -> timestep if there is an activation plan, else static if possible, else none."""
    if act != "auto":
        if act not in ACT_MODES:
            raise InferenceError(f"act must be auto or one of {', '.join(ACT_MODES)}, got {act!r}")
        return act
    if has_plan:
        return "timestep"
    return "static" if has_static else "none"


def load_quantized(
    handle: ModelHandle,
    store: Store | str | Path,
    *,
    weights: str = "adaround",
    act: str = "timestep",
    act_fallback: Fallback | None = None,
    smoothquant: bool = False,
    num_steps: int | None = None,
    scale_dtype: str | mx.Dtype | None = None,
    other_dtype: str | mx.Dtype | None = None,
    modulation_bits: int = 0,
    before_install: Callable[[ModelHandle], object] | None = None,
    allow_stale: bool = False,
) -> QuantizedModel:
    """Pack `handle`'s MMDiT (in place) with the store's `weights` and activation plan.

    With `num_steps`, a quant_config calibrated for another schedule is refused here,
    before any work (else at `prepare`/`generate`). `before_install(handle)` runs on the
    still-FP model once every artifact has been read and checked (an FP reference run).
    `modulation_bits` > 0 rounds the adaLN linears to nearest too (as `taq export` does).
    Stale weights or tiers (made from a calibration that changed since, at any depth) are
    refused unless `allow_stale`.
    """
    if not isinstance(store, Store):
        store = Store.open(store, mode="r")
    if store.model != model_identity(handle):
        raise ModelMismatchError(
            f"{store.path} was made for {store.model}, this model is {model_identity(handle)}: "
            "pass the store of this model preset"
        )
    weight_set = read_weight_set(store, weights, allow_stale)
    act = resolve_act(act, has_quant_config(store), bool(weight_set.static_activations))
    plan = read_activation_plan(store, smoothquant, allow_stale) if act == "timestep" else None
    return install_artifacts(
        handle,
        weight_set,
        plan,
        act=act,
        act_fallback=act_fallback,
        num_steps=num_steps,
        scale_dtype=scale_dtype,
        other_dtype=other_dtype,
        modulation_bits=modulation_bits,
        before_install=before_install,
    )


def check_schedule(
    handle: ModelHandle,
    plan: ActivationPlan | None,
    num_steps: int | None,
    fallback: Fallback | None,
) -> None:
    """Refuse, before any work, a plan calibrated for another schedule than `num_steps` of
    `handle`'s sampler (nothing to check without a plan or a step count)."""
    if plan is not None and num_steps is not None:
        timesteps = np.array(timesteps_for(handle.sigmas(num_steps)))[:num_steps]
        plan_rows(plan, timesteps, fallback)


def install_artifacts(
    handle: ModelHandle,
    weight_set: WeightSet,
    plan: ActivationPlan | None,
    *,
    act: str,
    act_fallback: Fallback | None = None,
    num_steps: int | None = None,
    scale_dtype: str | mx.Dtype | None = None,
    other_dtype: str | mx.Dtype | None = None,
    modulation_bits: int = 0,
    before_install: Callable[[ModelHandle], object] | None = None,
) -> QuantizedModel:
    """Check weights and plan against the model and the schedule, then pack it in place
    (what a store and an exported checkpoint share once their artifacts are read)."""
    names = [ref.name for ref in check_layer_map(handle.mmdit, weight_set)]
    check_activations(weight_set, plan, act, act_fallback, names)
    check_schedule(handle, plan, num_steps, act_fallback)
    if before_install is not None:
        before_install(handle)
    return load_weight_set(
        handle,
        weight_set,
        act=act,
        plan=plan,
        fallback=act_fallback,
        scale_dtype=_dtype(scale_dtype),
        other_dtype=_dtype(other_dtype),
        modulation_bits=modulation_bits,
    )
