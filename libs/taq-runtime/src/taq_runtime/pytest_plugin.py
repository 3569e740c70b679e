"""pytest plugin (entry point `pytest11`) shared by every taq member's tests.

Loaded by pytest before any conftest or test module, so this is where the test process
loads the optimised BLAS, before anything imports MLX (the tests' entry point, as
`launcher.launch` is the commands').
"""

from __future__ import annotations

import os

import pytest

from taq_runtime.blas import load_optimised_blas
from taq_runtime.testing import run_command as _run_command

load_optimised_blas()
os.environ.setdefault("TAQ_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def run_command():
    """`run_command(module, *args)`: `python -m module args` (see `taq_runtime.testing`)."""
    return _run_command
