"""The entry point of every taq command: the optimised BLAS first, then the command.

MLX must find the optimised BLAS in the process before `mlx.core` is first imported
(`blas.py`). Relying on an import that happens to come first breaks as soon as a formatter
or a new import reorders a file, so every console script (and `python -m <package>`) goes
through `launch`, which loads BLAS and only then imports the module that holds the command.
For that to hold, a command's package `__init__` must not import MLX (a test checks it).
"""

from __future__ import annotations

import importlib

from taq_runtime.blas import load_optimised_blas


def launch(target: str) -> int:
    """Load the optimised BLAS, then import `module:function` and run it (its exit code)."""
    load_optimised_blas()
    module_name, _, function = target.partition(":")
    command = getattr(importlib.import_module(module_name), function)
    return command() or 0
