"""Writes a small deterministic `calib` group the way a stage does, resuming if it exists.

Run as a script by test_crash_safety.py: `python calib_writer.py STORE [ARRAY INDEX]`. With
ARRAY INDEX it stalls (prints `stalled`, then sleeps) just before writing ARRAY at INDEX
(INDEX `-` for a constant), so the test can SIGKILL it at a chosen point of the protocol.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import zarr

from taq_io import ModelIdentity, Store

MODEL = ModelIdentity("tiny-digits", "0123456789abcdef")
IMAGES, STEPS, H, W, C, L, D, P = 6, 5, 4, 4, 1, 3, 8, 6
SIZES = dict(image=IMAGES, step=STEPS, step_all=STEPS + 1, H=H, W=W, C=C, L=L, D=D, P=P)
CONFIG = {"num_images": IMAGES, "num_steps": STEPS, "cfg": 3.0}


def constants() -> dict[str, np.ndarray]:
    sigmas = np.linspace(1.0, 0.0, STEPS + 1, dtype=np.float32)
    rng = np.random.default_rng(IMAGES)  # seeds 0..IMAGES-1 are the units'
    return {
        "timesteps": sigmas[:-1] * 1000,
        "sigmas": sigmas,
        "step_index": np.arange(STEPS, dtype=np.int32),
        "negative_tokens": rng.standard_normal((L, D), dtype=np.float32),
        "negative_pooled": rng.standard_normal(P, dtype=np.float32),
    }


def unit(image: int) -> dict[str, object]:
    rng = np.random.default_rng(image)
    return {
        "latents": rng.standard_normal((STEPS, H, W, C), dtype=np.float32),
        "prompts": f"digit {image % 10}",
        "seeds": 1000 + image,
        "final_latents": rng.standard_normal((H, W, C), dtype=np.float32),
        "cond_tokens": rng.standard_normal((L, D), dtype=np.float32),
        "cond_pooled": rng.standard_normal(P, dtype=np.float32),
    }


def write(path: str) -> None:
    store = Store.open_or_create(path, MODEL)
    group = store.create_group(
        "calib",
        producer="taq-calib 0.1.0",
        config=CONFIG,
        inputs={},
        sizes=SIZES,
        constants=constants(),
    )
    done = set(group.done_units().tolist())
    for image in range(IMAGES):
        if image not in done:
            group.write_unit(image, unit(image))
    group.mark_complete()


def stall_before(array_name: str, index: str) -> None:
    original = zarr.Array.__setitem__

    def setitem(self: zarr.Array, key: object, value: object) -> None:
        if self.basename == array_name and (index == "-" or key == int(index)):
            print("stalled", flush=True)
            time.sleep(60)
        original(self, key, value)

    zarr.Array.__setitem__ = setitem


if __name__ == "__main__":
    if len(sys.argv) == 4:
        stall_before(sys.argv[2], sys.argv[3])
    write(sys.argv[1])
