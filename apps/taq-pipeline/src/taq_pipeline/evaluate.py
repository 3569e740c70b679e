"""Evaluate every variant against the FP model on fixed prompts and seeds (`eval.json`).

Variants (`evaluation_plan`): FP | each weight method of the store, weights only (RTN W4 |
GPTQ W4 | AdaRound W4) | AdaRound W4A8 (static, learned scales) | AdaRound W4 + time-aware
A4/A6/A8 | + SmoothQuant. Per variant: MSE and PSNR of the final images vs FP; on
tiny-digits the digit classifier's accuracy and a Fréchet distance of its features vs the
real digits; resident weight bytes of the quantized layers; wall time; average activation
bits; for every preset SSIM and the 10th-percentile (worst-case) PSNR vs FP; on presets with
their own evaluator (tiny-shapes: prompt adherence, `tasks.py`) its score per
sample and per attribute. Packed 4-bit weights are real; activation quantization is simulated
(fake-quant).

Seeds: the split's (`seeds.py`: held-out by default, never a calibration or tuning seed); each
variant keeps its per-sample MSE and digit correctness, so `intervals.py` can give every metric
a 95 % interval and each claim a paired comparison on the same samples.

Results go to `eval.json` next to the report, one variant at a time (written atomically),
with the identities of the store groups they came from: a killed evaluation resumes at the
first variant not written, and changed artifacts invalidate the file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from taq_infer import load_quantized
from taq_infer.artifacts import has_quant_config
from taq_io import Store, StoreError, config_hash
from taq_model.presets import load_preset
from taq_model.taxonomy import get_module, quantizable_layers
from taq_pipeline.groups import identity
from taq_pipeline.intervals import Claim
from taq_pipeline.seeds import seed_split
from taq_pipeline.tasks import LABELS, mean_of_given, task_metrics, task_scores
from taq_run.calib import calib_seeds, require_calib
from taq_run.quant_config import read_tiers, require_quant_config
from taq_run.weight_methods import weight_methods
from taq_run.weights import grid_of, has_weights, require_weights
from taq_runtime.cli import progress
from taq_runtime.fidelity import image_fidelity, per_image_mse, psnr_from_mse
from taq_tiny import classifier as digit_classifier
from taq_tiny.data import load_digit_images


@dataclass(frozen=True)
class EvaluationPlan:
    """What `taq eval` renders for a store: its variants (name, `load_quantized` keywords;
    None: FP), the claims the report checks, and the groups they read (by path)."""

    variants: list[tuple[str, dict | None]]
    claims: list[Claim]
    inputs: list[str]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.variants]


def evaluation_plan(store: Store) -> EvaluationPlan:
    """The variants: FP, then each installed weight method whose `weights/<method>` the
    store holds (weights only, in registry order), then the activation variants on the last
    of them (the most elaborate: AdaRound in a default run): its learned static scales if
    it has them, the time-aware tiers, SmoothQuant. Claims: each method against RTN at its
    width (by the method's `target_db`), and each activation step against the one before."""
    methods = [m for m in weight_methods().values() if has_weights(store, m.name)]
    if not methods:
        raise StoreError(
            f"{store.path} has no weights of an installed method: run `taq run` or a stage "
            "command such as `taq-adaround rtn`"
        )
    variants: list[tuple[str, dict | None]] = [("FP", None)]
    claims, inputs = [], [f"weights/{m.name}" for m in methods]
    names = {}
    for method in methods:
        bits = grid_of(require_weights(store, method.name)).bits_w
        names[method.name] = f"{method.label} W{bits}"
        variants.append((names[method.name], {"weights": method.name, "act": "none"}))
    if "rtn" in names:
        claims += [
            Claim(names[m.name], names["rtn"], "psnr", margin=m.target_db)
            for m in methods
            if m.name != "rtn"
        ]
    last = methods[-1]
    grid = grid_of(require_weights(store, last.name))
    timestep = f"{names[last.name]} + time-aware A4/A6/A8"
    if has_quant_config(store):
        inputs.append("quant_config")
        variants.append((timestep, {"weights": last.name, "act": "timestep"}))
        smooth = {"weights": last.name, "act": "timestep", "smoothquant": True}
        variants.append(("+ SmoothQuant", smooth))
        claims.append(Claim("+ SmoothQuant", timestep, "psnr"))
    if grid.bits_a:
        static = f"{names[last.name]}A{grid.bits_a} static"
        variants.insert(len(methods) + 1, (static, {"weights": last.name, "act": "static"}))
        if has_quant_config(store):
            claims.insert(len(claims) - 1, Claim(timestep, static, "psnr"))
    return EvaluationPlan(variants, claims, inputs)


EVAL_VERSION = 4  # 2: seed splits, per-sample MSE and correctness; 3: SSIM, p10 PSNR, task
# scores; 4: the variants from the store's weight methods


@dataclass(frozen=True)
class EvalConfig:
    model: str
    samples: int
    num_steps: int
    cfg: float
    seed: int  # the calibration's: every split's seeds lie above it
    num_images: int  # calibration images (their seeds are never evaluated on)
    split: str = "heldout"  # heldout | tuning (seeds.py)
    local_ckpt: str | None = None
    version: int = EVAL_VERSION

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("local_ckpt")  # where the checkpoint lies does not change the numbers
        return data


@dataclass(frozen=True)
class VariantResult:
    name: str
    mse: float
    psnr_db: float
    accuracy: float | None
    frechet: float | None
    weight_bytes: int
    seconds: float
    act_bits: float | None  # None: activations in float32
    images: list  # uint8 (N, h, w, c) as nested lists, for the sample grid
    sample_mse: list  # per sample, vs FP's image of the same seed
    correct: list | None  # per sample 0/1 (the task metric: digit classifier, adherence)
    ssim: float | None = None  # mean SSIM vs FP's images
    psnr_p10_db: float | None = None  # 10th-percentile per-image PSNR vs FP (worst case)
    attributes: dict | None = None  # per-attribute accuracies of the task metric

    def row(self) -> dict:
        data = asdict(self)
        for per_sample in ("images", "sample_mse", "correct"):
            data.pop(per_sample)
        return data


def _fp_layer_bytes(handle) -> int:
    total = 0
    for ref in quantizable_layers(handle.mmdit):
        layer = get_module(handle.mmdit, ref.path)
        total += layer.weight.nbytes + (layer.bias.nbytes if "bias" in layer else 0)
    return total


def _act_bits(store: Store, options: dict | None) -> float | None:
    if not options or options["act"] == "none":
        return None
    if options["act"] == "static":
        return float(grid_of(require_weights(store, options["weights"])).bits_a)
    tiers = read_tiers(require_quant_config(store))
    return tiers.average_bits(bool(options.get("smoothquant")))


def input_identities(store: Store, plan: EvaluationPlan) -> dict[str, str]:
    """The identities of the groups the evaluation reads (refuses missing or stale ones)."""
    return {path: identity(store, path) for path in plan.inputs}


def _write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)  # a kill leaves the old file or the new one, never half


def load_eval(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def render_variant(
    config: EvalConfig, store: Store, options: dict | None, prompts: list[str], seeds: list[int]
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """One variant's latents, images (uint8), quantized-layer bytes and wall time; `options`
    None is the FP model, else `load_quantized`'s keywords."""
    handle = load_preset(config.model, local_ckpt=config.local_ckpt)
    start = time.perf_counter()
    if options is None:
        latents = handle.generate(prompts, seeds, config.num_steps, config.cfg)
        weight_bytes = _fp_layer_bytes(handle)
    else:
        model = load_quantized(handle, store, num_steps=config.num_steps, **options)
        latents = model.generate(prompts, seeds, config.num_steps, config.cfg)
        weight_bytes = model.layer_bytes()
    latents = np.array(latents, dtype=np.float32)
    seconds = time.perf_counter() - start
    return latents, handle.to_images(latents), int(weight_bytes), seconds


def evaluate(store: Store, config: EvalConfig, path: Path, log=print) -> list[VariantResult]:
    """Every variant's row, FP first (the reference); resumes from `path`, then writes it."""
    plan = evaluation_plan(store)
    record = {
        "config": config.to_json(),
        "config_hash": config_hash(config.to_json()),
        "inputs": input_identities(store, plan),
        "variant_names": plan.names,
        "variants": {},
    }
    previous = load_eval(path)
    same = ("config_hash", "inputs", "variant_names")
    if previous and all(previous.get(k) == record[k] for k in same):
        record["variants"] = previous["variants"]
    elif previous:
        log("   eval.json came from other artifacts or settings: evaluating again")
    path.parent.mkdir(parents=True, exist_ok=True)
    defaults = load_preset(config.model, local_ckpt=config.local_ckpt).default_prompts
    # the model is dropped at once: each variant builds its own, and at SD3 size two float32
    # models (8.45 GB each) would otherwise sit side by side during the whole evaluation
    prompts = [defaults[i % len(defaults)] for i in range(config.samples)]
    split = seed_split(config.seed, config.num_images, config.split, config.samples)
    calibrated = set(calib_seeds(require_calib(store)))
    if calibrated & set(split.evaluation):
        raise StoreError(
            f"evaluation seeds {split.to_json()['evaluation']} include calibration seeds of "
            f"{store.path}: its calib group was made with another --seed; rerun `taq run`"
        )
    seeds = list(split.evaluation)
    record["seeds"] = split.to_json()
    metrics = task_metrics(config.model)
    digits = "accuracy" in metrics
    record["task_metric"] = LABELS[metrics[0]] if metrics else None
    record["prompts"] = prompts
    real_features = digit_classifier.features(load_digit_images()[0]) if digits else None
    fp_images = None
    done = sum(name in record["variants"] for name in plan.names)
    bar = progress(len(plan.variants), "evaluate", unit="variant", initial=done)
    for name, options in plan.variants:
        if name in record["variants"]:
            if fp_images is None:
                fp_images = np.array(record["variants"][name]["images"], dtype=np.uint8)
            continue
        bar.set_postfix_str(name)
        latents, images, weight_bytes, seconds = render_variant(
            config, store, options, prompts, seeds
        )
        if fp_images is None:
            fp_images = images
        sample_mse = per_image_mse(fp_images, images)
        mse = float(sample_mse.mean())
        fidelity = image_fidelity(fp_images, images)
        accuracy = frechet = correct = attributes = None
        if metrics:
            scores = task_scores(config.model, prompts, latents, images)
            correct = [int(v) for v in scores[metrics[0]]]
            accuracy = float(np.mean(correct))
            means = {name: mean_of_given(scores[name]) for name in metrics[1:]}
            attributes = {k: v for k, v in means.items() if v is not None} or None
        if digits:
            features = digit_classifier.features(latents)
            frechet = float(digit_classifier.frechet_distance(features, real_features))
        result = VariantResult(
            name,
            mse,
            psnr_from_mse(mse),
            accuracy,
            frechet,
            int(weight_bytes),
            seconds,
            _act_bits(store, options),
            images.tolist(),
            sample_mse.tolist(),
            correct,
            fidelity.ssim,
            fidelity.psnr_p10,
            attributes,
        )
        record["variants"][name] = asdict(result)
        _write_json(path, record)
        bar.update()
        log(f"   {name}: PSNR {result.psnr_db:.2f} dB, {seconds:.1f}s")
    bar.close()
    return [VariantResult(**record["variants"][name]) for name in plan.names]


def read_results(path: Path) -> list[VariantResult] | None:
    """The variants of a finished `eval.json`, or None when it is absent or partial."""
    record = load_eval(path)
    names = (record or {}).get("variant_names")
    if not names or any(name not in record["variants"] for name in names):
        return None
    return [VariantResult(**record["variants"][name]) for name in names]
