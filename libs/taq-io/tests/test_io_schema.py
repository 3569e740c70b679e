"""The schema module is well-formed and docs/schema.md documents exactly what it declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from taq_io import GROUPS, ArraySpec, GroupSpec

SCHEMA_PAGE = Path(__file__).resolve().parents[3] / "docs" / "schema.md"


def documented_section(kind: str) -> str:
    page = SCHEMA_PAGE.read_text()
    heading = f"### `{kind}`\n"
    assert heading in page, f"docs/schema.md has no section for `{kind}`"
    return page.split(heading, 1)[1].split("\n#", 1)[0]


def table_row(name: str, spec: ArraySpec) -> str:
    chunks = ", ".join("all" if chunk is None else str(chunk) for chunk in spec.chunks)
    return f"| `{name}` | {spec.dtype} | ({', '.join(spec.dims)}) | ({chunks}) |"


@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_every_group_and_array_is_documented(kind: str) -> None:
    section = documented_section(kind)
    spec = GROUPS[kind]
    assert f"`{spec.command}`" in section
    for name, array in spec.all_arrays().items():
        assert table_row(name, array) in section, f"docs/schema.md: {kind}/{name} differs"


def test_specs_refuse_malformed_declarations() -> None:
    with pytest.raises(ValueError, match="dtype"):
        ArraySpec("float64", ("x",), (None,), "")
    with pytest.raises(ValueError, match="chunks"):
        ArraySpec("float32", ("x", "y"), (None,), "")
    with pytest.raises(ValueError, match="chunk the unit dim by 1"):
        GroupSpec("k", 1, "cmd", "", unit="u", arrays={"a": ArraySpec("bool", ("u",), (None,), "")})
    with pytest.raises(ValueError, match="reserved"):
        GroupSpec("k", 1, "cmd", "", unit="u", arrays={"done": ArraySpec("bool", ("u",), (1,), "")})
