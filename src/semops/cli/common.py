"""What every `semops` sub-command shares: readable errors, exit codes, event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from semops.core.errors import SemopsError

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2

out = Console(soft_wrap=True, highlight=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)

T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def readable_errors() -> Iterator[None]:
    """A SemopsError or an OS error becomes one line on stderr and exit code 1."""
    try:
        yield
    except SemopsError as error:
        fail(f"{error.detail} ({error.code})")
    except OSError as error:
        fail(f"{error.filename or ''} {error.strerror or error}".strip())


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.run(coroutine)
