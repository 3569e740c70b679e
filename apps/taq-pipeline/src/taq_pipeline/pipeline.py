"""`taq run`: every stage into one store, each resumed if partial and skipped if complete.

calib -> (adaround cache -> optimize) and (actstats collect -> analyze) -> evaluation ->
report. Stages call each package's library entry point; taq-io's groups make resuming
uniform (a group created again with the same config continues where it stopped) and
refuse stale inputs with a message naming the command to rerun.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from taq_model.presets import ModelHandle, load_preset

from taq_actstats.analyze import AnalyzeConfig, analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_adaround.blockio import CacheConfig, cache_block_io
from taq_adaround.optimize import optimize_blocks
from taq_adaround.reconstruct import AdaRoundConfig
from taq_calib import CalibConfig, calibrate
from taq_io import Store


@dataclass(frozen=True)
class RunConfig:
    store: str = "runs/tiny-digits.zarr"
    model: str = "tiny-digits"
    num_images: int = 10
    num_steps: int | None = None  # None: the preset's default
    cfg: float | None = None
    cache_stride: int = 3
    iters: int = 500
    batch_size: int = 16
    bits_w: int = 4
    group_size: int = 64
    eval_samples: int = 20
    seed: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class StageTiming:
    name: str
    seconds: float
    skipped: bool


def _complete(store: Store, path: str) -> bool:
    return any(g.path == path and g.meta.complete for g in store.groups())


def run_stages(config: RunConfig, handle: ModelHandle | None = None) -> tuple[Store, list]:
    """Run (or finish) every artifact stage; returns the store and per-stage timings."""
    handle = handle or load_preset(config.model)
    store = Store.open_or_create(config.store, handle.identity)
    steps = config.num_steps or handle.default_steps
    cfg = handle.default_cfg if config.cfg is None else config.cfg
    prompts = tuple(handle.default_prompts)
    calib = CalibConfig(config.model, prompts, config.num_images, steps, cfg, config.seed)
    ada = AdaRoundConfig(
        iters=config.iters,
        batch_size=config.batch_size,
        bits_w=config.bits_w,
        group_size=config.group_size,
        seed=config.seed,
    )
    stages: list[tuple[str, str, Callable[[], object]]] = [
        ("calib", "calib", lambda: calibrate(handle, store, calib)),
        (
            "adaround cache",
            "blockio/mm0",
            lambda: cache_block_io(handle, store, CacheConfig(stride=config.cache_stride)),
        ),
        ("adaround optimize", "weights/adaround", lambda: optimize_blocks(handle, store, ada)),
        ("actstats collect", "actstats", lambda: collect_stats(handle, store, CollectConfig())),
        ("actstats analyze", "quant_config", lambda: analyze_stats(handle, store, AnalyzeConfig())),
    ]
    timings = []
    for name, path, run in stages:
        start = time.perf_counter()
        skipped = _complete(store, path)
        if not skipped:
            print(f"== {name}", flush=True)
            run()
        timings.append(StageTiming(name, time.perf_counter() - start, skipped))
    return store, timings


def report_dir(store_path: str | Path) -> Path:
    path = Path(store_path)
    return path.parent / f"{path.stem}-report"
