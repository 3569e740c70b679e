"""The `quant_config` group's contract, in one place: its config (the tier rule, the
recipes' defaults and the plans it may name), writer and readers.

`taq-actstats analyze` turns activation statistics into the plan (per layer and step: bits,
grid scale, post-GELU shift, SmoothQuant scales) and writes it through
`create_quant_config_group`; taq-infer, `taq export`, `taq eval`/`report`/`sweep` and the
plots read it through `require_quant_config` and the decoders `analyze_config_of`,
`read_quant_plan` and `read_tiers`. It lives in this lib, not in taq-actstats, because
taq-infer reads it and packages do not import one another.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import numpy as np

from taq_io import GROUPS, StageGroup, Store
from taq_quant import check_exportable

OWNED_GROUP = "quant_config"  # this module writes and reads the group (one owner per group)
RULES = ("sqnr", "absolute")
PLANS = ("time-aware", "static")
RECIPES = ("taq", "taq-dit")
RANGE_METHODS = ("max", "mse")
RECIPE_DEFAULTS: dict[str, dict[str, object]] = {
    "taq": {
        "rule": "sqnr",
        "range_method": "mse",
        "range_margin": 1.5,
        "smooth_min_spike": 4.0,
        "static_cap": True,
    },
    "taq-dit": {
        "rule": "absolute",
        "range_method": "max",
        "range_margin": 1.0,
        "smooth_min_spike": 5.0,
        "static_cap": False,
    },
}
"""Each recipe's defaults (taq-actstats' `recipes.py` says what the recipes do)."""


@dataclass(frozen=True)
class TierRule:
    """The A4/A6/A8 tier rule's settings (taq-actstats' `tiers.py` applies them)."""

    rule: str = "sqnr"
    target_db: float = 23.0  # sqnr: minimum estimated SQNR of a step's grid
    gelu_a4: float = 5.0  # absolute: TaQ-DiT's thresholds
    gelu_a6: float = 8.0
    other_a4: float = 6.0
    other_a6: float = 10.0
    outlier_ratio: float = 50.0  # p99 / p50 above this forces A8

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"--rule {self.rule!r} is unknown: pick one of {', '.join(RULES)}")
        for name, value in asdict(self).items():
            if name != "rule" and not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"--{name.replace('_', '-')} must be a finite number > 0, got {value}"
                )

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.rule == "sqnr":
            return (
                f"fewest bits whose grid over the step's input range keeps the estimated "
                f"SQNR >= {self.target_db:g} dB"
            )
        return (
            f"absmax of the step's input range: fc2 A4 < {self.gelu_a4:g} <= A6 < "
            f"{self.gelu_a6:g} <= A8; other layers A4 < {self.other_a4:g} <= A6 < "
            f"{self.other_a6:g} <= A8"
        )


@dataclass(frozen=True)
class AnalyzeConfig:
    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version
    rule: TierRule = field(default_factory=TierRule)
    range_margin: float = 1.5  # grid range = margin x max over calibration images
    smooth_alpha: float = 0.5
    smooth_max_outliers: float = 0.05  # share of channels that are outliers, at most
    smooth_min_spike: float = 4.0  # max channel absmax / median channel absmax, at least
    bits_w: int = 4  # the weights' grid, on which taq-infer re-rounds smoothed W * s
    group_size: int = 64
    static_cap: bool = True  # grids no wider than AdaRound's learned static range
    avg_bits: float | None = None  # tiers by an average-bit budget instead of the rule
    plan: str = "time-aware"  # static: one grid and bit width per layer for all steps
    recipe: str = "taq"  # taq-dit: the paper's AvgMinMax ranges and SmoothQuant (recipes.py)
    range_method: str = "mse"  # the least-error clip per tier (ranges.py); max: range_margin x
    # the maximum (taq's earlier default; taq-dit's AvgMinMax ranges count as max)
    gelu_shift: bool = True  # the post-GELU (fc2) momentum shift

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(
                f"--recipe {self.recipe!r} is unknown: pick one of {', '.join(RECIPES)}"
            )
        if self.range_method not in RANGE_METHODS:
            raise ValueError(
                f"--range-method {self.range_method!r} is unknown: pick one of "
                f"{', '.join(RANGE_METHODS)}"
            )
        if self.recipe == "taq-dit" and self.range_method != "max":
            raise ValueError("--range-method mse is the taq recipe's: taq-dit uses AvgMinMax")
        if self.plan not in PLANS:
            raise ValueError(f"--plan {self.plan!r} is unknown: pick one of {', '.join(PLANS)}")
        if self.avg_bits is not None and not 4.0 <= self.avg_bits <= 8.0:
            raise ValueError(f"--avg-bits must be in 4..8, got {self.avg_bits:g}")
        if self.plan == "static" and self.avg_bits is None:
            raise ValueError("--plan static needs a budget: pass --avg-bits B")
        if not self.range_margin >= 1.0:  # NaN too
            raise ValueError(
                f"--range-margin {self.range_margin} clips the calibration range: use >= 1"
            )
        if not 0.0 < self.smooth_max_outliers <= 1.0:
            raise ValueError(
                f"--smooth-max-outliers is a share of channels in (0, 1], got "
                f"{self.smooth_max_outliers}"
            )
        if not (math.isfinite(self.smooth_min_spike) and self.smooth_min_spike >= 1.0):
            raise ValueError(
                f"--smooth-min-spike must be a finite ratio >= 1, got {self.smooth_min_spike}"
            )
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise ValueError(f"--smooth-alpha must be in 0..1, got {self.smooth_alpha}")
        check_exportable(self.bits_w, self.group_size)

    def to_json(self) -> dict:
        """The fields; the budget and plan only when set, so older configs hash the same."""
        data = asdict(self)
        if self.avg_bits is None:
            del data["avg_bits"], data["plan"]
        if self.recipe == "taq":
            del data["recipe"]
        for name, unset in (("range_method", "max"), ("gelu_shift", True)):
            if data[name] == unset:  # so configs from before these fields hash the same
                del data[name]
        return data

    def describe(self) -> str:
        """One line: the recipe, its ranges, the plan and how the tiers were chosen."""
        if self.recipe == "taq-dit":
            ranges = "AvgMinMax ranges"
        elif self.range_method == "mse":
            ranges = "least-error clip per tier"
        else:
            ranges = f"grids over {self.range_margin:g} x the calibration maximum"
        if self.static_cap:
            ranges += ", capped at AdaRound's learned range"
        tiers = (
            f"rule {self.rule.rule}"
            + (f" ({self.rule.target_db:g} dB)" if self.rule.rule == "sqnr" else "")
            if self.avg_bits is None
            else f"average-bit budget {self.avg_bits:g}"
        )
        plan = "time-aware" if self.avg_bits is None else self.plan
        shift = "" if self.gelu_shift else ", no post-GELU shift"
        return f"recipe {self.recipe} ({ranges}{shift}), plan {plan}, tiers by {tiers}"

    @classmethod
    def for_recipe(cls, recipe: str = "taq", **given) -> AnalyzeConfig:
        """The recipe's defaults (`RECIPE_DEFAULTS`), then the `given` fields (None: not
        given); TierRule's fields go to `rule`."""
        if recipe not in RECIPES:
            raise ValueError(f"--recipe {recipe!r} is unknown: pick one of {', '.join(RECIPES)}")
        fields = {**RECIPE_DEFAULTS[recipe]}
        fields.update({k: v for k, v in given.items() if v is not None})
        rule_names = TierRule().to_json()
        rule = TierRule(**{k: fields.pop(k) for k in list(fields) if k in rule_names})
        return cls(rule=rule, recipe=recipe, **fields)


def analyze_config(flags: object) -> AnalyzeConfig:
    """`AnalyzeConfig` from `taq-actstats analyze`'s flags (an argparse namespace, or `taq
    run`'s config, whose fields are named alike): `AnalyzeConfig.for_recipe` with the flags'
    recipe (default taq); a flag that is absent or None keeps the recipe's default."""
    names = [f.name for f in fields(AnalyzeConfig) if f.name not in ("rule", "recipe")]
    given = {name: getattr(flags, name, None) for name in (*TierRule().to_json(), *names)}
    if getattr(flags, "no_static_cap", False):
        given["static_cap"] = False
    if getattr(flags, "no_gelu_shift", False):
        given["gelu_shift"] = False
    return AnalyzeConfig.for_recipe(getattr(flags, "recipe", "taq"), **given)


def create_quant_config_group(
    store: Store,
    config: AnalyzeConfig,
    *,
    producer: str,
    inputs: Mapping[str, str],
    sizes: Mapping[str, int],
    constants: Mapping[str, object],
    overwrite: bool = False,
) -> StageGroup:
    """Write the whole plan (constants only) and commit it."""
    group = store.create_group(
        OWNED_GROUP,
        producer=producer,
        config=config.to_json(),
        inputs=inputs,
        sizes=sizes,
        constants=constants,
        overwrite=overwrite,
    )
    group.mark_complete()
    return group


def require_quant_config(store: Store, **kwargs) -> StageGroup:
    """The complete, up-to-date `quant_config` group to read (`Store.require_group`'s
    refusals)."""
    return store.require_group(OWNED_GROUP, **kwargs)


def analyze_config_of(group: StageGroup) -> AnalyzeConfig:
    """The `AnalyzeConfig` a `quant_config` group was made with (fields it does not record
    keep their defaults)."""
    recorded = dict(group.meta.config)
    recorded.setdefault("range_method", "max")  # configs that do not record it predate mse
    known = {f.name for f in fields(AnalyzeConfig)}
    rule = TierRule(
        **{k: v for k, v in recorded.pop("rule", {}).items() if k in TierRule().to_json()}
    )
    return AnalyzeConfig(rule=rule, **{k: v for k, v in recorded.items() if k in known})


@dataclass(frozen=True)
class QuantPlan:
    """The activation plan a `quant_config` group records, per stored step (rows) and layer:
    what taq-infer's quantizers are made of and what `taq export` copies."""

    timesteps: np.ndarray  # (step,) timestep (sigma x 1000) of each row
    layer_names: list[str]
    in_features: np.ndarray  # (layer,) input width; channels beyond it are padding
    post_gelu: np.ndarray  # (layer,) bool: an mlp.fc2, whose input is shifted
    bits: np.ndarray  # (step, layer) the time-aware tiers (4, 6 or 8)
    scale: np.ndarray  # (step, layer) their grid steps
    sq_bits: np.ndarray  # (step, layer) the tiers with SmoothQuant
    sq_scale: np.ndarray  # (step, layer) their grid steps
    shift: np.ndarray  # (step, layer, channel) subtracted first (fc2; else 0); NaN: padding
    smoothing: np.ndarray  # (layer, channel) SmoothQuant's s (1: none); NaN: padding


@dataclass(frozen=True)
class TierTables:
    """The plan's bit widths per (step, layer), without and with SmoothQuant, and the
    layers SmoothQuant smooths."""

    layer_names: list[str]
    bits: np.ndarray  # (step, layer)
    sq_bits: np.ndarray  # (step, layer)
    smoothed: np.ndarray  # (layer,) bool

    def average_bits(self, smoothquant: bool = False) -> float:
        return float((self.sq_bits if smoothquant else self.bits).mean())


def smoothed_layers(smoothing: np.ndarray) -> np.ndarray:
    """Which layers a `(layer, channel)` SmoothQuant table smooths (any s != 1; NaN:
    padding)."""
    return (np.nan_to_num(smoothing, nan=1.0) != 1.0).any(axis=1)


def read_quant_plan(group: StageGroup) -> QuantPlan:
    """The activation plan of a `quant_config` group (`require_quant_config`), its arrays
    checked against each other."""
    arrays = group.read_arrays([f.name for f in fields(QuantPlan)])
    return QuantPlan(**{**arrays, "layer_names": arrays["layer_names"].tolist()})


def read_tiers(group: StageGroup) -> TierTables:
    """The tier tables of a `quant_config` group (not its scales and shifts: cheap to read)."""
    arrays = group.read_arrays(["layer_names", "bits", "sq_bits", "smoothing"])
    return TierTables(
        arrays["layer_names"].tolist(),
        arrays["bits"],
        arrays["sq_bits"],
        smoothed_layers(arrays["smoothing"]),
    )
