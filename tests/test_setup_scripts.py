"""What a newcomer meets first: scripts/bootstrap on a machine without apt-get or root,
scripts/uv before bootstrap, and the README's quick-start commands that CI runs verbatim.

The machines are simulated by PATH: a directory holding the system tools the scripts need,
with `ldconfig` answering "no OpenBLAS", and apt-get / sudo present or not."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from taq_runtime.testing import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("bash", "dirname", "uname", "grep", "id", "sed", "env")
SKIP_COST = "MLX on CPU keeps its reference BLAS, ~40x slower"


def machine(tmp_path, **stubs: str) -> dict:
    """An environment whose PATH holds only the basic tools plus `stubs` (name -> sh body)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    stubs = {"ldconfig": "exit 0", **stubs}  # ldconfig -p lists no libopenblas
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}


def bootstrap_blas(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROOT / "scripts/bootstrap"), "--blas-only", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )


def test_bootstrap_without_apt_get_skips_openblas_in_one_line(tmp_path):
    out = bootstrap_blas(machine(tmp_path))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and "skipped OpenBLAS (no apt-get)" in lines[0]
    assert SKIP_COST in lines[0]


@pytest.mark.parametrize(
    "sudo",
    [None, "exit 1"],  # no sudo at all; a sudo that wants a password (`sudo -n true` fails)
    ids=["no-sudo", "sudo-needs-password"],
)
def test_bootstrap_without_root_skips_openblas_and_never_calls_apt_get(tmp_path, sudo):
    called = tmp_path / "apt-get-called"
    stubs = {"apt-get": f"touch {called}; exit 1"}
    if sudo:
        stubs["sudo"] = sudo
    env = {**machine(tmp_path, **stubs), "TAQ_BOOTSTRAP_UID": "1000"}
    out = bootstrap_blas(env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and "skipped OpenBLAS (not root, no passwordless sudo)" in lines[0]
    assert SKIP_COST in lines[0]
    assert not called.exists()


def test_bootstrap_as_root_with_apt_get_installs_openblas(tmp_path):
    calls = tmp_path / "apt-get-calls"
    env = {**machine(tmp_path, **{"apt-get": f'echo "$*" >> {calls}'}), "TAQ_BOOTSTRAP_UID": "0"}
    out = bootstrap_blas(env)
    assert out.returncode == 0, out.stderr
    assert "installing OpenBLAS" in out.stdout
    assert calls.read_text().splitlines()[-1].endswith("install -y -qq libopenblas0-pthread")


def test_bootstrap_refuses_an_unknown_argument_in_one_line(tmp_path):
    out = subprocess.run(
        [str(ROOT / "scripts/bootstrap"), "--frobnicate"],
        env=machine(tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--frobnicate" in out.stderr


@pytest.fixture
def bare_clone(tmp_path) -> Path:
    """The scripts as a fresh clone has them: no .tools/, no .venv."""
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts/uv", clone / "scripts/uv")
    return clone


def test_scripts_uv_before_bootstrap_says_run_bootstrap(tmp_path, bare_clone):
    out = subprocess.run(
        [str(bare_clone / "scripts/uv"), "run", "taq", "run"],
        env=machine(tmp_path),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "run scripts/bootstrap first" in out.stderr


def test_scripts_uv_with_uv_but_no_venv_says_run_bootstrap(tmp_path, bare_clone):
    env = machine(tmp_path, uv="echo uv ran; exit 0")
    out = subprocess.run(
        [str(bare_clone / "scripts/uv"), "run", "pytest"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "no .venv" in out.stderr and "run scripts/bootstrap first" in out.stderr
    assert "uv ran" not in out.stdout


def test_scripts_uv_runs_the_workspace_environment_from_another_directory(tmp_path):
    """After bootstrap: the workspace's .venv, even with a PATH that has no uv on it unless
    bootstrap relied on one there (then that one is all the PATH holds besides the tools)."""
    env = machine(tmp_path)
    if not (ROOT / ".tools/bin/uv").exists():
        env["PATH"] += os.pathsep + str(Path(os.environ["UV"]).parent)
    code = "import sys; print(sys.prefix)"
    out = subprocess.run(
        [str(ROOT / "scripts/uv"), "run", "--no-sync", "python", "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == ROOT / ".venv"


def quickstart() -> list[str]:
    out = subprocess.run(
        [str(ROOT / ".ci/quickstart-commands"), str(ROOT / "README.md")],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_readme_quickstart_is_two_commands_that_need_no_uv_on_path():
    commands = quickstart()
    assert commands == [
        "scripts/bootstrap && scripts/uv run taq run",
        "scripts/bootstrap && scripts/uv run pytest",
    ]


def test_readme_quotes_only_the_quickstart_commands_and_ci_runs_them():
    """Wherever README quotes a set-up-and-run line, it is one CI runs; CI reads them there."""
    commands = set(quickstart())
    readme = (ROOT / "README.md").read_text()
    quoted = {
        line.split("`")[1] if "`" in line else line.strip()
        for line in readme.splitlines()
        if "scripts/bootstrap &&" in line
    }
    assert quoted <= commands
    ci = (ROOT / ".ci/run").read_text()
    assert ".ci/quickstart-commands README.md" in ci and 'bash -c "$command"' in ci


def test_quickstart_extractor_fails_in_one_line_without_the_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Usage\n\n```\nuv run taq run\n```\n")
    out = subprocess.run(
        [str(ROOT / ".ci/quickstart-commands"), str(readme)], capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1
