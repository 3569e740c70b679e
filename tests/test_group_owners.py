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


def _array_names() -> dict[str, set[str]]:
    """Each schema array name -> the group kinds that declare it."""
    names: dict[str, set[str]] = {}
    for kind, spec in GROUPS.items():
        for name in spec.all_arrays():
            names.setdefault(name, set()).add(kind)
    return names


GROUP_CALLS = ("read", "read_arrays", "read_unit", "write_unit")


def array_accesses(tree: ast.Module) -> list[tuple[int, str, str | None]]:
    """`(line, call, array name or None)` for each `.read(...)` naming a schema array by a
    literal, or at run time (an f-string or a variable: None), and every `.read_arrays(...)`,
    `.read_unit(...)` and `.write_unit(...)` call (None: `StageGroup`'s own methods, whatever
    their arguments)."""
    names = _array_names()
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        call = node.func.attr
        if call not in GROUP_CALLS or not node.args:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and first.value in names:
            found.append((node.lineno, call, first.value))
        elif call != "read" or isinstance(first, ast.JoinedStr | ast.Name):
            found.append((node.lineno, call, None))
    return sorted(found, key=lambda access: access[0])


def test_only_a_groups_owner_reads_or_writes_its_arrays():
    """A module that reads a group's arrays or writes its units must own that group: encode
    and decode live with the owner, everyone else calls them (every group, no exceptions)."""
    names = _array_names()
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        own = owned_group(tree)
        name = str(path.relative_to(ROOT))
        for line, call, array in array_accesses(tree):
            kinds = names.get(array, set()) if array else set()
            if own is not None and (array is None or own in kinds):
                continue  # the owner's own arrays (None: named at run time, or whole units)
            problems.append(f"{name}:{line}: {call}({array or '...'}) of {kinds or '?'}")
    assert not problems, problems


def test_a_read_outside_the_owner_is_found():
    """The scan sees each way a module could read or write a group's arrays itself."""
    source = """
group.read("sq_bits")
group.read(f"{role}_weight")
{name: group.read(name) for name in names}
group.read_arrays(["bits", "scale"])
group.read_unit(0)
group.write_unit(0, unit)
handle.read(1 << 20)
"""
    found = array_accesses(ast.parse(source))
    assert [(call, array) for _, call, array in found] == [
        ("read", "sq_bits"),
        ("read", None),
        ("read", None),
        ("read_arrays", None),
        ("read_unit", None),
        ("write_unit", None),
    ]
