"""The console scripts the benchmarks run, as a user would: from this environment's bin."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The path of console script `name` installed beside this interpreter, or on PATH where
    the interpreter is an overlay without scripts (`uv run --with ...` puts the project
    environment's bin on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name) or str(beside)
