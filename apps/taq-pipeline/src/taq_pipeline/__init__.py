"""taq-pipeline: the `taq` command, calibration to report."""
