"""Every group of the schema has exactly one owner module: the one that declares
`OWNED_GROUP`, defines the group's config (a dataclass with a `version`) and is the only
module that creates the group in a store or opens it to read (taq-io's own store code
aside): every other module reads a group through its owner's reader."""

import ast
import re
from collections import Counter
from pathlib import Path

from taq_io import GROUPS

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for p in ROOT.glob("*/*/src/**/*.py") if "taq_io" not in p.parts)


def owned_group(tree: ast.Module) -> str | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "OWNED_GROUP" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return None


def has_versioned_config(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.decorator_list:
            fields = {
                item.target.id
                for item in node.body
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
            }
            if "version" in fields:
                return True
    return False


def creates_group(source: str) -> bool:
    return ".create_group(" in source


def reads_group(source: str) -> bool:
    """Opens a group itself (`Store.require_group`) or reads what a group records."""
    return ".require_group(" in source or ".meta.config" in source


def touches_other_group(source: str) -> bool:
    """Creates or opens a group other than the module's own `OWNED_GROUP`."""
    return re.search(r"\.(create|require)_group\((?!\s*OWNED_GROUP\b)", source) is not None


def test_every_schema_group_has_exactly_one_owner():
    owners = {}
    for path in SOURCES:
        kind = owned_group(ast.parse(path.read_text()))
        if kind is not None:
            owners.setdefault(kind, []).append(path.relative_to(ROOT))
    counts = Counter({kind: len(paths) for kind, paths in owners.items()})
    problems = [f"{k}: no owner" for k in GROUPS if not counts[k]]
    problems += [f"{k}: {len(v)} owners {v}" for k, v in owners.items() if len(v) > 1]
    problems += [f"{k}: not a schema group" for k in owners if k not in GROUPS]
    assert not problems, problems


def test_owners_define_a_versioned_config_and_are_the_only_writers():
    for path in SOURCES:
        source = path.read_text()
        tree = ast.parse(source)
        name = path.relative_to(ROOT)
        if owned_group(tree) is not None:
            assert has_versioned_config(tree), f"{name}: no config dataclass with a version"
            assert not touches_other_group(source), f"{name} opens a group it does not own"
        else:
            assert not creates_group(source), f"{name} creates a group but owns none"


def test_only_owners_read_their_groups():
    for path in SOURCES:
        source = path.read_text()
        if owned_group(ast.parse(source)) is None:
            name = path.relative_to(ROOT)
            assert not reads_group(source), f"{name} reads a group directly: use its owner's reader"
