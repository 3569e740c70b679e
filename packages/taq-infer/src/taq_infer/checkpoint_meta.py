"""A checkpoint's `taq.*` metadata, parsed and checked as a whole before anything is built.

A checkpoint is input someone else may have made (a download, a shared disk), so nothing in
it is trusted: every key must be JSON of the shape `taq export` writes, every number in the
range the loader accepts, the activation plan's sidecar a plain file name beside the
checkpoint (a name with a directory in it could lead the reader anywhere), and every float
tensor finite (a NaN scale renders black images without a word). Each failure is one
`CheckpointError` naming the key and the fix.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import mlx.core as mx

from taq_infer.loading import SCALE_DTYPES
from taq_infer.model import InferenceError
from taq_quant.export import MLX_BITS, MLX_GROUP_SIZES

KEY = "taq."
METHOD_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
REQUIRED = ("model", "quantization", "static_activations", "activation_plan")
MODULATION_BITS = (0, 2, 3, 4, 5, 6, 8)
ACTIVATION_BITS = range(2, 9)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class CheckpointError(InferenceError):
    """A checkpoint that cannot be exported or loaded as asked; the message names the fix."""


def parse_metadata(path: Path, metadata: dict[str, str]) -> dict[str, object]:
    """Every `taq.*` key of `path`'s metadata, parsed and checked (format and version are
    checked by the reader before)."""
    parsed: dict[str, object] = {}
    for key, value in metadata.items():
        name = key.removeprefix(KEY)
        if not key.startswith(KEY) or name in ("format", "format_version", "producer"):
            continue
        try:
            parsed[name] = json.loads(value)
        except ValueError:
            raise _bad(path, name, "is not JSON") from None
    missing = sorted(set(REQUIRED) - set(parsed))
    if missing:
        raise CheckpointError(f"{path} lacks metadata {missing}: export it again")
    _check_model(path, parsed["model"])
    _check_quantization(path, parsed["quantization"])
    _check_static(path, parsed["static_activations"])
    _check_plan_entry(path, parsed["activation_plan"])
    parsed["producer"] = metadata.get(f"{KEY}producer")
    return parsed


def check_finite(path: Path, arrays: dict[str, mx.array]) -> None:
    """Refuse a float tensor holding NaN or inf, naming it."""
    for key, value in arrays.items():
        if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item():
            raise CheckpointError(
                f"{path}: {key} holds NaN or inf: the file is corrupt; export it again with "
                "`taq export`"
            )


def _bad(path: Path, name: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: metadata {KEY}{name} {what}: the checkpoint is corrupt or was not made by "
        "`taq export`; export it again"
    )


def _is_int(value: object, allowed) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value in allowed


def _check_model(path: Path, model: object) -> None:
    if not (
        isinstance(model, dict)
        and set(model) == {"preset", "config_hash"}
        and all(isinstance(v, str) for v in model.values())
    ):
        raise _bad(path, "model", 'is not {"preset": ..., "config_hash": ...}')


def _check_grid(path: Path, name: str, spec: object) -> None:
    if not isinstance(spec, dict) or set(spec) != {"group_size", "bits"}:
        raise _bad(path, name, 'is not {"group_size": G, "bits": B}')
    if not _is_int(spec["bits"], MLX_BITS) or not _is_int(spec["group_size"], MLX_GROUP_SIZES):
        raise _bad(
            path,
            name,
            f"has bits {spec['bits']!r} and group size {spec['group_size']!r} (MLX stores bits "
            f"{', '.join(map(str, MLX_BITS))} in groups of {', '.join(map(str, MLX_GROUP_SIZES))})",
        )


def _check_quantization(path: Path, quant: object) -> None:
    name = "quantization"
    if not isinstance(quant, dict):
        raise _bad(path, name, "is not an object")
    weights = quant.get("weights")  # a weight method's name (any method: one layout for all)
    if not isinstance(weights, str) or not METHOD_NAME.fullmatch(weights):
        raise _bad(path, name, f"names weights {quant.get('weights')!r}")
    if quant.get("dtype") not in SCALE_DTYPES:
        raise _bad(path, name, f"names dtype {quant.get('dtype')!r}")
    if not _is_int(quant.get("modulation_bits"), MODULATION_BITS):
        raise _bad(path, name, f"has modulation_bits {quant.get('modulation_bits')!r}")
    _check_grid(path, name, {k: quant.get(k) for k in ("group_size", "bits")})
    layers = quant.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise _bad(path, name, "names no quantized layers")
    for layer, spec in layers.items():
        _check_grid(path, f"{name} layer {layer}", spec)


def _check_static(path: Path, static: object) -> None:
    name = "static_activations"
    if not isinstance(static, dict):
        raise _bad(path, name, "is not an object")
    for layer, entry in static.items():
        valid = (
            isinstance(entry, list)
            and len(entry) == 2
            and _is_int(entry[0], ACTIVATION_BITS)
            and isinstance(entry[1], int | float)
            and not isinstance(entry[1], bool)
            and math.isfinite(entry[1])
        )
        if not valid:
            raise _bad(path, name, f"has {layer}: {entry!r}, not [bits 2..8, a finite scale]")


def _check_plan_entry(path: Path, entry: object) -> None:
    name = "activation_plan"
    if entry is None:
        return
    if not isinstance(entry, dict) or set(entry) != {"file", "sha256"}:
        raise _bad(path, name, 'is not null or {"file": ..., "sha256": ...}')
    file = entry["file"]
    plain = (
        isinstance(file, str)
        and file not in ("", ".", "..")
        and PurePosixPath(file).name == file
        and PureWindowsPath(file).name == file
    )
    if not plain:
        raise _bad(path, name, f"names the file {file!r}, not a plain file name beside it")
    if not isinstance(entry["sha256"], str) or not _SHA256.match(entry["sha256"]):
        raise _bad(path, name, "has no sha256 of 64 hex digits")
