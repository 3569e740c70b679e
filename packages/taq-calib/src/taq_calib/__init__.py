"""taq-calib: calibration latents from real sampling trajectories.

The names below load on first use, so that `taq-calib` (`__main__.py`) can load the
optimised BLAS before anything imports MLX.
"""

import importlib

_EXPORTS = {"CalibConfig": "calibration", "CalibResult": "calibration", "calibrate": "calibration"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
