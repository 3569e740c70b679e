"""The temporal analysis of a plan (TaQ-DiT §3.3): which layers switch tiers across
timesteps, which keep one tier at every step, and how much the post-GELU shift narrows each
`fc2` input's range.

`analyze` stores it as the `temporal` group beside `quant_config`; `temporal_record` turns
the group into the JSON that `taq report` writes next to the report (`temporal.json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from taq_io import GROUPS, StageGroup, Store

OWNED_GROUP = "temporal"  # this module writes and reads the group (one owner per group)
TIER_NAMES = {4: "A4", 6: "A6", 8: "A8"}


@dataclass(frozen=True)
class TemporalConfig:
    """The temporal analysis has no settings of its own: it follows from the `quant_config`
    it is made from (its input), so the group records an empty config."""

    # the group's format version (the schema's); not hashed, so stores keep their configs
    version: ClassVar[int] = GROUPS[OWNED_GROUP].version

    def to_json(self) -> dict:
        return {}


def temporal_arrays(
    bits: np.ndarray, range_unshifted: np.ndarray, range_shifted: np.ndarray
) -> dict[str, np.ndarray]:
    """Per layer from `bits (step, layer)`: tier changes between consecutive steps, switcher
    or not, and the one tier of a non-switcher (0 for switchers); the ranges as given."""
    changes = (np.diff(bits, axis=0) != 0).sum(axis=0).astype(np.int32)
    switcher = (bits != bits[:1]).any(axis=0)
    return {
        "tier_changes": changes,
        "switcher": switcher,
        "always_bits": np.where(switcher, 0, bits[0]).astype(np.int32),
        "range_unshifted": range_unshifted.astype(np.float32),
        "range_shifted": range_shifted.astype(np.float32),
    }


def write_temporal(
    store: Store,
    quant_config: StageGroup,
    names: list[str],
    post_gelu: np.ndarray,
    arrays: dict[str, np.ndarray],
    overwrite: bool = False,
) -> StageGroup:
    group = store.create_group(
        OWNED_GROUP,
        producer=quant_config.meta.producer,
        config=TemporalConfig().to_json(),
        inputs={"quant_config": quant_config.identity()},
        sizes={"layer": len(names), "step": arrays["range_shifted"].shape[0]},
        constants={"layer_names": names, "post_gelu": post_gelu, **arrays},
        overwrite=overwrite,
    )
    group.mark_complete()
    return group


def temporal_record(group: StageGroup) -> dict:
    """Switchers, always-A4/A6/A8 lists and the shift's effect per fc2 layer, as JSON."""
    names = group.read("layer_names").tolist()
    switcher, always = group.read("switcher"), group.read("always_bits")
    changes = group.read("tier_changes")
    unshifted, shifted = group.read("range_unshifted"), group.read("range_shifted")
    shift = {}
    for i in np.flatnonzero(group.read("post_gelu")):
        shift[names[i]] = {
            "range_unshifted": float(unshifted[:, i].mean()),
            "range_shifted": float(shifted[:, i].mean()),
            "ratio": float(shifted[:, i].mean() / max(unshifted[:, i].mean(), 1e-30)),
        }
    return {
        "layers": len(names),
        "switchers": {names[i]: int(changes[i]) for i in np.flatnonzero(switcher)},
        "always": {
            label: [names[i] for i in np.flatnonzero(always == bits)]
            for bits, label in TIER_NAMES.items()
        },
        "shift": shift,
    }


def require_temporal(store: Store, **kwargs) -> StageGroup:
    """The complete, up-to-date `temporal` group to read (`Store.require_group`'s refusals)."""
    return store.require_group(OWNED_GROUP, **kwargs)
