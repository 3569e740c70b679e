"""taq-calib: calibration latents from real sampling trajectories."""

from taq_calib.calibrate import CalibConfig, CalibResult, calibrate

__all__ = ["CalibConfig", "CalibResult", "calibrate"]
