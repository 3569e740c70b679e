"""Evaluate every variant against the FP model on fixed prompts and seeds.

Variants: FP | RTN W4 | AdaRound W4 | AdaRound W4A8 (static, learned scales) | AdaRound W4 +
time-aware A4/A6/A8 | + SmoothQuant. Per variant: MSE and PSNR of the final images vs FP; on
tiny-digits the digit classifier's accuracy and a Fréchet distance of its features vs the
real digits; resident weight bytes of the quantized layers; wall time; average activation
bits. Packed 4-bit weights are real; activation quantization is simulated (fake-quant).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from taq_model import digit_classifier
from taq_model.digits import load_digit_images
from taq_model.presets import load_preset
from taq_model.taxonomy import get_module, quantizable_layers

import numpy as np

from taq_infer import load_quantized
from taq_io import Store

VARIANTS = (
    ("FP", None),
    ("RTN W4", {"weights": "rtn", "act": "none"}),
    ("AdaRound W4", {"weights": "adaround", "act": "none"}),
    ("AdaRound W4A8 static", {"weights": "adaround", "act": "static"}),
    ("AdaRound W4 + time-aware A4/A6/A8", {"weights": "adaround", "act": "timestep"}),
    ("+ SmoothQuant", {"weights": "adaround", "act": "timestep", "smoothquant": True}),
)


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

    def row(self) -> dict:
        data = asdict(self)
        data.pop("images")
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
        return float(store.require_group("weights", "adaround").meta.config["bits_a"])
    table = "sq_bits" if options.get("smoothquant") else "bits"
    return float(store.require_group("quant_config").read(table).mean())


def evaluate(store: Store, model: str, samples: int, num_steps: int, cfg: float, seed: int):
    """Rows of every variant, FP first (the reference)."""
    handle = load_preset(model)
    prompts = [handle.default_prompts[i % len(handle.default_prompts)] for i in range(samples)]
    seeds = [seed + 1000 + i for i in range(samples)]  # not the calibration seeds
    digits = model == "tiny-digits"
    labels = np.array([int(p.split()[-1]) for p in prompts]) if digits else None
    real_features = digit_classifier.features(load_digit_images()[0]) if digits else None
    results, reference = [], None
    for name, options in VARIANTS:
        handle = load_preset(model)
        start = time.perf_counter()
        if options is None:
            latents = handle.generate(prompts, seeds, num_steps, cfg)
            weight_bytes = _fp_layer_bytes(handle)
        else:
            quantized = load_quantized(handle, store, num_steps=num_steps, **options)
            latents = quantized.generate(prompts, seeds, num_steps, cfg)
            weight_bytes = quantized.layer_bytes()
        seconds = time.perf_counter() - start
        latents = np.array(latents, dtype=np.float32)
        images = handle.to_images(latents)
        if reference is None:
            reference = images.astype(np.float64)
        mse = float(np.mean((images.astype(np.float64) - reference) ** 2))
        psnr = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
        accuracy = frechet = None
        if digits:
            accuracy = float((digit_classifier.predict(latents) == labels).mean())
            features = digit_classifier.features(latents)
            frechet = digit_classifier.frechet_distance(features, real_features)
        results.append(
            VariantResult(
                name,
                mse,
                psnr,
                accuracy,
                frechet,
                weight_bytes,
                seconds,
                _act_bits(store, options),
                images.tolist(),
            )
        )
        print(f"   {name}: PSNR {psnr:.2f} dB, {seconds:.1f}s", flush=True)
    return results
