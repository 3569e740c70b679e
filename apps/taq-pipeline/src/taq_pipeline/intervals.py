"""95 % intervals of the evaluation's metrics and paired comparisons between variants.

Percentile bootstrap over samples with a fixed RNG: resample the evaluation's samples with
replacement `RESAMPLES` times, recompute the metric on each resample, and take the 2.5 and
97.5 percentiles. PSNR is a function of the mean MSE over samples, so it is recomputed from
each resample's mean MSE (not averaged per sample). A comparison of two variants is *paired*:
both are evaluated on the same prompts and seeds, so one resample draws the same samples for
both and the interval is that of the difference. A claim "A beats B" is met only when the
whole interval of `A - B` lies above the claim's margin (0 unless a target says otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from taq_runtime.fidelity import psnr_from_mse as psnr_db  # the one PSNR (uint8 peak)

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on every sample
    low: float
    high: float

    def to_json(self) -> dict:
        return asdict(self)

    def describe(self, spec: str = ".2f") -> str:
        return f"{format(self.value, spec)} [{format(self.low, spec)}, {format(self.high, spec)}]"


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`(resamples, n)` indices drawn with replacement, the same for every call with `seed`."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(value: float, draws: np.ndarray) -> Interval:
    tail = (1 - LEVEL) / 2 * 100
    # A resample whose samples all equal FP has an infinite PSNR; linear interpolation next to
    # it computes inf - inf = nan, so with infinite draws the percentiles take the nearest draw.
    method = "linear" if np.isfinite(draws).all() else "nearest"
    low, high = np.percentile(draws, [tail, 100 - tail], method=method)
    return Interval(float(value), float(low), float(high))


def mean_interval(values, seed: int = SEED) -> Interval:
    """The mean of per-sample `values` (MSE, correct 0/1, ...) with its bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    draws = values[resample_indices(len(values), seed=seed)].mean(axis=1)
    return _interval(values.mean(), draws)


def percentile_interval(values, q: float, seed: int = SEED) -> Interval:
    """The `q`-th percentile of per-sample `values` (a worst-case PSNR) with its interval."""
    values = np.asarray(values, dtype=np.float64)
    draws = np.percentile(values[resample_indices(len(values), seed=seed)], q, axis=1)
    return _interval(float(np.percentile(values, q)), draws)


def psnr_interval(sample_mse, seed: int = SEED) -> Interval:
    """PSNR of the mean of per-sample MSEs, with its bootstrap interval."""
    sample_mse = np.asarray(sample_mse, dtype=np.float64)
    draws = psnr_db(sample_mse[resample_indices(len(sample_mse), seed=seed)].mean(axis=1))
    return _interval(float(psnr_db(sample_mse.mean())), draws)


def _psnr_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a - b` in dB, 0 where both equal FP exactly (both infinite: the variants agree)."""
    both_exact = np.isinf(a) & np.isinf(b)
    return np.where(both_exact, 0.0, np.asarray(a) - np.where(both_exact, 0.0, b))


def paired_difference(a, b, metric: str = "psnr", seed: int = SEED) -> Interval:
    """`metric(A) - metric(B)` on the same samples; `a`, `b` per-sample MSEs (psnr) or values.

    `metric` "psnr": PSNR from the mean MSE (higher is better); "mean": the mean of the values.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in number: {a.shape} vs {b.shape}")
    index = resample_indices(len(a), seed=seed)
    if metric == "psnr":
        value = float(_psnr_gap(psnr_db(a.mean()), psnr_db(b.mean())))
        draws = _psnr_gap(psnr_db(a[index].mean(axis=1)), psnr_db(b[index].mean(axis=1)))
    elif metric == "mean":
        value, draws = float(a.mean() - b.mean()), a[index].mean(axis=1) - b[index].mean(axis=1)
    else:
        raise ValueError(f"unknown metric {metric!r}: psnr or mean")
    return _interval(value, draws)


@dataclass(frozen=True)
class Claim:
    """ "`better` beats `worse` on `metric` by more than `margin`" (a paired comparison)."""

    better: str
    worse: str
    metric: str = "psnr"  # psnr (dB) or accuracy (share of correct digits)
    margin: float = 0.0


@dataclass(frozen=True)
class Comparison:
    claim: Claim
    difference: Interval

    @property
    def met(self) -> bool:
        return self.difference.low > self.claim.margin

    def describe(self) -> str:
        unit = " dB" if self.claim.metric == "psnr" else " (share)"
        spec = ".2f" if self.claim.metric == "psnr" else ".3f"
        target = f" (target > {self.claim.margin:g}{unit})" if self.claim.margin else ""
        d = self.difference
        return (
            f"{self.claim.better} vs {self.claim.worse}: {format(d.value, '+' + spec)}{unit} "
            f"{self.claim.metric}, 95 % interval [{format(d.low, '+' + spec)}, "
            f"{format(d.high, '+' + spec)}]{target}: {'met' if self.met else 'NOT met'}"
        )

    def to_json(self) -> dict:
        return {**asdict(self.claim), "difference": self.difference.to_json(), "met": self.met}


def compare(claim: Claim, per_sample: dict[str, dict[str, list]]) -> Comparison:
    """Paired comparison for `claim`; `per_sample[variant]` holds `mse` and `correct` lists."""
    key, metric = ("mse", "psnr") if claim.metric == "psnr" else ("correct", "mean")
    a, b = per_sample[claim.better][key], per_sample[claim.worse][key]
    return Comparison(claim, paired_difference(a, b, metric))


def evaluation_intervals(results, claims) -> dict:
    """Per variant (objects with `name`, `sample_mse`, `correct`): PSNR, MSE and accuracy with
    intervals; per claim its paired comparison. JSON-ready (FP's PSNR is infinite: omitted)."""
    per_sample = {r.name: {"mse": r.sample_mse, "correct": r.correct} for r in results}
    variants = {}
    for r in results:
        row = {"samples": len(r.sample_mse), "mse": mean_interval(r.sample_mse).to_json()}
        if np.asarray(r.sample_mse).mean() > 0:
            row["psnr_db"] = psnr_interval(r.sample_mse).to_json()
        if r.correct is not None:
            row["accuracy"] = mean_interval(r.correct).to_json()
        variants[r.name] = row
    usable = [c for c in claims if c.better in per_sample and c.worse in per_sample]
    comparisons = [
        compare(c, per_sample)
        for c in usable
        if c.metric == "psnr"
        or all(per_sample[n]["correct"] is not None for n in (c.better, c.worse))
    ]
    return {
        "level": LEVEL,
        "method": f"percentile bootstrap over samples, {RESAMPLES} resamples, seed {SEED}; "
        "comparisons paired on the same seeds",
        "variants": variants,
        "comparisons": [c.to_json() | {"text": c.describe()} for c in comparisons],
    }
