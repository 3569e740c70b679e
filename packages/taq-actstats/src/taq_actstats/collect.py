"""Collect activation statistics of every quantizable linear's input, per timestep.

TaQ-DiT (§3.3) observes that a diffusion transformer's activations change with the
timestep, and that post-GELU inputs of `fc2` are asymmetric and drift. One calib image is
one batch per stored step (the CFG-doubled batch: both halves are seen). For each
(image, layer, step) we keep the per-channel min and max, a 256-bin histogram on edges fixed
by image 0 (values outside are clipped into the end bins, so nothing is dropped) and scalar
summaries. Averages over images and the momentum shift are computed by `analyze`. Hooks
reduce inside the graph (an observer, nothing stored), so memory holds one pass.

Under `mlx.launch` rank r collects the images i with i % ranks == r (`taq_run.writers`):
an image's statistics depend only on it and on image 0's edges, so the group is the same
bit for bit whatever the number of ranks, and `analyze` reduces it over images in image
order (the momentum shift depends on the order) exactly as for one rank. Readers get the
group through `require_stats` and `read_stats` (an `ActivationStats`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from importlib.metadata import version
from typing import ClassVar

import mlx.core as mx
import numpy as np

from taq_hooks import hook_layers
from taq_io import GROUPS, StageGroup, Store
from taq_model.presets import ModelHandle
from taq_model.taxonomy import get_module, quantizable_layers
from taq_run.calib import calib_timesteps, require_calib
from taq_run.runs import forward_calibration
from taq_run.writers import commit, create_group
from taq_runtime import ranks
from taq_runtime.cli import at_least, progress

PRODUCER = f"taq-actstats {version('taq-actstats')}"
OWNED_GROUP = "actstats"  # this module writes and reads the group (one owner per group)
BINS = 256
OUTLIER_FACTOR = 6.0


@dataclass(frozen=True)
class CollectConfig:
    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version
    num_images: int | None = None  # None: every calib image
    stride: int = 1
    layers: str | None = None  # glob(s) over layer names; None: every quantizable linear

    def __post_init__(self) -> None:
        at_least(1, num_images=self.num_images, stride=self.stride)

    def to_json(self) -> dict:
        return asdict(self)


def _edges_for(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if high <= low:
        high = low + 1e-6
    return np.linspace(low, high, BINS + 1, dtype=np.float32)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts on fixed `edges`; values outside land in the first/last bin."""
    index = np.searchsorted(edges, values, side="right") - 1
    return np.bincount(np.clip(index, 0, BINS - 1), minlength=BINS).astype(np.int64)


def layer_summary(x: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """Statistics of one layer input (any leading shape, channels last)."""
    flat = x.reshape(-1, width)
    channel_min, channel_max = flat.min(axis=0), flat.max(axis=0)
    magnitude = np.abs(flat)
    p50, p99, p999 = np.percentile(magnitude, [50, 99, 99.9])
    channel_absmax = np.maximum(-channel_min, channel_max)
    outliers = int((channel_absmax > OUTLIER_FACTOR * np.median(channel_absmax)).sum())
    return {
        "channel_min": channel_min,
        "channel_max": channel_max,
        "absmax": np.float32(channel_absmax.max()),
        "p50": np.float32(p50),
        "p99": np.float32(p99),
        "p999": np.float32(p999),
        "outlier_channels": np.int32(outliers),
    }


def collect_stats(
    handle: ModelHandle, store: Store, config: CollectConfig, overwrite: bool = False
) -> StageGroup:
    calib = require_calib(store, verify=True)
    images = calib.sizes["image"] if config.num_images is None else config.num_images
    if not 1 <= images <= calib.sizes["image"]:
        raise ValueError(f"--num-images must be in 1..{calib.sizes['image']}")
    if config.stride < 1:
        raise ValueError(f"--stride must be at least 1, got {config.stride}")
    refs = quantizable_layers(handle.mmdit, config.layers)
    if not refs:
        raise ValueError(f"--layers {config.layers!r} selects no quantizable layer")
    widths = [get_module(handle.mmdit, r.path).weight.shape[1] for r in refs]
    steps = list(range(0, calib.sizes["step"], config.stride))
    channel = max(widths)
    group = create_group(
        lambda replace: store.create_group(
            OWNED_GROUP,
            producer=PRODUCER,
            config=config.to_json(),
            inputs={"calib": calib.identity()},
            sizes={
                "image": images,
                "layer": len(refs),
                "step": len(steps),
                "channel": channel,
                "bin": BINS,
                "edge": BINS + 1,
            },
            constants={
                "layer_names": [r.name for r in refs],
                "in_features": np.array(widths, np.int32),
                "step_index": np.array(steps, np.int32),
                "timesteps": calib_timesteps(calib)[steps],
            },
            overwrite=replace,
        ),
        overwrite,
    )
    done = set(group.done_units().tolist())
    mine = [image for image in range(images) if ranks.owns(image)]
    todo = [image for image in mine if image not in done]
    names = [r.name for r in refs]
    captured: dict[str, mx.array] = {}

    def observe(name: str, x: mx.array, y) -> None:
        captured[name] = x

    def collect_image(image: int, edges: np.ndarray | None, bar) -> None:
        """One image's unit; `edges` None: image 0, whose own ranges set the edges."""
        unit = _empty_unit(len(refs), len(steps), channel)
        forwards = forward_calibration(handle, calib, [image], steps)
        for s, forward in enumerate(forwards):  # building `forward` filled `captured`
            mx.eval(forward.output, list(captured.values()))
            for li, name in enumerate(names):
                x = np.array(captured[name], dtype=np.float32)
                stats = layer_summary(x, widths[li])
                for key, value in stats.items():
                    if key.startswith("channel_"):
                        unit[key][li, s, : widths[li]] = value
                    else:
                        unit[key][li, s] = value
                unit["hist_edges"][li, s] = _edges_for(x) if edges is None else edges[li, s]
                unit["hist_counts"][li, s] = histogram(x.reshape(-1), unit["hist_edges"][li, s])
            captured.clear()
            bar.update(1)
        group.write_unit(image, unit)

    with progress(len(mine) * len(steps), "actstats collect", unit="pass") as bar:
        bar.update((len(mine) - len(todo)) * len(steps))
        with hook_layers(handle.mmdit, ",".join(names), observer=observe):
            # every image's histograms use image 0's edges: rank 0 (its owner) does it
            # first, then every rank reads the edges back from the store
            if 0 in todo:
                collect_image(0, None, bar)
            ranks.barrier()
            edges = group.read("hist_edges", [0])[0]
            for image in todo:
                if image != 0:
                    collect_image(image, edges, bar)
    commit([group])
    return group


def _empty_unit(layers: int, steps: int, channel: int) -> dict[str, np.ndarray]:
    nan = np.float32(np.nan)
    return {
        "channel_min": np.full((layers, steps, channel), nan, np.float32),
        "channel_max": np.full((layers, steps, channel), nan, np.float32),
        "hist_edges": np.zeros((layers, steps, BINS + 1), np.float32),
        "hist_counts": np.zeros((layers, steps, BINS), np.int64),
        "absmax": np.zeros((layers, steps), np.float32),
        "p50": np.zeros((layers, steps), np.float32),
        "p99": np.zeros((layers, steps), np.float32),
        "p999": np.zeros((layers, steps), np.float32),
        "outlier_channels": np.zeros((layers, steps), np.int32),
    }


def require_stats(store: Store, **kwargs) -> StageGroup:
    """The complete, up-to-date `actstats` group to read (`Store.require_group`'s refusals;
    `verify=True` reads every chunk first)."""
    return store.require_group(OWNED_GROUP, **kwargs)


@dataclass(frozen=True)
class ActivationStats:
    """What an `actstats` group records, per calibration image (the first axis), layer and
    step; the per-channel arrays only when read with `per_channel`."""

    layer_names: list[str]
    in_features: np.ndarray  # (layer,) input width; channels beyond it are NaN
    step_index: np.ndarray  # (step,) the calib stored step of each step
    timesteps: np.ndarray  # (step,) timestep (sigma x 1000) of each step
    absmax: np.ndarray  # (image, layer, step) max |x|
    p50: np.ndarray  # (image, layer, step) median |x|
    p99: np.ndarray  # (image, layer, step) 99th percentile |x|
    outlier_channels: np.ndarray  # (image, layer, step) channels with max |x| > 6 x median
    channel_min: np.ndarray | None = None  # (image, layer, step, channel)
    channel_max: np.ndarray | None = None  # (image, layer, step, channel)
    hist_edges: np.ndarray | None = None  # (layer, step, edge): image 0's, shared by all
    hist_counts: np.ndarray | None = None  # (layer, step, bin) summed over images


def read_stats(group: StageGroup, per_channel: bool = True) -> ActivationStats:
    """The statistics of an `actstats` group (`require_stats`), its arrays checked against
    each other; without `per_channel` the scalar summaries only (cheap to read)."""
    names = [f.name for f in fields(ActivationStats) if per_channel or f.default is not None]
    arrays = group.read_arrays(names)
    arrays["layer_names"] = arrays["layer_names"].tolist()
    if per_channel:
        arrays["hist_edges"] = arrays["hist_edges"][0]
        arrays["hist_counts"] = arrays["hist_counts"].sum(axis=0)
    return ActivationStats(**arrays)
