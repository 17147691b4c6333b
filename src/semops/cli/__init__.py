"""The `semops` command: one entry point, a sub-command group per role.

Each group lives in its own module and registers itself here; the CLI is a shell that
parses arguments, calls the core or a service, and prints readable results and errors.
"""

from __future__ import annotations

import typer

from semops.cli.pki import pki_app
from semops.cli.router import router_app

app = typer.Typer(
    name="semops",
    help="SEMOPS: Secure Mobile Payment Service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pki_app, name="pki")
app.add_typer(router_app, name="router")


def main() -> None:
    app()


__all__ = ["app", "main"]
