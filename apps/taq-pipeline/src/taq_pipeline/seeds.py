"""Which seeds each purpose may use: calibration, tuning, held-out (never mixed).

Every choice made by looking at results (tier rule, target dB, range margin, iterations) is
made on the *tuning* split; the report's headline numbers come from the *held-out* split, which
no default was chosen on. The splits are disjoint ranges above the run's `--seed`:

    calibration  seed + [0, 1000)           taq-calib image i uses seed + i
    tuning       seed + [1000, 50000)        `taq eval --split tuning` (where defaults are tuned)
    held-out     seed + [50000, ...)         `taq run` / `taq eval` (the default split)

A request that would leave its range (more calibration images or tuning samples than it
holds) is refused rather than allowed to overlap another split.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("heldout", "tuning")
CALIBRATION_START, TUNING_START, HELDOUT_START = 0, 1000, 50000
MIN_EVAL_SAMPLES = 2
"""A Fréchet distance fits a covariance and an interval a spread: one sample has neither."""


def check_eval_samples(count: int) -> None:
    """Refuse (ValueError naming the flag) fewer evaluation samples than an evaluation needs:
    checked with the other flags, before any stage runs."""
    if count < MIN_EVAL_SAMPLES:
        raise ValueError(
            f"--eval-samples must be at least {MIN_EVAL_SAMPLES} (a Fréchet distance and an "
            f"interval need two samples), got {count}"
        )


@dataclass(frozen=True)
class SeedSplit:
    """The seeds of one run: calibration images, then the evaluation split's samples."""

    calibration: tuple[int, ...]
    evaluation: tuple[int, ...]
    split: str  # "heldout" or "tuning"

    def to_json(self) -> dict:
        return {
            "split": self.split,
            "calibration": _span(self.calibration),
            "evaluation": _span(self.evaluation),
        }


def _span(seeds: tuple[int, ...]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if seeds else "none"


def split_range(split: str) -> tuple[int, int | None]:
    """`[start, stop)` offsets (above `--seed`) of a split; stop None: unbounded."""
    ranges = {
        "calibration": (CALIBRATION_START, TUNING_START),
        "tuning": (TUNING_START, HELDOUT_START),
        "heldout": (HELDOUT_START, None),
    }
    if split not in ranges:
        raise ValueError(f"--split {split!r} is unknown: pick one of {', '.join(SPLITS)}")
    return ranges[split]


def split_seeds(seed: int, split: str, count: int) -> tuple[int, ...]:
    """`count` seeds of `split` (calibration, tuning or heldout) for the run's `seed`."""
    start, stop = split_range(split)
    if stop is not None and count > stop - start:
        raise ValueError(
            f"{count} {split} seeds leave that split's {stop - start}: ask for at most "
            f"{stop - start} so no seed is shared with another split"
        )
    return tuple(seed + start + i for i in range(count))


def seed_split(seed: int, num_images: int, split: str, samples: int) -> SeedSplit:
    """Calibration seeds (`num_images`) and `samples` evaluation seeds of `split`."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r} is unknown: pick one of {', '.join(SPLITS)}")
    return SeedSplit(
        split_seeds(seed, "calibration", num_images), split_seeds(seed, split, samples), split
    )
