"""taq-model does not depend on the store (taq-io), and the store's weight role names are the
model's layer roles."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from taq_io.schema import WEIGHT_ROLES, role_key
from taq_model.taxonomy import LAYER_ROLES

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "libs" / "taq-model"


def _imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_taq_model_does_not_import_taq_io():
    sources = sorted((MODEL / "src").rglob("*.py")) + sorted((MODEL / "tests").rglob("*.py"))
    importing = [
        str(path.relative_to(ROOT))
        for path in sources
        if any(re.match(r"taq_io\b", module) for module in _imported_modules(path))
    ]
    assert importing == []
    project = tomllib.loads((MODEL / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("taq-io")]


def test_importing_every_taq_model_module_leaves_taq_io_unloaded():
    code = (
        "import pkgutil, sys, taq_model\n"
        "for m in pkgutil.walk_packages(taq_model.__path__, 'taq_model.'):\n"
        "    __import__(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('taq_io', 'zarr')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_weight_roles_are_the_layer_roles_last_parts():
    assert WEIGHT_ROLES == tuple(role_key(role) for role in LAYER_ROLES)
