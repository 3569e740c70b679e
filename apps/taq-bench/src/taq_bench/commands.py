"""The console scripts the benchmarks run, as a user would: from this environment's bin."""

from __future__ import annotations

import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The path of console script `name` installed beside this interpreter."""
    return str(Path(sys.executable).parent / name)
