"""docs/threat-model.md names, for each attacker, the test that shows what it cannot do.
A name that no longer exists would make the document claim a proof that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "threat-model.md"
# `tests/x/test_y.py::test_z` and the `::test_w` that follow it in the same cell.
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def _references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    current = ""
    for match in _REFERENCE.finditer(DOCUMENT.read_text(encoding="utf-8")):
        path, name, continued = match.groups()
        if path is not None:
            current = path
            found.append((path, name))
        else:
            assert current, f"`::{continued}` before any test file"
            found.append((current, continued))
    return found


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_every_test_the_threat_model_names_exists() -> None:
    references = _references()
    assert len(references) >= 40, "the threat model names the tests that show it"
    missing = []
    for path, name in references:
        file = ROOT / path
        if not file.exists():
            # A folder or file named as a whole (`tests/privacy/`) is checked as a path.
            missing.append(path)
        elif name is not None and name not in _test_names(file):
            missing.append(f"{path}::{name}")
    assert not missing, missing
