"""`taq run`'s artifact stages: each resumed if partial, skipped if complete, refused if stale.

calib -> (block I/O cache -> one stage per weight method: `--weights`, default every installed
method, `taq_run.weight_methods`) and (actstats collect -> analyze). A stage is a list of
store groups plus the config each of them must record, built by the stage's own constructor
(the config its package records); its state is `Store.state` of those groups (missing /
partial / complete / stale, the one place taq decides it), so resuming after a kill and
refusing changed inputs work the same way for every stage. Each stage calls its package's
library entry point; taq-io's `create_group` resumes a group created again with the same
config. Under `mlx.launch` every rank runs the stages in step (each decides from the same
store, after a barrier): the sharded stages split their units across ranks, and rank 0 alone
runs `analyze` and records the timings (`taq_run.writers`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from taq_actstats.analyze import analyze_stats
from taq_actstats.collect import CollectConfig, collect_stats
from taq_adaround.blockio import CacheConfig, cache_block_io
from taq_adaround.optimize import quantize_blocks
from taq_calib.calibration import CalibConfig, calib_config, calibrate
from taq_calib.cli import read_prompts
from taq_io import COMPLETE, MISSING, PARTIAL, STALE, Store, StoreError, local_parent, store_stem
from taq_model.presets import ModelHandle, ModelOptions, load_preset
from taq_model.taxonomy import block_names
from taq_pipeline.seeds import check_eval_samples
from taq_run import writers
from taq_run.quant_config import AnalyzeConfig, TierRule, analyze_config
from taq_run.runs import model_identity, refuse_other_model
from taq_run.weight_methods import WeightMethod, parse_methods, weight_methods
from taq_run.weights import GridConfig, recorded_config
from taq_runtime import ranks
from taq_runtime.cli import at_least, config_from_flags, config_from_given


@dataclass(frozen=True)
class RunConfig:
    """Every `taq run` flag (one field each). Defaults: tiny-digits in ~10 min on 2 cores."""

    store: str = "runs/tiny-digits.zarr"
    model: str = "tiny-digits"
    local_ckpt: str | None = None  # sd3-medium: a DiffusionKit MLX checkpoint on disk
    t5: bool = False  # sd3-medium: T5-XXL conditioning from the local Hugging Face cache
    height: int | None = None  # sd3-medium presets: image pixels (multiple of 16)
    width: int | None = None
    prompts: str | None = None  # a file, one prompt a line; None: the preset's prompts
    num_images: int = 10
    num_steps: int | None = None  # None: the preset's default (30 for tiny-digits)
    cfg: float | None = None  # None: the preset's default
    cache_stride: int = 3
    weights: str | None = None  # comma-separated weight methods; None: every installed one
    recipe: str = AnalyzeConfig.recipe  # taq-actstats' recipe: names the defaults of rule,
    rule: str | None = None  # range_margin and static_cap (None: the recipe's)
    target_db: float = TierRule.target_db  # taq-actstats' tier rule and its defaults
    gelu_a4: float = TierRule.gelu_a4  # --rule absolute: TaQ-DiT's thresholds
    gelu_a6: float = TierRule.gelu_a6
    other_a4: float = TierRule.other_a4
    other_a6: float = TierRule.other_a6
    range_method: str | None = None  # max or mse (None: the recipe's)
    range_margin: float | None = None
    smooth_alpha: float = AnalyzeConfig.smooth_alpha
    static_cap: bool | None = None
    gelu_shift: bool = AnalyzeConfig.gelu_shift
    avg_bits: float | None = None  # tiers by an average-bit budget instead of the rule
    plan: str = AnalyzeConfig.plan  # static: one grid per layer for all steps (with avg_bits)
    eval_samples: int = 40
    eval_split: str = "heldout"  # seeds.py: the report's numbers come from held-out seeds
    seed: int = 0
    overwrite: bool = False
    # the weight methods' flags given (field -> value); the rest keep each config's default
    method_flags: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Check every stage's flags (each stage config checks its own) and the prompts file
        before the first stage starts: a bad flag of the last stage costs no work. Raises
        ValueError / UsageError with one line."""
        names = ("num_images", "num_steps", "cache_stride")
        at_least(1, **{name: getattr(self, name) for name in names})
        check_eval_samples(self.eval_samples)
        if self.num_steps is not None and self.cache_stride > self.num_steps:
            raise ValueError(f"--cache-stride must be at most --num-steps ({self.num_steps})")
        prompts = read_prompts(Path(self.prompts)) if self.prompts else ("placeholder",)
        steps = self.num_steps if self.num_steps is not None else self.cache_stride
        config_from_flags(CalibConfig, self, prompts=prompts, num_steps=steps, cfg=self.cfg or 0.0)
        CacheConfig(stride=self.cache_stride)
        self.weight_configs  # noqa: B018 - built to be checked
        CollectConfig()
        self.analyze_config  # noqa: B018
        self.model_options  # noqa: B018 - sizes check themselves

    @property
    def weight_configs(self) -> dict[str, tuple[WeightMethod, GridConfig]]:
        """Each chosen method with its config: its own constructor, from the flags given
        (the run's `--seed` where it has one)."""
        names = parse_methods(self.weights) if self.weights else tuple(weight_methods())
        methods = weight_methods()
        return {name: (methods[name], method_config(methods[name], self)) for name in names}

    @property
    def model_options(self) -> ModelOptions:
        return ModelOptions(self.t5, self.height, self.width)

    @property
    def analyze_config(self) -> AnalyzeConfig:
        """taq-actstats' own constructor, from the flags of the same names (None: the
        recipe's default)."""
        return analyze_config(self)


def method_config(method: WeightMethod, run: RunConfig) -> GridConfig:
    """`method`'s config from the flags `run` was given, its own defaults for the rest."""
    seed = {"seed": run.seed} if "seed" in method.flags() else {}
    return config_from_given(method.config, argparse.Namespace(**run.method_flags), **seed)


@dataclass(frozen=True)
class StageState:
    state: str  # MISSING | PARTIAL | COMPLETE | STALE
    detail: str = ""


@dataclass(frozen=True)
class Stage:
    """One artifact stage: the groups it writes, the config each must record, how to run it."""

    name: str
    command: str  # the stage's own command, to run it alone
    configs: dict[str, dict]  # group path -> the config it must record
    execute: Callable[[bool], object]  # overwrite -> run (resumes when False)

    def state(self, store: Store) -> StageState:
        """The stage's state from its groups' (`Store.state`, each with the config the run
        asks for): stale or partial if one is, missing if all are, else complete."""
        states = []
        for path, wanted in self.configs.items():
            kind, _, name = path.partition("/")
            states.append(store.state(kind, name or None, config=wanted))
        for wanted in (STALE, PARTIAL):
            hits = [s for s in states if s.state == wanted]
            if hits:
                return StageState(wanted, hits[0].detail)
        if all(s.state == MISSING for s in states):
            return StageState(MISSING)
        if any(s.state == MISSING for s in states):
            return StageState(PARTIAL, "some groups not written yet")
        return StageState(COMPLETE)

    def run(self, overwrite: bool = False) -> None:
        self.execute(overwrite)


def _prompts(config: RunConfig, handle: ModelHandle) -> tuple[str, ...]:
    if config.prompts is None:
        return tuple(handle.default_prompts)
    return read_prompts(Path(config.prompts))


def build_stages(config: RunConfig, handle: ModelHandle, store: Store) -> list[Stage]:
    """The artifact stages in order, bound to `handle`, `store` and `config`."""
    calib = calib_config(config, handle, _prompts(config, handle))
    cache = CacheConfig(stride=config.cache_stride)
    blocks = block_names(handle.mmdit)
    collect, analyze = CollectConfig(), config.analyze_config
    return [
        Stage(
            "calib",
            "taq-calib",
            {"calib": calib.to_json()},
            lambda o: calibrate(handle, store, calib, overwrite=o),
        ),
        Stage(
            "blockio cache",
            "taq-adaround cache",
            {f"blockio/{b}": cache.to_json() for b in blocks},
            lambda o: cache_block_io(handle, store, cache, overwrite=o),
        ),
        *(
            Stage(
                f"weights {name}",
                method.command,
                {f"weights/{name}": recorded_config(method_config_, blocks, name)},
                lambda o, m=method, c=method_config_: quantize_blocks(
                    handle, store, m, c, overwrite=o
                ),
            )
            for name, (method, method_config_) in config.weight_configs.items()
        ),
        Stage(
            "actstats collect",
            "taq-actstats collect",
            {"actstats": collect.to_json()},
            lambda o: collect_stats(handle, store, collect, overwrite=o),
        ),
        Stage(
            "actstats analyze",
            "taq-actstats analyze",
            {"quant_config": analyze.to_json()},
            # one pass over every image's statistics in image order: rank 0's alone
            lambda o: ranks.on_rank0(lambda: analyze_stats(handle, store, analyze, overwrite=o)),
        ),
    ]


@dataclass
class StageTiming:
    name: str
    seconds: float
    outcome: str  # "computed", "resumed", "recomputed" or "already complete"
    groups: list[str] = field(default_factory=list)


class StaleStageError(StoreError):
    """A complete or partial stage whose config or inputs differ from what the run asks."""


def open_store(config: RunConfig) -> tuple[Store, ModelHandle]:
    """The model (its prompts checked) and the store, locked for writing. A store made for
    another preset is refused from its root record, before the model is built."""
    refuse_other_model(config.store, config.model)
    handle = load_preset(config.model, local_ckpt=config.local_ckpt, options=config.model_options)
    handle.validate_prompts(_prompts(config, handle))
    identity = model_identity(handle)
    return writers.open_store(lambda: Store.open_or_create(config.store, identity)), handle


def run_stages(
    config: RunConfig, log: Callable[[str], None] = print
) -> tuple[Store, ModelHandle, list[StageTiming]]:
    """Run (or finish) every artifact stage; returns the store, model and per-stage timings.

    A stale stage (made with other flags, or from inputs that changed since) is refused
    unless `config.overwrite`, which recomputes it and, through their inputs, the stages
    after it.
    """
    store, handle = open_store(config)
    timings = []
    for stage in build_stages(config, handle, store):
        state = stage.state(store)
        ranks.barrier()  # every rank decides from the same store, before any writes to it
        if state.state == STALE and not config.overwrite:
            raise StaleStageError(
                f"{stage.name} in {config.store} is stale: {state.detail}; rerun with "
                "--overwrite to recompute it and the stages after it, or pass another --store"
            )
        groups = list(stage.configs)
        if state.state == COMPLETE:
            log(f"== {stage.name}: already complete, skipped")
            timings.append(StageTiming(stage.name, 0.0, "already complete", groups))
            continue
        outcome = {MISSING: "computed", PARTIAL: "resumed", STALE: "recomputed"}[state.state]
        log(f"== {stage.name}" + (f" ({outcome}: {state.detail})" if state.detail else ""))
        start = time.perf_counter()
        stage.run(overwrite=state.state == STALE)
        timing = StageTiming(stage.name, time.perf_counter() - start, outcome, groups)
        ranks.on_rank0(lambda t=timing: store.record_timing(t.name, t.seconds, t.outcome, t.groups))
        timings.append(timing)
    return store, handle, timings


def report_dir(store_path: str | Path) -> Path:
    """The evaluation and report files of a store: `<store>-report` beside a local store; a
    store on object storage (`s3://...`) gets it in the current directory (local files)."""
    return local_parent(store_path) / f"{store_stem(store_path)}-report"
