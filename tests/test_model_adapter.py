"""DiffusionKit stays behind taq-model's adapter: its private names and block call signature
appear in no other member's source, taq-model does not depend on the store (taq-io), and the
store's weight role names are the model's layer roles."""

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
OTHER_SOURCES = sorted(p for p in ROOT.glob("*/*/src/**/*.py") if MODEL not in p.parents)

# DiffusionKit's private parts (taq_model.blocks): the modulation cache and its methods, the
# RoPE module, the adaLN and offload parameter names, the sub-block flag, and the block call
# signature (its argument names and the rope keyword)
PRIVATE_NAMES = (
    "_modulation_params",
    "cache_modulation_params",
    "clear_modulation_params_cache",
    "pre_sdpa_rope",
    "adaLN_modulation",
    "to_offload",
    "skip_post_sdpa",
    "latent_image_embeddings",
    "token_level_text_embeddings",
    "latent_unified_embeddings",
    "positional_encodings=",
)


def test_private_names_are_the_adapters():
    """Every name the boundary test looks for is one taq-model really uses."""
    source = "\n".join(p.read_text() for p in (MODEL / "src").rglob("*.py"))
    assert [name for name in PRIVATE_NAMES if name not in source] == []


def test_diffusionkit_private_names_appear_only_in_taq_model():
    assert OTHER_SOURCES, "no member sources found"
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in OTHER_SOURCES
        for name in PRIVATE_NAMES
        if name in path.read_text()
    ]
    assert found == [], "use taq_model.blocks instead of DiffusionKit's private names"


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
