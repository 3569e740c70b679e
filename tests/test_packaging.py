"""The packaging a user meets: the uv versions the lock works with, the Python versions every
member accepts, and the versions of each other that workspace members accept."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECTS = sorted(ROOT.glob("*/*/pyproject.toml"))


def load(path: Path) -> dict:
    return tomllib.loads(path.read_text())


MEMBERS = {load(p)["project"]["name"]: load(p) for p in PYPROJECTS}


def bounded(spec: SpecifierSet) -> bool:
    ops = {s.operator for s in spec}
    return bool(ops & {">=", ">", "~="}) and bool(ops & {"<", "<=", "~="})


def test_workspace_members_are_the_pyprojects_found():
    members = load(ROOT / "pyproject.toml")["tool"]["uv"]["workspace"]["members"]
    assert members == ["libs/*", "packages/*", "apps/*"]
    assert len(MEMBERS) == len(PYPROJECTS) >= 10


def test_root_names_the_uv_versions_the_lock_works_with():
    spec = SpecifierSet(load(ROOT / "pyproject.toml")["tool"]["uv"]["required-version"])
    assert bounded(spec)
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("no uv to check against required-version")
    running = re.match(r"uv (\S+)", subprocess.check_output([uv, "--version"], text=True))
    assert Version(running.group(1)) in spec


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_member_accepts_python_311_and_later(name):
    spec = SpecifierSet(MEMBERS[name]["project"]["requires-python"])
    assert "3.11" in spec and "3.10" not in spec
    assert not any(s.operator in ("<", "<=", "==", "~=") for s in spec), "no upper bound"


def test_lock_resolves_for_the_members_python_range():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    ranges = {MEMBERS[n]["project"]["requires-python"] for n in MEMBERS}
    assert ranges == {lock["requires-python"]}


def requirements_on_members(project: dict) -> list[Requirement]:
    lines = list(project["project"].get("dependencies", []))
    for group in project.get("dependency-groups", {}).values():
        lines += [g for g in group if isinstance(g, str)]
    return [r for r in map(Requirement, lines) if r.name in MEMBERS]


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_member_says_which_versions_of_other_members_it_accepts(name):
    project = MEMBERS[name]
    sources = project.get("tool", {}).get("uv", {}).get("sources", {})
    for req in requirements_on_members(project):
        assert bounded(req.specifier), f"{name} -> {req}: needs a lower and an upper bound"
        assert MEMBERS[req.name]["project"]["version"] in req.specifier, f"{name} -> {req}"
        assert sources.get(req.name) == {"workspace": True}, f"{name} -> {req.name} source"


def test_some_members_depend_on_others():
    assert sum(len(requirements_on_members(p)) for p in MEMBERS.values()) >= 20
