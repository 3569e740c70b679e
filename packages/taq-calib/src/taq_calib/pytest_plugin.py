"""pytest plugin (entry point `pytest11`): a calibrated store for the tests of the stages
after taq-calib (they install taq-calib as a dev dependency, never at run time).

MLX is imported only inside the fixture (pytest may load this before the optimised BLAS).
"""

from __future__ import annotations

import pytest

CALIB_PROMPTS = ("digit 2", "digit 7")


@pytest.fixture(scope="session")
def calib_store(digits, tmp_path_factory):
    """A tiny-digits store with a `calib` group: 2 prompts, 3 images, 6 steps, CFG 3. Shared
    by the session: copy it before writing to it."""
    from taq_calib.calibration import CalibConfig, calibrate
    from taq_io import Store
    from taq_run.runs import model_identity

    path = tmp_path_factory.mktemp("calib") / "run.zarr"
    store = Store.create(path, model_identity(digits))
    config = CalibConfig("tiny-digits", CALIB_PROMPTS, num_images=3, num_steps=6, cfg=3.0)
    calibrate(digits, store, config)
    return path
