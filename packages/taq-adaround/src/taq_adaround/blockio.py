"""Cache what every transformer block sees and produces in full precision (TaQ-DiT §3.2).

Block reconstruction needs, per calibration sample, the block's inputs, the adaLN
modulation it read (per stream: image and text for MM blocks, one for unified blocks; it
depends on the prompt, so it is recorded, never recomputed) and its FP outputs. One forward
pass of the FP model per calib (image, step) feeds every hooked block at once; each pass is
written straight to the `blockio/<block>` groups (one unit per row of the CFG-doubled batch)
and dropped, so memory holds one pass at a time. Under `mlx.launch` rank r caches the calib
images at positions p with p % ranks == r (`taq_run.writers`); a pass depends only on its
image and step, so the groups are the same bit for bit whatever the number of ranks. A
unified block's `concat(text, image)` stream is stored split at the text length, in the MM
layout (docs/schema.md, `blockio`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import ClassVar

import mlx.core as mx
import numpy as np

from taq_adaround.reconstruct import BlockData
from taq_hooks import BlockCall, hook_blocks
from taq_io import GROUPS, StageGroup, Store
from taq_model.presets import ModelHandle
from taq_model.taxonomy import block_names
from taq_run.calib import calib_config_of, require_calib
from taq_run.runs import forward_calibration
from taq_run.writers import commit, create_group
from taq_runtime import ranks
from taq_runtime.cli import at_least, progress

PRODUCER = f"taq-adaround {version('taq-adaround')}"
OWNED_GROUP = "blockio"  # this module writes and reads the group (one owner per group)


class DataError(ValueError):
    """Cached data that cannot be trained on (NaN, missing)."""


@dataclass(frozen=True)
class CacheConfig:
    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version
    num_images: int | None = None  # None: every calib image
    stride: int = 1  # every stride-th stored calib step
    blocks: tuple[str, ...] | None = None  # None: every block

    def __post_init__(self) -> None:
        at_least(1, num_images=self.num_images, stride=self.stride)

    def to_json(self) -> dict:
        data = asdict(self)
        data["blocks"] = list(self.blocks) if self.blocks else None
        return data


@dataclass(frozen=True)
class CachePlan:
    images: list[int]
    steps: list[int]
    rows: int  # samples per forward pass (2 with CFG)

    def sample(self, image_pos: int, step_pos: int, row: int) -> int:
        return (image_pos * len(self.steps) + step_pos) * self.rows + row

    @property
    def num_samples(self) -> int:
        return len(self.images) * len(self.steps) * self.rows


def plan_cache(calib: StageGroup, config: CacheConfig) -> CachePlan:
    total_images = calib.sizes["image"]
    count = total_images if config.num_images is None else config.num_images
    if not 1 <= count <= total_images:
        raise ValueError(f"--num-images must be in 1..{total_images} (the calib group's images)")
    if config.stride < 1:
        raise ValueError(f"--stride must be at least 1, got {config.stride}")
    steps = list(range(0, calib.sizes["step"], config.stride))
    rows = 2 if float(calib_config_of(calib).cfg) > 0 else 1
    return CachePlan(list(range(count)), steps, rows)


MODULATIONS = ("image", "text", "unified")


@dataclass(frozen=True)
class BlockIO:
    """A recorded call in the stored layout: `(B, L, 1, D)` tokens split into image and text
    (a unified block's `concat(text, image)` stream split at the text length), text output
    None when the model discards it, modulation per stream (absent streams: None)."""

    image_in: mx.array
    text_in: mx.array
    image_out: mx.array
    text_out: mx.array | None
    modulation: dict[str, mx.array | None]


def block_io(call: BlockCall, text_tokens: int, discard_text: bool) -> BlockIO:
    """`call` of an MM block (two streams) or a unified block (one) in the stored layout;
    `discard_text`: the block is the model's last unified block (its text half is unused)."""
    modulation = {stream: call.modulation.get(stream) for stream in MODULATIONS}
    if "unified" not in call.modulation:
        (image_out, text_out), (image_in, text_in) = call.outputs, call.tokens
        return BlockIO(image_in, text_in, image_out, text_out, modulation)
    (x,), out = call.tokens, call.outputs
    text_out = None if discard_text else out[:, :text_tokens]
    return BlockIO(
        x[:, text_tokens:], x[:, :text_tokens], out[:, text_tokens:], text_out, modulation
    )


def _tokens(value) -> int:
    return 0 if value is None else value.shape[1]


def _width(value) -> int:
    return 0 if value is None else value.shape[-1]


def _group_sizes(io: BlockIO, plan: CachePlan) -> dict[str, int]:
    return {
        "sample": plan.num_samples,
        "image_token": io.image_in.shape[1],
        "text_token": io.text_in.shape[1],
        "text_out_token": _tokens(io.text_out),
        "hidden": io.image_in.shape[-1],
        **{f"{s}_modulation": _width(io.modulation[s]) for s in MODULATIONS},
    }


def _sample_arrays(io: BlockIO, row: int, image: int, step: int) -> dict[str, np.ndarray]:
    hidden = io.image_in.shape[-1]

    def tokens(x) -> np.ndarray:
        if x is None:
            return np.zeros((0, hidden), np.float16)
        return np.array(x[row, :, 0, :], dtype=np.float32)

    def modulation(stream: str) -> np.ndarray:
        value = io.modulation[stream]
        if value is None:
            return np.zeros(0, np.float32)
        value = value[row] if value.shape[0] > 1 else value[0]
        return np.array(value, dtype=np.float32).reshape(-1)

    return {
        "image_index": image,
        "step_index": step,
        "image_in": tokens(io.image_in),
        "text_in": tokens(io.text_in),
        **{f"{s}_modulation": modulation(s) for s in MODULATIONS},
        "image_out": tokens(io.image_out),
        "text_out": tokens(io.text_out),
    }


def cache_block_io(
    handle: ModelHandle, store: Store, config: CacheConfig, overwrite: bool = False
) -> dict[str, StageGroup]:
    """Write (or finish) `blockio/<block>` for every selected block; return the groups."""
    calib = require_calib(store, verify=True)
    plan = plan_cache(calib, config)
    names = list(config.blocks or block_names(handle.mmdit))
    unknown = [b for b in names if b not in block_names(handle.mmdit)]
    if unknown:
        raise ValueError(
            f"unknown block(s) {', '.join(unknown)}: this model has "
            f"{', '.join(block_names(handle.mmdit))}"
        )
    text_tokens = calib.sizes["L"]
    last = block_names(handle.mmdit)[-1]
    inputs = {"calib": calib.identity()}

    def pass_io(hooks, forward) -> dict[str, BlockIO]:
        """Every block's recorded call of one forward pass, in the stored layout."""
        hooks.flush(forward.output)
        found = {}
        for name in names:
            call = hooks[name].flush()[-1]
            hooks[name].clear()
            found[name] = block_io(call, text_tokens, name == last and name.startswith("uni"))
        return found

    # resume: the sizes of existing groups are known; a missing (or replaced) group's come
    # from one probe pass, so rank 0 can create every group before any rank writes
    sizes = {}
    if not overwrite:
        for name in names:
            found = store.state(OWNED_GROUP, name)
            if found.group is not None:
                sizes[name] = found.group.sizes
    if len(sizes) < len(names):
        with hook_blocks(handle.mmdit, names) as hooks:
            forwards = forward_calibration(handle, calib, plan.images[:1], plan.steps[:1])
            probe = pass_io(hooks, next(forwards))
            forwards.close()
        sizes = {name: sizes.get(name) or _group_sizes(probe[name], plan) for name in names}

    def open_groups(replace: bool) -> dict[str, StageGroup]:
        return {
            name: store.create_group(
                OWNED_GROUP,
                name,
                producer=PRODUCER,
                config=config.to_json(),
                inputs=inputs,
                sizes=sizes[name],
                overwrite=replace,
            )
            for name in names
        }

    groups = create_group(open_groups, overwrite)

    def pass_done(image_pos: int, step_pos: int) -> bool:
        samples = [plan.sample(image_pos, step_pos, r) for r in range(plan.rows)]
        return all(g.done_mask()[samples].all() for g in groups.values())

    todo = [  # this rank's passes: its images (round robin), every step
        (image_pos, image, step_pos, step)
        for image_pos, image in enumerate(plan.images)
        if ranks.owns(image_pos)
        for step_pos, step in enumerate(plan.steps)
    ]
    remaining = [t for t in todo if not pass_done(t[0], t[2])]
    by_image: dict[int, list[tuple[int, int, int]]] = {}
    for image_pos, image, step_pos, step in remaining:
        by_image.setdefault(image, []).append((image_pos, step_pos, step))
    bar = progress(len(todo), "cache block I/O", unit="pass", initial=len(todo) - len(remaining))
    with bar, hook_blocks(handle.mmdit, names) as hooks:
        for image, passes in by_image.items():
            steps = [step for _, _, step in passes]
            forwards = forward_calibration(handle, calib, [image], steps)
            for (image_pos, step_pos, step), forward in zip(passes, forwards, strict=True):
                for name, io in pass_io(hooks, forward).items():
                    for row in range(plan.rows):
                        values = _sample_arrays(io, row, image, step)
                        groups[name].write_unit(plan.sample(image_pos, step_pos, row), values)
                bar.update(1)
    commit(groups.values())
    return groups


def require_blockio(store: Store, block: str, **kwargs) -> StageGroup:
    """The complete, up-to-date `blockio/<block>` group to read (`Store.require_group`'s
    refusals)."""
    return store.require_group(OWNED_GROUP, block, **kwargs)


def read_block_samples(group: StageGroup) -> dict[str, np.ndarray]:
    """Every per-sample array of a `blockio/<block>` group by name, as stored, checked against
    each other."""
    return group.read_arrays(group.spec.unit_arrays())


def load_block_data(store: Store, block: str) -> BlockData:
    """A block's cached samples, as float32 arrays; NaN or inf is refused (`DataError`)."""
    group = require_blockio(store, block)
    arrays = {name: value.astype(np.float32) for name, value in read_block_samples(group).items()}
    for name, value in arrays.items():
        if not np.isfinite(value).all():
            raise DataError(
                f"blockio/{block}/{name} in {store.path} holds NaN or inf: rerun "
                f"`taq-adaround cache --store {store.path} --overwrite`"
            )
    streams = ("unified",) if block.startswith("uni") else ("image", "text")
    return BlockData(
        arrays["image_in"],
        arrays["text_in"],
        {stream: arrays[f"{stream}_modulation"] for stream in streams},
        arrays["image_out"],
        arrays["text_out"],
    )
