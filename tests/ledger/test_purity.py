"""The ledger is pure: it imports only the standard library's data types and the core.

An allow-list rather than a deny-list, so a new import of anything that could do I/O, read
the clock or make randomness fails here until someone decides it belongs. (The shared
architecture test checks core, protocol and crypto; this covers `semops.ledger`.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LEDGER = Path(__file__).resolve().parents[2] / "src" / "semops" / "ledger"
ALLOWED_MODULES = frozenset(
    {"__future__", "collections.abc", "dataclasses", "enum", "types", "typing"}
)
ALLOWED_PREFIXES = ("semops.core.", "semops.ledger.")


def _ledger_files() -> list[Path]:
    return sorted(LEDGER.glob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            modules.add(node.module or "")
    return modules


def test_the_ledger_package_has_its_modules() -> None:
    names = {path.name for path in _ledger_files()}
    assert {"__init__.py", "model.py", "planning.py", "state.py"} <= names


@pytest.mark.parametrize("path", _ledger_files(), ids=lambda path: path.name)
def test_ledger_module_imports_only_data_types_and_the_core(path: Path) -> None:
    foreign = {
        module
        for module in _imports(path)
        if module not in ALLOWED_MODULES and not module.startswith(ALLOWED_PREFIXES)
    }
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


@pytest.mark.parametrize("path", _ledger_files(), ids=lambda path: path.name)
def test_ledger_module_uses_no_float(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    floats = [
        node.lineno
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and isinstance(node.value, float))
        or (isinstance(node, ast.Name) and node.id in {"float", "Decimal"})
    ]
    assert not floats, f"{path.name}: float near money at lines {floats}"


def test_the_theory_of_operation_is_written_down() -> None:
    docstring = ast.get_docstring(ast.parse((LEDGER / "planning.py").read_text("utf-8")))
    assert docstring is not None and "Theory of operation" in docstring
