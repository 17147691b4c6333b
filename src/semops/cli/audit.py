"""`semops audit`: check the tamper-evident audit logs of a network's services.

`semops audit verify DATA_DIR` reads the audit log of every service it finds under DATA_DIR
(the router and each processor; SQLite files, or the PostgreSQL URLs in
DATA/network.json), recomputes every hash, follows the chain from entry 1 and checks each
checkpoint's signature with the service's certificate, validated against the scheme root.
It exits 1 naming the first broken entry of each broken log: service, seq and what is
wrong. Services may keep running while it reads.

Exit codes: 0 every log holds, 1 a log is broken or none was found, 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from semops.audit.verify import verify_data_dir
from semops.cli.common import EXIT_FAILED, err, fail, out, readable_errors, run_async

audit_app = typer.Typer(help="Audit logs: verify that nothing was altered.", no_args_is_help=True)


@audit_app.callback()
def audit() -> None:
    """Audit logs: `semops audit verify DATA_DIR`."""
    # A callback keeps `verify` a sub-command even while it is the only one.


@audit_app.command("verify")
def verify(
    data_dir: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="A network's data folder (or one service's)."
        ),
    ],
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Scheme root certificate [default: DATA_DIR/pki/root-ca.crt]."),
    ] = None,
) -> None:
    """Verify every service's audit log: chain, hashes and signed checkpoints."""
    with readable_errors():
        reports = run_async(verify_data_dir(data_dir, root))
    if not reports:
        fail(f"no service with an audit log under {data_dir}")
    for report in reports:
        if report.broken is None:
            out.print(
                f"[green]ok[/green]     {escape(report.service)}: {report.entries} entries, "
                f"{report.checkpoints} signed checkpoints, "
                f"{report.unsigned_tail} after the last one"
                + (f"; {report.staged} staged, not chained yet" if report.staged else "")
            )
        else:
            err.print(f"[bold red]BROKEN[/bold red] {escape(str(report.broken))}")
    if any(report.broken is not None for report in reports):
        raise typer.Exit(EXIT_FAILED)


__all__ = ["audit_app"]
