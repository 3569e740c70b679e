"""The `weights/<method>` groups' codec, in one place: what every method records, the
group's creation, the unit a block writes (encode) and the layers a reader gets (decode).

Every weight method (`taq_run.weight_methods`) writes the same layout: per block, stream and
layer role, MLX's affine `QuantizedLinear` arrays (packed codes, scales, biases), the layer's
static input scale (NaN: none learned), and the block's output error (`docs/schema.md`).
A method's own config is recorded whole; readers need only its grid (`grid_of`), so
taq-infer reads any method's weights without the package that made them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar, TypeVar

import numpy as np

from taq_io import GROUPS, MISSING, StageGroup, Store
from taq_io.schema import WEIGHT_ROLES, role_key
from taq_model.taxonomy import LAYER_ROLES
from taq_quant import WeightQuantConfig, check_exportable
from taq_quant.quantizer import SCALE_METHODS

OWNED_GROUP = "weights"  # this module creates, writes and reads the groups (one owner per group)
FORMAT = "mlx_affine"
Config = TypeVar("Config")


@dataclass(frozen=True)
class WeightGrid:
    """The fields every method's config has and every reader needs: the format of the
    codes, and the static activation bits the recorded input scales are for (0: none)."""

    bits_w: int = field(default=4, metadata={"help": "weight bits (2-8)"})
    group_size: int = field(default=64, metadata={"help": "weight quantization group size"})
    bits_a: int = field(
        default=0, metadata={"help": "static activation bits learned with the weights (0: none)"}
    )
    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version


@dataclass(frozen=True)
class GridConfig(WeightGrid):
    """The grid every method starts from (round-to-nearest's config; the others extend it);
    checked when built, so a bad flag is refused before any stage runs."""

    scale_method: str = field(
        default="mse", metadata={"help": "initial weight grid: minmax or mse (searched clip)"}
    )

    def __post_init__(self) -> None:
        check_exportable(self.bits_w, self.group_size)
        if self.scale_method not in SCALE_METHODS:
            raise ValueError(
                f"--scale-method {self.scale_method!r} is unknown: pick one of "
                f"{', '.join(SCALE_METHODS)}"
            )
        if self.bits_a and not 2 <= self.bits_a <= 8:
            raise ValueError(f"--bits-a must be 0 (off) or 2..8, got {self.bits_a}")

    @property
    def weight_config(self) -> WeightQuantConfig:
        return WeightQuantConfig(
            bits=self.bits_w, group_size=self.group_size, scale_method=self.scale_method
        )


@dataclass(frozen=True)
class PackedLayer:
    """One quantized linear as MLX's `QuantizedLinear` holds it (`weight` uint32 codes)."""

    stream: str  # image | text | unified
    role: str  # a `LAYER_ROLES` entry, e.g. `mlp.fc2`
    weight: np.ndarray
    scales: np.ndarray
    biases: np.ndarray
    act_scale: float = 0.0  # the static input scale; 0: none (the group's `bits_a` is 0)


@dataclass(frozen=True)
class BlockWeights:
    """What a method's per-block entry function returns: the block's quantized layers and
    its output error on the cached samples (and round-to-nearest's on the same grid)."""

    layers: list[PackedLayer]
    mse: float
    rtn_mse: float
    seconds: float


def recorded_config(config: object, blocks: Sequence[str], method: str) -> dict:
    """The config `weights/<method>` records for a method's `config` over `blocks`. A field
    whose metadata says `"record": "unless default"` is left out at its default: a field
    added later then leaves the groups recorded before it up to date."""
    left_out = {
        f.name
        for f in fields(config)
        if f.metadata.get("record") == "unless default" and getattr(config, f.name) == f.default
    }
    recorded = {k: v for k, v in asdict(config).items() if k not in left_out}
    return {**recorded, "blocks": list(blocks), "format": FORMAT, "method": method}


def sizes_of(block: BlockWeights, blocks: Sequence[str], streams: Sequence[str]) -> dict:
    """The group's sizes, from one block's layers (every block of a model has the same)."""
    sizes = {"block": len(blocks), "stream": len(streams), "role": len(WEIGHT_ROLES)}
    for layer in block.layers:
        role = role_key(layer.role)
        sizes[f"{role}_out"], sizes[f"{role}_words"] = layer.weight.shape
        sizes[f"{role}_groups"] = layer.scales.shape[1]
    return sizes


def create_weights_group(
    store: Store,
    method: str,
    config: object,
    blocks: Sequence[str],
    *,
    producer: str,
    inputs: Mapping[str, str],
    sizes: Mapping[str, int],
    streams: Sequence[str],
    overwrite: bool = False,
) -> StageGroup:
    """Allocate (or reopen, to resume) `weights/<method>`."""
    return store.create_group(
        OWNED_GROUP,
        method,
        producer=producer,
        config=recorded_config(config, blocks, method),
        inputs=inputs,
        sizes=sizes,
        constants={"stream_names": list(streams), "role_names": list(WEIGHT_ROLES)},
        overwrite=overwrite,
    )


def existing_weights(store: Store, method: str) -> StageGroup | None:
    """`weights/<method>` as far as it was created (None: absent): what a resume reuses."""
    return store.state(OWNED_GROUP, method).group


def write_block(group: StageGroup, index: int, block: str, weights: BlockWeights) -> None:
    """Encode `weights` as block `index` (`block`) of the group and mark it done."""
    streams = group.read("stream_names").tolist()
    sizes = group.sizes
    values: dict[str, object] = {"block_names": block}
    present = np.zeros((len(streams), len(WEIGHT_ROLES)), bool)
    for role in WEIGHT_ROLES:
        out, words, groups = (sizes[f"{role}_{d}"] for d in ("out", "words", "groups"))
        values[f"{role}_weight"] = np.zeros((len(streams), out, words), np.uint32)
        for part in ("scales", "biases"):
            values[f"{role}_{part}"] = np.full((len(streams), out, groups), np.nan, np.float32)
        values[f"{role}_act_scale"] = np.full(len(streams), np.nan, np.float32)
    for layer in weights.layers:
        s, role = streams.index(layer.stream), role_key(layer.role)
        present[s, WEIGHT_ROLES.index(role)] = True
        values[f"{role}_weight"][s] = layer.weight
        values[f"{role}_scales"][s] = layer.scales
        values[f"{role}_biases"][s] = layer.biases
        values[f"{role}_act_scale"][s] = layer.act_scale
    values["present"] = present
    values["mse"] = weights.mse
    values["rtn_mse"] = weights.rtn_mse
    values["seconds"] = weights.seconds
    group.write_unit(index, values)


def require_weights(store: Store, method: str, **kwargs) -> StageGroup:
    """The complete, up-to-date `weights/<method>` group to read (`Store.require_group`'s
    refusals; `allow_stale` to read a stale one anyway)."""
    return store.require_group(OWNED_GROUP, method, **kwargs)


def weight_methods_in(store: Store) -> list[str]:
    """The methods whose `weights/<method>` group the store holds (in any state)."""
    return sorted(
        group.path.partition("/")[2]
        for group in store.groups()
        if group.path.startswith(f"{OWNED_GROUP}/")
    )


def has_weights(store: Store, method: str) -> bool:
    return store.state(OWNED_GROUP, method).state != MISSING


def config_of(group: StageGroup, cls: type[Config]) -> Config:
    """`cls` (a method's config, or `WeightGrid`) as `group` recorded it; fields it did not
    record keep `cls`'s defaults (a group recorded before `bits_a` existed: 0, none)."""
    recorded = group.meta.config
    known = {f.name for f in fields(cls)}
    return cls(**{"bits_a": 0, **{k: v for k, v in recorded.items() if k in known}})


def grid_of(group: StageGroup) -> WeightGrid:
    """The format a `weights/<method>` group's codes are in, whatever method made them."""
    return config_of(group, WeightGrid)


def block_names_of(group: StageGroup) -> list[str]:
    return group.read("block_names").tolist()


def read_layers(group: StageGroup) -> Iterator[tuple[str, PackedLayer]]:
    """Every present layer of the group as `(layer name, PackedLayer)`, e.g.
    `mm3.image.mlp.fc2`, in block, stream and role order."""
    streams = group.read("stream_names").tolist()
    roles = group.read("role_names").tolist()
    blocks = group.read("block_names").tolist()
    present = group.read("present")
    role_paths = {role_key(role): role for role in LAYER_ROLES}
    for r, role in enumerate(roles):
        weight = group.read(f"{role}_weight")
        scales, biases = group.read(f"{role}_scales"), group.read(f"{role}_biases")
        act_scale = group.read(f"{role}_act_scale")
        for b, block in enumerate(blocks):
            for s, stream in enumerate(streams):
                if present[b, s, r]:
                    layer = PackedLayer(
                        stream,
                        role_paths[role],
                        weight[b, s],
                        scales[b, s],
                        biases[b, s],
                        float(act_scale[b, s]),
                    )
                    yield f"{block}.{stream}.{role_paths[role]}", layer


def read_block_errors(group: StageGroup) -> dict[str, dict[str, float]]:
    """Per block: its output MSE, round-to-nearest's on the same grid, and the seconds the
    method spent on it."""
    names = group.read("block_names").tolist()
    mse, rtn_mse, seconds = group.read("mse"), group.read("rtn_mse"), group.read("seconds")
    return {
        name: {"mse": float(mse[i]), "rtn_mse": float(rtn_mse[i]), "seconds": float(seconds[i])}
        for i, name in enumerate(names)
    }
