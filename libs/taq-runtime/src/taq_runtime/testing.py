"""Helpers for the tests of every taq member: run a command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def run_command(module: str, *args: object, **kwargs) -> subprocess.CompletedProcess:
    """`python -m module args...` with this interpreter, output captured, progress bars off."""
    env = {**os.environ, "TAQ_NO_PROGRESS": "1", **kwargs.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        **kwargs,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line of a refused command (exit code 2, no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


HANG_GUARD_S = 1800
"""How long a test waits on a child process before giving up: a guard against a hang, never
a time assertion (on a loaded machine every step may take ten times as long)."""
