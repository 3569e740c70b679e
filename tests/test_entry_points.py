"""Every console script answers `--version` with its member's version from the package
metadata, run as a user runs it: the installed script, not an import."""

import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest

from taq_runtime.testing import HANG_GUARD_S

# console script -> the workspace member (distribution) that declares it
ENTRY_POINTS = {
    "taq": "taq-pipeline",
    "taq-calib": "taq-calib",
    "taq-adaround": "taq-adaround",
    "taq-actstats": "taq-actstats",
    "taq-infer": "taq-infer",
    "taq-bench": "taq-bench",
    "taq-model": "taq-model",
    "taq-tiny": "taq-tiny",
    "taq-shapes": "taq-shapes",
    "train-tiny-shapes": "taq-shapes",
}


@pytest.fixture(scope="module")
def answers():
    """Start all scripts at once (their imports dominate), then collect (rc, stdout, stderr)."""
    scripts = Path(sys.executable).parent
    procs = {
        name: subprocess.Popen(
            [str(scripts / name), "--version"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ENTRY_POINTS
    }
    answers = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=HANG_GUARD_S)
        answers[name] = (proc.returncode, out, err)
    return answers


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_version_flag_prints_the_members_metadata_version(answers, script):
    rc, out, err = answers[script]
    assert rc == 0, err
    dist = ENTRY_POINTS[script]
    own = f"{dist} {version(dist)}"
    assert out.strip() == (own if script == dist else f"{script} ({own})")


def test_every_console_script_of_the_workspace_is_covered():
    scripts = entry_points(group="console_scripts")
    ours = {ep.name: ep.dist.name for ep in scripts if ep.dist.name.startswith("taq-")}
    assert ours == ENTRY_POINTS
