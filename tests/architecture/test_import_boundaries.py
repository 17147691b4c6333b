"""The pure core imports no web, database or network library (STYLE.md "pure core").

Two checks, so neither can be fooled alone: a static scan of every import statement in the
core packages, and a fresh interpreter that imports the core and then lists which
forbidden modules ended up in sys.modules (catching transitive imports too).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "semops"
CORE_PACKAGES = ("core", "protocol", "crypto", "ledger")

# Libraries that do I/O on behalf of a service: web frameworks and servers, HTTP clients,
# database drivers and ORMs, sockets and event loops, subprocesses.
FORBIDDEN_ROOTS = frozenset(
    {
        "fastapi", "starlette", "uvicorn", "aiohttp", "httpx", "requests", "urllib3",
        "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "sqlite3", "psycopg", "psycopg2",
        "socket", "ssl", "asyncio", "http", "urllib", "subprocess", "selectors",
        "structlog", "typer", "rich",
    }
)  # fmt: skip
# Clock reads and randomness are arguments in the core, never imported. (`datetime` is
# allowed for its types; reading the clock through it is caught by the call scan below.)
FORBIDDEN_IN_CORE_SOURCE = frozenset({"time", "random", "secrets", "uuid", "os"})
CLOCK_OR_ENTROPY_CALLS = frozenset(
    {"now", "utcnow", "today", "time", "urandom", "token_bytes", "token_hex", "uuid4"}
)


def _core_files() -> list[Path]:
    return sorted(path for package in CORE_PACKAGES for path in (SRC / package).rglob("*.py"))


# Modules under a forbidden root that do no I/O: `urllib.parse` only splits strings (the
# URL rule of semops.core.urls); `urllib.request`, the I/O half, stays forbidden.
PURE_SUBMODULES = frozenset({"urllib.parse"})


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names if name not in PURE_SUBMODULES}


def test_core_packages_exist() -> None:
    files = _core_files()
    assert len(files) >= 10, "the core packages moved: update CORE_PACKAGES"


@pytest.mark.parametrize("path", _core_files(), ids=lambda path: str(path.relative_to(SRC)))
def test_core_module_imports_no_io_library(path: Path) -> None:
    roots = _imported_roots(path)
    assert not roots & FORBIDDEN_ROOTS, f"{path.name} imports {sorted(roots & FORBIDDEN_ROOTS)}"
    assert not roots & FORBIDDEN_IN_CORE_SOURCE, (
        f"{path.name} imports {sorted(roots & FORBIDDEN_IN_CORE_SOURCE)}: "
        "time and entropy are arguments in the core"
    )


def _clock_or_entropy_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CLOCK_OR_ENTROPY_CALLS:
                found.append(f"{name}() at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", _core_files(), ids=lambda path: str(path.relative_to(SRC)))
def test_core_module_reads_no_clock_and_makes_no_randomness(path: Path) -> None:
    assert not _clock_or_entropy_calls(path)


@pytest.mark.parametrize("path", _core_files(), ids=lambda path: str(path.relative_to(SRC)))
def test_core_module_does_not_import_services(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("semops."):
            second = node.module.split(".")[1]
            assert second in CORE_PACKAGES, f"{path.name} imports {node.module}"


def test_importing_the_core_loads_no_io_library() -> None:
    probe = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import semops.core, semops.protocol, semops.crypto\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {name.split(".")[0] for name in json.loads(result.stdout)}
    web_db_net = {
        "fastapi", "starlette", "uvicorn", "aiohttp", "httpx", "requests", "sqlalchemy",
        "aiosqlite", "asyncpg", "psycopg", "psycopg2", "sqlite3", "alembic",
    }  # fmt: skip
    assert not loaded & web_db_net, sorted(loaded & web_db_net)


def test_the_scan_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "leaky.py"
    planted.write_text(
        "import sqlalchemy\nfrom aiohttp import web\nimport time\nimport urllib.request\n"
        "from urllib.parse import urlsplit\n"
    )
    roots = _imported_roots(planted)
    assert {"sqlalchemy", "aiohttp", "urllib"} <= roots & FORBIDDEN_ROOTS
    assert "time" in roots & FORBIDDEN_IN_CORE_SOURCE
    clocky = tmp_path / "clocky.py"
    clocky.write_text("import datetime\nstamp = datetime.datetime.now()\n")
    assert _clock_or_entropy_calls(clocky) == ["now() at line 2"]
