"""What leaves the store: one safetensors checkpoint that plain MLX loads, and its reader.

`export_checkpoint` packs a store's model exactly as `taq-infer --store` does
(`load_quantized`, weight-only) and writes the MMDiT's parameters as they then are: every
quantized linear in MLX's `QuantizedLinear` layout (`weight` uint32 codes, `scales`,
`biases`, `bias`) under its DiffusionKit parameter path, every other parameter as a float
array. Its safetensors metadata (all `taq.*` keys, JSON values) names the format and its
version, the producer, the model preset and identity, DiffusionKit's `MMDiTConfig`, the
quantization map (module path -> group size and bits, what `nn.quantize`'s
`class_predicate` replays) and AdaRound's static activation scales.

The time-aware activation plan (`quant_config`: per-step bits and scales, post-GELU shifts,
SmoothQuant vectors) goes to a sidecar, `<name>.actplan.safetensors`, whose sha256 the
checkpoint records: the shift vectors alone are steps x fc2 layers x width float32 (0.4 MiB
for tiny-digits, ~32 MiB for SD3-Medium at 28 steps), too much for a JSON header. Weight-only
and static-activation inference need the checkpoint alone.

`load_checkpoint` rebuilds the preset, refuses a checkpoint of another model or a newer
format, loads the parameters and installs the same `PackedLinear`s as the store path, so
both produce bit-identical images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from importlib.metadata import version
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from taq_infer.activations import ActivationQuant
from taq_infer.artifacts import (
    DEFAULT_WEIGHTS,
    activation_plan_from,
    has_quant_config,
    read_weight_set,
)
from taq_infer.checkpoint_meta import (
    KEY,
    MODULATION_BITS,
    CheckpointError,
    check_finite,
    parse_metadata,
)
from taq_infer.loading import SCALE_DTYPES, check_schedule, install_artifacts, resolve_act
from taq_infer.model import (
    ActivationPlan,
    Fallback,
    QuantizedModel,
    WeightSet,
)
from taq_infer.modulation import pin_modulation
from taq_infer.packed import PackedLinear
from taq_io import GROUPS, ModelIdentity
from taq_model.blocks import is_modulation_linear, is_modulation_path, model_parameters
from taq_model.presets import ModelHandle, config_dict, load_preset
from taq_model.taxonomy import quantizable_layers
from taq_run.quant_config import QuantPlan, read_quant_plan, require_quant_config
from taq_run.runs import model_identity, open_run
from taq_run.weights import require_weights

FORMAT = "taq.checkpoint"
FORMAT_VERSION = 1
PLAN_SUFFIX = ".actplan.safetensors"
SIDECAR_ARRAYS = tuple(f.name for f in fields(QuantPlan) if f.name != "layer_names")
"""The plan's arrays the sidecar holds (its layer names are in the sidecar's metadata)."""


@dataclass(frozen=True)
class ExportConfig:
    """`taq export` flags, one to one."""

    store: str
    output: str
    weights: str = DEFAULT_WEIGHTS  # any `weights/<method>` group of the store
    dtype: str = "float16"  # unquantized parameters and the W4 scales/biases
    modulation_bits: int = 4  # adaLN linears rounded to nearest; 0 keeps them float
    local_ckpt: str | None = None
    overwrite: bool = False  # replace an existing checkpoint (and its sidecar)

    def __post_init__(self) -> None:
        if not str(self.output).endswith(".safetensors"):
            raise CheckpointError(f"--output must end in .safetensors, got {self.output}")
        if self.dtype not in SCALE_DTYPES:
            raise CheckpointError(f"--dtype must be one of {', '.join(SCALE_DTYPES)}")
        if self.modulation_bits not in MODULATION_BITS:
            raise CheckpointError(
                f"--modulation-bits must be one of {', '.join(map(str, MODULATION_BITS))} "
                f"(0: float), got {self.modulation_bits}"
            )

    def store_flags(self) -> str:
        """The `taq-infer --store` flags that load the same model the checkpoint holds."""
        flags = f"--weights {self.weights} --scale-dtype {self.dtype} --other-dtype {self.dtype}"
        if self.modulation_bits:
            flags += f" --modulation-bits {self.modulation_bits}"
        return flags


@dataclass(frozen=True)
class ExportSummary:
    output: Path
    plan: Path | None
    nbytes: int  # the checkpoint file
    plan_nbytes: int  # the sidecar (0 without one)
    float16_nbytes: int  # every MMDiT parameter as float16
    quantized_layers: int  # taxonomy layers (packed)
    bits: int  # their weight bits
    modulation_layers: int  # adaLN linears quantized

    @property
    def ratio(self) -> float:
        return self.nbytes / self.float16_nbytes


def float16_nbytes(mmdit: nn.Module) -> int:
    """Bytes of every MMDiT parameter in float16 (the float checkpoint a user would ship)."""
    return sum(value.size * 2 for _, value in tree_flatten(mmdit.parameters()))


def projected_nbytes(
    mmdit: nn.Module,
    bits: int = 4,
    group_size: int = 64,
    dtype: str = "float16",
    modulation_bits: int = 4,
) -> int:
    """Tensor bytes `export_checkpoint` writes for a float `mmdit` (the header aside).

    From parameter shapes only, so DiffusionKit's real configs can be projected without
    weights (MLX builds them lazily): taxonomy layers as `bits`-bit codes with `dtype`
    scales and biases per group and their float32 bias; adaLN linears likewise at
    `modulation_bits` (0: `dtype`) with a `dtype` bias; every other parameter in `dtype`.
    """
    width = mx.float16.size if dtype == "float16" else mx.float32.size
    packed = {ref.path for ref in quantizable_layers(mmdit)}
    total = 0
    for path, value in model_parameters(mmdit):
        module, kind = path.rsplit(".", 1)
        layer_bits = (
            bits if module in packed else modulation_bits if is_modulation_path(module) else 0
        )
        if not layer_bits:
            total += value.size * width
        elif kind == "weight":
            out_dims, in_dims = value.shape
            total += (
                out_dims * in_dims * layer_bits // 8
                + 2 * out_dims * (in_dims // group_size) * width
            )
        else:  # the linear's bias: float32 for packed layers (kept as the model has it)
            total += value.size * (value.dtype.size if module in packed else width)
    return total


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _save(path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
    """Write next to `path`, then rename: a killed export leaves no half file behind, and a
    failed one removes its partial file."""
    partial = path.with_name(f".{path.stem}.partial.safetensors")
    try:
        mx.save_safetensors(str(partial), arrays, metadata=metadata)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def plan_path_of(output: Path) -> Path:
    """The activation plan's sidecar of the checkpoint `output`."""
    return output.with_name(output.name.removesuffix(".safetensors") + PLAN_SUFFIX)


def check_output(config: ExportConfig) -> None:
    """Refuse, before any work, an output that is a directory, that exists (unless
    `config.overwrite`), or that lies inside a zarr store (a store holds its own files)."""
    output = Path(config.output)
    for path in (output, plan_path_of(output)):
        if path.is_dir():
            raise CheckpointError(f"--output {path} is a directory: pass a .safetensors file path")
        if (path.exists() or path.is_symlink()) and not config.overwrite:
            raise CheckpointError(
                f"{path} exists: pass --overwrite to replace it, or another --output"
            )
    existing = next(p for p in (output.parent, *output.parent.parents) if p.exists())
    limit = os.pathconf(existing, "PC_NAME_MAX")
    written = (output, plan_path_of(output))  # each also as its partial file, longer
    longest = max((f".{p.stem}.partial.safetensors" for p in written), key=len)
    if len(longest.encode()) > limit:
        raise CheckpointError(
            f"--output {output.name[:40]}... is too long for the file system (its partial file's "
            f"name is {len(longest.encode())} bytes, at most {limit}): pass a shorter --output"
        )
    for parent in output.resolve().parents:
        if (parent / "zarr.json").is_file():
            raise CheckpointError(
                f"--output {output} is inside the zarr store {parent}: write the checkpoint "
                "outside it"
            )


def _quantization_map(mmdit: nn.Module) -> dict[str, dict[str, int]]:
    return {
        path: {"group_size": module.group_size, "bits": module.bits}
        for path, module in mmdit.named_modules()
        if isinstance(module, PackedLinear | nn.QuantizedLinear)
    }


def _plan_arrays(store) -> tuple[dict[str, mx.array], dict[str, str]]:
    """`quant_config`'s arrays for the sidecar; shifts only for the post-GELU layers."""
    group = require_quant_config(store)
    plan = read_quant_plan(group)
    arrays = {name: getattr(plan, name) for name in SIDECAR_ARRAYS}
    post_gelu = plan.post_gelu.astype(bool)
    arrays["shift"] = plan.shift[:, post_gelu]
    arrays["post_gelu"] = post_gelu.astype(np.uint8)
    meta = {
        "layer_names": json.dumps(plan.layer_names),
        "quant_config": json.dumps(group.identity()),
    }
    return {k: mx.array(v) for k, v in arrays.items()}, meta


def export_checkpoint(config: ExportConfig) -> ExportSummary:
    """Write the store's packed model (weights `config.weights`) to `config.output`."""
    check_output(config)
    store, handle = open_run(config.store, mode="r", local_ckpt=config.local_ckpt)
    weight_set = read_weight_set(store, config.weights)  # names the stage command if absent
    plan = _plan_arrays(store) if has_quant_config(store) else None
    source = {"weights": require_weights(store, config.weights).identity()}
    return write_checkpoint(handle, weight_set, config, plan=plan, source=source)


def write_checkpoint(
    handle: ModelHandle,
    weight_set: WeightSet,
    config: ExportConfig,
    *,
    plan: tuple[dict[str, mx.array], dict[str, str]] | None = None,
    source: dict | None = None,
) -> ExportSummary:
    """Pack `handle` (in place) with `weight_set` as `config` says and write the checkpoint
    (and the activation plan's sidecar, given `plan`). `config.store` is only recorded."""
    float16_total = float16_nbytes(handle.mmdit)
    model = install_artifacts(
        handle,
        weight_set,
        None,
        act="none",
        scale_dtype=config.dtype,
        other_dtype=config.dtype,
        modulation_bits=config.modulation_bits,
    )
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    plan_path, plan_meta = None, None
    if plan is not None:
        plan_path = plan_path_of(output)
        arrays, meta = plan
        _save(plan_path, arrays, {f"{KEY}{k}": v for k, v in meta.items()} | _format_meta())
        plan_meta = {"file": plan_path.name, "sha256": _sha256(plan_path)}
    static = weight_set.static_activations
    quant_map = _quantization_map(handle.mmdit)
    metadata = _format_meta() | {
        f"{KEY}model": json.dumps(model_identity(handle).to_json()),
        f"{KEY}mmdit_config": json.dumps(config_dict(handle.mmdit.config, bare_dtypes=True)),
        f"{KEY}quantization": json.dumps(
            {
                "weights": weight_set.method,
                "bits": weight_set.bits,
                "group_size": weight_set.group_size,
                "mode": "affine",
                "dtype": config.dtype,
                "modulation_bits": config.modulation_bits,
                "layers": quant_map,
                "store_flags": config.store_flags(),
            }
        ),
        f"{KEY}static_activations": json.dumps(
            {name: [q.bits[0], float(q.scale[0])] for name, q in static.items()}
        ),
        f"{KEY}activation_plan": json.dumps(plan_meta),
        f"{KEY}source": json.dumps(source or {}),
    }
    try:
        _save(output, dict(model_parameters(handle.mmdit)), metadata)
    except BaseException:
        if plan_path is not None:  # no sidecar without its checkpoint
            plan_path.unlink(missing_ok=True)
        raise
    return ExportSummary(
        output=output,
        plan=plan_path,
        nbytes=output.stat().st_size,
        plan_nbytes=plan_path.stat().st_size if plan_path else 0,
        float16_nbytes=float16_total,
        quantized_layers=len(model.layers),
        bits=weight_set.bits,
        modulation_layers=sum(is_modulation_path(path) for path in quant_map),
    )


def _format_meta() -> dict[str, str]:
    return {
        f"{KEY}format": FORMAT,
        f"{KEY}format_version": str(FORMAT_VERSION),
        f"{KEY}producer": f"taq-infer {version('taq-infer')}",
    }


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's arrays and parsed `taq.*` metadata."""

    path: Path
    arrays: dict[str, mx.array]
    metadata: dict[str, object]

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity(**self.metadata["model"])

    @property
    def quantization(self) -> dict:
        return self.metadata["quantization"]


def _load_safetensors(path: Path, what: str) -> tuple[dict[str, mx.array], dict[str, str]]:
    try:
        arrays, metadata = mx.load(str(path), return_metadata=True)
    except (RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({reason}): the {what} is truncated or "
            "corrupt; export it again with `taq export`"
        ) from None
    if metadata.get(f"{KEY}format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a taq {what} (no {KEY}format "
            f"{FORMAT!r} in its metadata): make one with `taq export`"
        )
    found = metadata.get(f"{KEY}format_version", "?")
    if not found.isdigit() or int(found) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has {what} format version {found}, this taq-infer reads up to "
            f"{FORMAT_VERSION}: upgrade taq-infer (or export again with this taq)"
        )
    return arrays, metadata


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint (format, version, metadata); nothing is installed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: make one with `taq export --store RUN --output {path}`"
        )
    arrays, metadata = _load_safetensors(path, "checkpoint")
    parsed = parse_metadata(path, metadata)
    check_finite(path, arrays)
    return Checkpoint(path, arrays, parsed)


def read_plan(checkpoint: Checkpoint, smoothquant: bool = False) -> ActivationPlan:
    """The checkpoint's time-aware activation plan, from its sidecar."""
    entry = checkpoint.metadata["activation_plan"]
    if entry is None:
        raise CheckpointError(
            f"{checkpoint.path} has no activation plan (its store had no quant_config): "
            "pass --act static|none, or run `taq-actstats analyze` and export again"
        )
    path = checkpoint.path.with_name(entry["file"])
    if not path.is_file():
        raise CheckpointError(
            f"the activation plan {path} of {checkpoint.path.name} is missing: copy it next to "
            "the checkpoint, or pass --act static|none"
        )
    if _sha256(path) != entry["sha256"]:
        raise CheckpointError(
            f"{path} is not the activation plan exported with {checkpoint.path.name} "
            "(sha256 differs): export both again with `taq export`"
        )
    arrays, metadata = _load_safetensors(path, "activation plan")
    padded = {name for name, spec in GROUPS["quant_config"].arrays.items() if spec.padded}
    check_finite(path, {k: v for k, v in arrays.items() if k not in padded})  # NaN: padding
    try:
        names = json.loads(metadata[f"{KEY}layer_names"])
    except (KeyError, ValueError):
        raise CheckpointError(
            f"{path} has no readable {KEY}layer_names: export it again with `taq export`"
        ) from None
    missing = [name for name in SIDECAR_ARRAYS if name not in arrays]
    if missing:
        raise CheckpointError(
            f"{path} lacks {', '.join(missing)}: export it again with `taq export`"
        )
    plan = {name: np.array(arrays[name]) for name in SIDECAR_ARRAYS}
    post_gelu = plan["post_gelu"].astype(bool)
    compact = plan["shift"]  # the sidecar holds the post-GELU layers' rows only
    plan["shift"] = np.zeros((compact.shape[0], len(names), compact.shape[2]), compact.dtype)
    plan["shift"][:, post_gelu] = compact
    return activation_plan_from(QuantPlan(layer_names=names, **plan), smoothquant)


def _weight_set(checkpoint: Checkpoint, handle: ModelHandle) -> WeightSet:
    """The taxonomy layers' `QuantizedLinear`s and static scales, checked against the model."""
    quant = checkpoint.quantization
    refs = {ref.path: ref for ref in quantizable_layers(handle.mmdit)}
    layers = {}
    for path, spec in quant["layers"].items():
        if is_modulation_path(path):
            continue
        if path not in refs:
            raise CheckpointError(
                f"{checkpoint.path} quantizes {path}, which this model lacks: it was made for "
                "another model preset"
            )
        try:
            weight, scales, biases = (
                checkpoint.arrays[f"{path}.{key}"] for key in ("weight", "scales", "biases")
            )
        except KeyError as err:
            raise CheckpointError(f"{checkpoint.path} lacks {err}: export it again") from None
        out_dims, words = weight.shape
        layer = nn.QuantizedLinear(
            words * 32 // spec["bits"],
            out_dims,
            bias=f"{path}.bias" in checkpoint.arrays,
            group_size=spec["group_size"],
            bits=spec["bits"],
        )
        layer.weight, layer.scales, layer.biases = weight, scales, biases
        if "bias" in layer:
            layer.bias = checkpoint.arrays[f"{path}.bias"]
        layer.freeze()
        layers[refs[path].name] = layer
    recorded = checkpoint.metadata["static_activations"]
    unknown = sorted(set(recorded) - set(layers))
    if unknown:
        raise CheckpointError(
            f"{checkpoint.path} has static activation scales for {', '.join(unknown[:3])}, "
            "which it does not quantize: it is corrupt or was made for another model; export "
            "it again"
        )
    static = {
        name: ActivationQuant.static(scale=scale, bits=bits)
        for name, (bits, scale) in recorded.items()
    }
    return WeightSet(quant["weights"], quant["bits"], quant["group_size"], layers, static)


def _load_other_parameters(checkpoint: Checkpoint, handle: ModelHandle, packed: set[str]) -> None:
    """Quantize the adaLN linears the checkpoint quantized, then load every other parameter."""
    quant = checkpoint.quantization["layers"]
    nn.quantize(
        handle.mmdit,
        class_predicate=lambda path, module: (
            quant.get(path, False) if is_modulation_linear(path, module) else False
        ),
    )

    def unpacked(key: str) -> bool:
        return key.rsplit(".", 1)[0] not in packed

    expected = {k: v.shape for k, v in model_parameters(handle.mmdit) if unpacked(k)}
    given = {k: v for k, v in checkpoint.arrays.items() if unpacked(k)}
    if set(given) != set(expected):
        odd = sorted(set(given) ^ set(expected))
        raise CheckpointError(
            f"{checkpoint.path} and this model differ in parameters ({', '.join(odd[:2])}"
            f"{', ...' if len(odd) > 2 else ''}): it was made for another model preset"
        )
    for key, value in given.items():
        if tuple(value.shape) != tuple(expected[key]):
            raise CheckpointError(
                f"{checkpoint.path}: {key} has shape {tuple(value.shape)}, this model's "
                f"{tuple(expected[key])}: it was made for another model preset"
            )
    handle.mmdit.load_weights(list(given.items()), strict=False)
    pin_modulation(handle)  # sampling reloads the checkpoint's adaLN, not the preset's


def load_checkpoint(
    checkpoint: Checkpoint | str | Path,
    handle: ModelHandle | None = None,
    *,
    act: str = "auto",
    act_fallback: Fallback | None = None,
    smoothquant: bool = False,
    num_steps: int | None = None,
    local_ckpt: str | None = None,
    before_install: Callable[[ModelHandle], object] | None = None,
) -> QuantizedModel:
    """Build the checkpoint's model preset (or use `handle`) and pack it from the file alone.

    The same `PackedLinear`s and activation plan as `load_quantized` on the store the
    checkpoint came from (with its `store_flags`), so both sample bit-identically.
    `before_install(handle)` runs on the float preset before any checkpoint array is loaded.
    """
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = read_checkpoint(checkpoint)
    expected = checkpoint.identity
    if handle is None:
        handle = load_preset(expected.preset, local_ckpt=local_ckpt)
    if model_identity(handle) != expected:
        raise CheckpointError(
            f"{checkpoint.path} was made for {expected}, this model is {model_identity(handle)}: "
            f"use a checkpoint exported from a store of this model"
        )
    weight_set = _weight_set(checkpoint, handle)
    act = resolve_act(
        act, checkpoint.metadata["activation_plan"] is not None, bool(weight_set.static_activations)
    )
    plan = read_plan(checkpoint, smoothquant) if act == "timestep" else None
    check_schedule(handle, plan, num_steps, act_fallback)
    if before_install is not None:
        before_install(handle)
    packed = {ref.path for ref in quantizable_layers(handle.mmdit) if ref.name in weight_set.layers}
    _load_other_parameters(checkpoint, handle, packed)
    return install_artifacts(handle, weight_set, plan, act=act, act_fallback=act_fallback)
