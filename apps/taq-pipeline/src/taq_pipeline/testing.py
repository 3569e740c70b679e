"""What the cross-member tests share about `taq run`: its smallest flags and how to call it."""

from __future__ import annotations

import os
import subprocess
import sys

MINIMAL = ("--num-images", "2", "--num-steps", "4", "--iters", "20", "--eval-samples", "4")
"""`taq run` at its smallest: every stage, every variant, in about a minute on 2 cores."""

ENV = {**os.environ, "TAQ_NO_PROGRESS": "1"}


def taq(*args: object) -> subprocess.CompletedProcess:
    """The real `taq` command in a subprocess, output captured."""
    cmd = [sys.executable, "-m", "taq_pipeline", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV)
