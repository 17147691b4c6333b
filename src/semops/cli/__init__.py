"""The `semops` command: one entry point, a sub-command group per role.

Each group lives in its own module and registers itself here; the CLI is a shell that
parses arguments, calls the core or a service, and prints readable results and errors.
"""

from __future__ import annotations

import typer

from semops.cli.audit import audit_app
from semops.cli.merchant import merchant_app
from semops.cli.network import bench, chaos, demo, up
from semops.cli.pki import pki_app
from semops.cli.privacy import exposure
from semops.cli.processor import processor_app
from semops.cli.router import router_app
from semops.cli.settlement import settlement_app
from semops.cli.wallet import wallet_app

app = typer.Typer(
    name="semops",
    help="SEMOPS: Secure Mobile Payment Service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("up")(up)
app.command("demo")(demo)
app.command("bench")(bench)
app.command("chaos")(chaos)
app.add_typer(pki_app, name="pki")
app.add_typer(router_app, name="router")
app.add_typer(processor_app, name="processor")
app.add_typer(merchant_app, name="merchant")
app.add_typer(wallet_app, name="wallet")
audit_app.command("exposure")(exposure)
app.add_typer(audit_app, name="audit")
app.add_typer(settlement_app, name="settlement")


def main() -> None:
    app()


__all__ = ["app", "main"]
