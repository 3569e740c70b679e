"""The taq artifact schema, as data: every group kind, its arrays, dtypes, dims and chunks.

One run is one zarr v3 store; each stage writes one group kind. This module is the single
place a stage declares what its group holds (docs/schema.md documents the same and a test
keeps them in step). Add or extend a kind by editing `GROUPS`; bump `SCHEMA_VERSION`'s minor
for additions readers may ignore, its major for anything an old reader would misread.

Unit groups are committed one index of their `unit` dim at a time (an image, a sample):
every array whose first dim is the unit dim is chunked 1 along it, so a unit owns its chunks
and a `done (unit,) bool` mask records which units are whole. Arrays without the unit dim are
constants, written when the group is created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SCHEMA_NAME = "taq"
SCHEMA_VERSION = "1.3"
# 1.1: checksummed chunks, every chunk written, stage timings
# 1.2: blockio/*/unified_modulation (unified blocks)
# 1.3: the `temporal` group (older stores simply lack it)
ATTRS_KEY = "taq"
"""The one namespaced attribute key on the root, on every group and on every array."""

DONE = "done"
"""Name of the done mask every unit group holds over its unit dim."""

DTYPES = ("float32", "float16", "bfloat16", "int32", "int64", "uint32", "bool", "str")
"""Logical dtypes. bfloat16 is stored as uint16 bits (see `dtypes.py`)."""


@dataclass(frozen=True)
class ArraySpec:
    """One array: logical dtype, dimension names, and chunk length per dim.

    A chunk of `None` spans the whole dim, so chunks follow the sizes given at creation.
    """

    dtype: str
    dims: tuple[str, ...]
    chunks: tuple[int | None, ...]
    doc: str
    padded: bool = False
    """NaN marks padding (channels beyond a layer's width, absent layers): readers do not
    require its values to be finite, except where `real_where` says they are real."""
    since: str | None = None
    """The schema minor version that added the array to an existing kind (None: from the
    start). A group written before lacks it; it reads as empty along the dims only it has."""
    real_where: tuple[str, int] | None = None
    """For a padded array: (a bool array of the group, an index on its last dim) marking where
    the values are real, not padding; there they must be finite like any other float. The
    mask's other dims are this array's first dims (`present[..., role]` for a role's scales)."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if len(self.chunks) != len(self.dims):
            raise ValueError(f"chunks {self.chunks} do not match dims {self.dims}")

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(sizes[dim] for dim in self.dims)

    def chunk_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(
            max(sizes[dim], 1) if chunk is None else chunk
            for dim, chunk in zip(self.dims, self.chunks, strict=True)
        )


@dataclass(frozen=True)
class GroupSpec:
    """One group kind: its arrays, the unit a writer commits, and the command producing it."""

    kind: str
    version: int
    command: str
    """The CLI that writes this group; error messages tell the user to run it."""
    doc: str
    unit: str | None = None
    """The dim written one index at a time, with a done mask over it; None: constants only."""
    named: bool = False
    """One group per name under the kind (`blockio/mm3`), not one per store."""
    arrays: Mapping[str, ArraySpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if DONE in self.arrays:
            raise ValueError(f"{self.kind}: `{DONE}` is reserved for the done mask")
        for name in self.unit_arrays():
            if self.arrays[name].chunks[0] != 1:
                raise ValueError(f"{self.kind}/{name}: chunk the unit dim by 1")

    @property
    def type(self) -> str:
        return f"{SCHEMA_NAME}.{self.kind}"

    def unit_arrays(self) -> list[str]:
        """Arrays written per unit: those whose first dim is the unit dim."""
        return [n for n, a in self.arrays.items() if self.unit and a.dims[:1] == (self.unit,)]

    def constant_arrays(self) -> list[str]:
        """Arrays written once, when the group is created."""
        unit_arrays = self.unit_arrays()
        return [name for name in self.arrays if name not in unit_arrays]

    def all_arrays(self) -> dict[str, ArraySpec]:
        """The declared arrays plus the done mask of a unit group."""
        if self.unit is None:
            return dict(self.arrays)
        done = ArraySpec(
            "bool", (self.unit,), (1,), f"True once every array of the {self.unit} is written"
        )
        return {**self.arrays, DONE: done}


def _array(
    dtype: str,
    dims: str,
    chunks: tuple[int | None, ...],
    doc: str,
    padded: bool = False,
    since: str | None = None,
    real_where: tuple[str, int] | None = None,
) -> ArraySpec:
    return ArraySpec(dtype, tuple(dims.split()), chunks, doc, padded, since, real_where)


CALIB = GroupSpec(
    kind="calib",
    version=1,
    command="taq-calib",
    doc="Calibration trajectories: x_t at each stored sampler step of real generations.",
    unit="image",
    arrays={
        "latents": _array(
            "float32",
            "image step H W C",
            (1, None, None, None, None),  # one chunk per image: few files, compresses better
            "x_t entering each stored step",
        ),
        "timesteps": _array(
            "float32", "step", (None,), "timestep (sigma * 1000) of each stored step"
        ),
        "sigmas": _array("float32", "step_all", (None,), "the full schedule, num_steps + 1 sigmas"),
        "step_index": _array("int32", "step", (None,), "sampler step of each stored step (stride)"),
        "prompts": _array("str", "image", (1,), "the prompt of each image"),
        "seeds": _array("int64", "image", (1,), "the noise seed of each image"),
        "final_latents": _array(
            "float32", "image H W C", (1, None, None, None), "x_0 after the last step"
        ),
        "cond_tokens": _array(
            "float32", "image L D", (1, None, None), "text conditioning tokens of the prompt"
        ),
        "cond_pooled": _array(
            "float32", "image P", (1, None), "pooled text embedding of the prompt"
        ),
        "negative_tokens": _array(
            "float32", "L D", (None, None), "conditioning tokens of the negative (CFG) prompt"
        ),
        "negative_pooled": _array(
            "float32", "P", (None,), "pooled embedding of the negative prompt"
        ),
    },
)

BLOCKIO = GroupSpec(
    kind="blockio",
    version=1,
    command="taq-adaround cache",
    doc=(
        "What one transformer block saw and produced in full precision, per recorded sample "
        "(one row of the block's batch: an image at a step, conditional or unconditional half). "
        "A unified block's single stream is stored split: its first text_token tokens as text, "
        "the rest as image; its modulation is unified_modulation (the MM ones are 0 wide)."
    ),
    unit="sample",
    named=True,
    arrays={
        "image_index": _array("int32", "sample", (1,), "calib image the sample comes from"),
        "step_index": _array("int32", "sample", (1,), "calib stored step of the sample"),
        "image_in": _array(
            "float16", "sample image_token hidden", (1, None, None), "image tokens in"
        ),
        "text_in": _array("float16", "sample text_token hidden", (1, None, None), "text tokens in"),
        "image_modulation": _array(
            "float32", "sample image_modulation", (1, None), "adaLN output of the image sub-block"
        ),
        "text_modulation": _array(
            "float32", "sample text_modulation", (1, None), "adaLN output of the text sub-block"
        ),
        "image_out": _array("float16", "sample image_token hidden", (1, None, None), "image out"),
        "text_out": _array(
            "float16",
            "sample text_out_token hidden",
            (1, None, None),
            "text tokens out (0 tokens for the last MM or unified block: unused downstream)",
        ),
        "unified_modulation": _array(
            "float32",
            "sample unified_modulation",
            (1, None),
            "adaLN output of a unified block (0 wide for MM blocks)",
            since="1.2",
        ),
    },
)

ACTSTATS = GroupSpec(
    kind="actstats",
    version=1,
    command="taq-actstats collect",
    doc=(
        "Per image (one CFG-doubled batch per stored step), per quantizable layer, per step: "
        "the input's per-channel min/max, a 256-bin histogram on edges fixed by image 0, and "
        "scalar summaries. `taq-actstats analyze` averages over images."
    ),
    unit="image",
    arrays={
        "layer_names": _array("str", "layer", (None,), "taq layer name (mm0.image.attn.q_proj)"),
        "in_features": _array("int32", "layer", (None,), "input width; channels beyond are NaN"),
        "step_index": _array("int32", "step", (None,), "calib stored step of each step"),
        "timesteps": _array("float32", "step", (None,), "timestep (sigma * 1000) of each step"),
        "channel_min": _array(
            "float32", "image layer step channel", (1, 1, None, None), "min over the batch", True
        ),
        "channel_max": _array(
            "float32", "image layer step channel", (1, 1, None, None), "max over the batch", True
        ),
        "hist_edges": _array(
            "float32", "image layer step edge", (1, None, None, None), "edges (image 0's)"
        ),
        "hist_counts": _array(
            "int64", "image layer step bin", (1, None, None, None), "values per bin (clipped)"
        ),
        "absmax": _array("float32", "image layer step", (1, None, None), "max |x|"),
        "p50": _array("float32", "image layer step", (1, None, None), "median |x|"),
        "p99": _array("float32", "image layer step", (1, None, None), "99th percentile |x|"),
        "p999": _array("float32", "image layer step", (1, None, None), "99.9th percentile |x|"),
        "outlier_channels": _array(
            "int32", "image layer step", (1, None, None), "channels with max|x| > 6 x median"
        ),
    },
)

QUANT_CONFIG = GroupSpec(
    kind="quant_config",
    version=2,  # 2: ranges are maxima over images with a margin; mean_square
    command="taq-actstats analyze",
    doc="Per timestep x layer activation quantizers: bits, scale, shift, SmoothQuant factors.",
    arrays={
        "layer_names": _array("str", "layer", (None,), "taq layer name"),
        "in_features": _array("int32", "layer", (None,), "input width; channels beyond are NaN"),
        "step_index": _array("int32", "step", (None,), "calib stored step of each row"),
        "timesteps": _array("float32", "step", (None,), "timestep (sigma * 1000) of each row"),
        "bits": _array("int32", "step layer", (None, None), "activation bits (4, 6 or 8)"),
        "scale": _array("float32", "step layer", (None, None), "signed symmetric grid step"),
        "post_gelu": _array("bool", "layer", (None,), "the layer is an mlp.fc2 (shifted input)"),
        "shift": _array(
            "float32",
            "step layer channel",
            (None, None, None),
            "subtracted first (fc2; else 0)",
            padded=True,
        ),
        "smoothing": _array(
            "float32",
            "layer channel",
            (None, None),
            "SmoothQuant s: x / s, W * s (1: none)",
            padded=True,
        ),
        "absmax": _array("float32", "step layer", (None, None), "max |x| over images (unshifted)"),
        "quant_absmax": _array(
            "float32", "step layer", (None, None), "the range the grid covers (shifted, margin)"
        ),
        "mean_square": _array("float32", "step layer", (None, None), "E[x^2] (the SQNR signal)"),
        "sq_bits": _array("int32", "step layer", (None, None), "bits with SmoothQuant"),
        "sq_scale": _array("float32", "step layer", (None, None), "grid step with SmoothQuant"),
        "sq_absmax": _array(
            "float32", "step layer", (None, None), "max |(x - shift) / s| with SmoothQuant"
        ),
    },
)

TEMPORAL = GroupSpec(
    kind="temporal",
    version=1,
    command="taq-actstats analyze",
    doc="The plan's temporal analysis: tier switchers, one-tier layers, the fc2 shift's effect.",
    arrays={
        "layer_names": _array("str", "layer", (None,), "taq layer name"),
        "post_gelu": _array("bool", "layer", (None,), "the layer is an mlp.fc2 (shifted input)"),
        "tier_changes": _array("int32", "layer", (None,), "tier changes between adjacent steps"),
        "switcher": _array("bool", "layer", (None,), "the tier differs between some steps"),
        "always_bits": _array("int32", "layer", (None,), "the one tier at every step; 0: switcher"),
        "range_unshifted": _array(
            "float32", "step layer", (None, None), "input range without the shift"
        ),
        "range_shifted": _array(
            "float32", "step layer", (None, None), "input range with the shift (fc2; else equal)"
        ),
    },
)


def role_key(role: str) -> str:
    """A layer role's name inside array names: `mlp.fc2` -> `fc2`."""
    return role.rsplit(".", 1)[1]


WEIGHT_ROLES = ("q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2")
"""The model's layer roles (`taq_model.taxonomy.LAYER_ROLES`, in model order) as they appear
in the `weights` group's array names and `role_names` (`role_key` of each role)."""


def _weight_arrays() -> dict[str, ArraySpec]:
    arrays = {
        "block_names": _array("str", "block", (1,), "taq block name (mm0, ...)"),
        "present": _array(
            "bool",
            "block stream role",
            (1, None, None),
            "the layer exists (last MM text: no post-attn)",
        ),
        "mse": _array("float32", "block", (1,), "block output MSE vs FP on the cached samples"),
        "rtn_mse": _array("float32", "block", (1,), "the same for round-to-nearest on this grid"),
        "seconds": _array("float32", "block", (1,), "wall time spent on the block"),
    }
    for index, role in enumerate(WEIGHT_ROLES):
        present = ("present", index)  # NaN only where the layer is absent
        arrays[f"{role}_weight"] = _array(
            "uint32",
            f"block stream {role}_out {role}_words",
            (1, 1, None, None),
            f"{role}: packed codes, MLX QuantizedLinear.weight (in * bits / 32 words per row)",
        )
        for part in ("scales", "biases"):
            arrays[f"{role}_{part}"] = _array(
                "float32",
                f"block stream {role}_out {role}_groups",
                (1, 1, None, None),
                f"{role}: QuantizedLinear.{part} (w = scale * q + bias per group)",
                padded=True,
                real_where=present,
            )
        arrays[f"{role}_act_scale"] = _array(
            "float32",
            "block stream",
            (1, None),
            f"{role}: learned static input scale (signed)",
            padded=True,
            real_where=present,
        )
    return arrays


WEIGHTS = GroupSpec(
    kind="weights",
    version=1,
    command="taq-adaround optimize",  # AdaRound's; each method has its own (`taq-adaround --help`)
    doc=(
        "Quantized weights in MLX's affine QuantizedLinear format, one named group per weight "
        "method (`weights/rtn`, `weights/gptq`, `weights/adaround`, ...), one unit per block."
    ),
    unit="block",
    named=True,
    arrays={
        **_weight_arrays(),
        "stream_names": _array("str", "stream", (None,), "sub-block streams (image, text)"),
        "role_names": _array("str", "role", (None,), "layer roles, as in the array names"),
    },
)

GROUPS: dict[str, GroupSpec] = {
    spec.kind: spec for spec in (CALIB, BLOCKIO, ACTSTATS, QUANT_CONFIG, TEMPORAL, WEIGHTS)
}
"""Every group kind taq knows, by kind."""
