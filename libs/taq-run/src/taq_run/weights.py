"""The `weights/<method>` groups' contract, in one place: the config they are made with,
what they record, their creation and their reader.

AdaRound (`taq-adaround optimize`) writes `weights/adaround` and `weights/rtn` (same grid),
one unit per block, in MLX's QuantizedLinear layout (`docs/schema.md`); `taq run` judges
their staleness with the same `recorded_config`, and taq-infer, `taq eval`/`report` and
`taq-actstats analyze` read them through `require_weights` and `adaround_config_of`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from taq_io import GROUPS, StageGroup, Store
from taq_io.schema import WEIGHT_ROLES
from taq_quant import WeightQuantConfig, check_exportable
from taq_quant.quantizer import SCALE_METHODS
from taq_runtime.cli import at_least

OWNED_GROUP = "weights"  # this module creates and reads the groups (one owner per group)
METHODS = ("rtn", "adaround")  # written in this order: a block is done once adaround is
FORMAT = "mlx_affine"


@dataclass(frozen=True)
class AdaRoundConfig:
    """AdaRound's flags (`taq-adaround optimize`, `taq run`); checked when built, so a bad
    flag is refused before any stage runs."""

    iters: int = 20000
    batch_size: int = 32
    bits_w: int = 4
    bits_a: int = 8  # 0: no activation quantization
    group_size: int = 64
    scale_method: str = "mse"
    lr: float = 1e-3
    lr_act: float = 4e-5
    reg_weight: float = 0.01
    warmup: float = 0.2
    beta_start: float = 20.0
    beta_end: float = 2.0
    bias_correction: bool = False  # Adam's; MLX defaults to off, PyTorch (the reference) on
    seed: int = 0
    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version

    def __post_init__(self) -> None:
        at_least(1, iters=self.iters, batch_size=self.batch_size)
        check_exportable(self.bits_w, self.group_size)
        if self.scale_method not in SCALE_METHODS:
            raise ValueError(
                f"--scale-method {self.scale_method!r} is unknown: pick one of "
                f"{', '.join(SCALE_METHODS)}"
            )
        if self.bits_a and not 2 <= self.bits_a <= 8:
            raise ValueError(f"--bits-a must be 0 (off) or 2..8, got {self.bits_a}")
        for name in ("lr", "lr_act", "reg_weight"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name == "lr"):
                low = "> 0" if name == "lr" else ">= 0"
                raise ValueError(
                    f"--{name.replace('_', '-')} must be finite and {low}, got {value}"
                )
        if self.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {self.seed}")

    @property
    def weight_config(self) -> WeightQuantConfig:
        return WeightQuantConfig(
            bits=self.bits_w, group_size=self.group_size, scale_method=self.scale_method
        )


def recorded_config(config: AdaRoundConfig, blocks: Sequence[str], method: str) -> dict:
    """The config a `weights/<method>` group records for AdaRound's `config` over `blocks`."""
    return {**asdict(config), "blocks": list(blocks), "format": FORMAT, "method": method}


def create_weights_group(
    store: Store,
    method: str,
    config: AdaRoundConfig,
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


def require_weights(store: Store, method: str, **kwargs) -> StageGroup:
    """The complete, up-to-date `weights/<method>` group to read (`Store.require_group`'s
    refusals; `allow_stale` to read a stale one anyway)."""
    return store.require_group(OWNED_GROUP, method, **kwargs)


def adaround_config_of(group: StageGroup) -> AdaRoundConfig:
    """The `AdaRoundConfig` a `weights/<method>` group was made with; a group recorded
    before `bits_a` existed had no activation quantization (0)."""
    recorded = group.meta.config
    known = {f.name for f in fields(AdaRoundConfig)}
    return AdaRoundConfig(**{"bits_a": 0, **{k: v for k, v in recorded.items() if k in known}})
