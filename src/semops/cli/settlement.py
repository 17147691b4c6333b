"""`semops settlement`: close windows, read their signed reports, reconcile, see headroom.

Operator commands (`close`, `windows`, `report`) talk to the router's loopback operator
port with the token in the router's folder (`--data-dir`); every report printed has had
its router signature checked against the scheme root in that folder first. Processor
commands (`reconcile`, `headroom`) run next to a processor (`--processor-data-dir`) and
ask the router over mutual TLS with that processor's certificate and a signed query.

Exit codes: 0 done (for `reconcile`: no differences), 1 refused, failed or differences
found, 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from semops.audit.report import (
    SettlementReport,
    open_report,
    summary_csv,
    transfers_csv,
)
from semops.cli.common import EXIT_FAILED, fail, out, readable_errors, run_async
from semops.cli.router import OperatorPort, operator_call
from semops.processor.reconcile import (
    ProcessorLocation,
    Reconciliation,
    fetch_headroom,
    reconcile_window,
)
from semops.service.clock import SystemClock

settlement_app = typer.Typer(
    help="Settlement windows: close them, read signed reports, reconcile a processor.",
    no_args_is_help=True,
)

RouterDir = Annotated[
    Path, typer.Option("--data-dir", help="The router's folder: operator token, root CA.")
]
ProcessorDir = Annotated[
    Path,
    typer.Option("--processor-data-dir", help="The processor's folder: keys, database."),
]
ProcessorId = Annotated[
    str | None, typer.Option("--id", help="The processor's id [default: the folder's name].")
]
RouterUrl = Annotated[
    str | None,
    typer.Option("--router-url", help="The router's scheme URL [default: from network.json]."),
]
DbUrl = Annotated[
    str | None, typer.Option("--db", help="The processor's database URL [default: its SQLite].")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def _verified(document: dict[str, Any], data_dir: Path) -> SettlementReport:
    """The report of a window document, its signature checked against the scheme root."""
    token, certificate = document.get("report"), document.get("router_certificate")
    if not isinstance(token, str) or not isinstance(certificate, str):
        fail(f"window {document.get('window_id')} is {document.get('state')}: no report yet")
    root = (data_dir / "root-ca.crt").read_bytes()
    return open_report(token, certificate, root, SystemClock().now())


def _print_report(report: SettlementReport, digest: str | None) -> None:
    out.print(
        f"[bold]Window {report.window_id}[/bold]  opened {report.opened_at}  "
        f"closed {report.closed_at}  transfers {report.transfers_count}  "
        f"signed by {escape(report.router_id)} (verified)"
    )
    if digest:
        out.print(f"report digest {digest}")
    table = Table("processor", "currency", "net", "sent", "received", "count sent/received")
    for part in report.participants:
        for position in part.positions:
            table.add_row(
                part.participant_id,
                position.currency,
                str(position.net_minor),
                str(position.sent_minor),
                str(position.received_minor),
                f"{position.sent_count}/{position.received_count}",
            )
    out.print(table)


@settlement_app.command("close")
def close(data_dir: RouterDir, operator_port: OperatorPort = None, as_json: AsJson = False) -> None:
    """Close the open window and open the next; print the signed report's summary."""
    with readable_errors():
        closed = run_async(
            operator_call(data_dir, operator_port, "POST", "/v1/admin/windows/close")
        )
        document = run_async(
            operator_call(
                data_dir, operator_port, "GET", f"/v1/admin/windows/{closed['window_id']}"
            )
        )
        report = _verified(document, data_dir)
    if as_json:
        out.print_json(data=closed)
        return
    _print_report(report, closed.get("report_digest"))
    out.print(f"window {closed['next_window_id']} is open")


@settlement_app.command("windows")
def windows(
    data_dir: RouterDir, operator_port: OperatorPort = None, as_json: AsJson = False
) -> None:
    """The newest settlement windows (open and closed)."""
    with readable_errors():
        result = run_async(operator_call(data_dir, operator_port, "GET", "/v1/admin/windows"))
    if as_json:
        out.print_json(data=result)
        return
    table = Table("window", "state", "opened", "closed", "transfers", "closed by")
    for row in result["windows"]:
        table.add_row(
            str(row["window_id"]),
            row["state"],
            str(row["opened_at"]),
            str(row["closed_at"] or ""),
            str(row["transfers_count"] if row["transfers_count"] is not None else ""),
            escape(row["closed_by"] or ""),
        )
    out.print(table)


@settlement_app.command("report")
def report(
    window_id: Annotated[int, typer.Argument(min=1, help="The window's number.")],
    data_dir: RouterDir,
    operator_port: OperatorPort = None,
    csv: Annotated[
        bool, typer.Option("--csv", help="CSV: one row per processor and currency.")
    ] = False,
    transfers: Annotated[
        bool, typer.Option("--transfers", help="With --csv: one row per transfer and side.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """A closed window's signed report, verified; as a table, CSV or JSON."""
    with readable_errors():
        document = run_async(
            operator_call(data_dir, operator_port, "GET", f"/v1/admin/windows/{window_id}")
        )
        verified = _verified(document, data_dir)
    if csv:
        sys.stdout.write(transfers_csv(verified) if transfers else summary_csv(verified))
    elif as_json:
        out.print_json(data=verified.to_claims())
    else:
        _print_report(verified, document.get("report_digest"))


def _print_differences(result: Reconciliation, processor_id: str) -> None:
    statement = result.statement
    net = (
        ", ".join(f"{p.net_minor} {p.currency}" for p in statement.settlement.positions)
        or "nothing"
    )
    out.print(
        f"[bold]{escape(processor_id)}[/bold], window {statement.window_id}: "
        f"{len(statement.settlement.transfers)} transfers in the router's statement, "
        f"{result.local_transfers} local records compared; net {net}"
    )
    if not result.differences:
        out.print("[bold green]reconciled: no differences[/bold green]")
        return
    table = Table("difference", "transfer / currency", "router says", "we recorded")
    for difference in result.differences:
        table.add_row(
            difference.kind,
            difference.transfer_id or difference.currency or "",
            escape(str(difference.router if difference.router is not None else "-")),
            escape(str(difference.local if difference.local is not None else "-")),
        )
    out.print(table)


@settlement_app.command("reconcile")
def reconcile(
    processor_data_dir: ProcessorDir,
    window: Annotated[int, typer.Option("--window", min=1, help="The closed window.")],
    processor_id: ProcessorId = None,
    router_url: RouterUrl = None,
    db: DbUrl = None,
    as_json: AsJson = False,
) -> None:
    """Compare a processor's ledger and transfers with the router's signed statement."""
    location = ProcessorLocation.from_folder(processor_data_dir, processor_id, router_url, db)
    with readable_errors():
        result = run_async(reconcile_window(location, window, SystemClock()))
    if as_json:
        out.print_json(
            data={
                "processor_id": location.processor_id,
                "window_id": window,
                "report_digest": result.statement.report_digest,
                "differences": [difference.as_dict() for difference in result.differences],
            }
        )
    else:
        _print_differences(result, location.processor_id)
    if result.differences:
        raise typer.Exit(EXIT_FAILED)


@settlement_app.command("headroom")
def headroom(
    processor_data_dir: ProcessorDir,
    processor_id: ProcessorId = None,
    router_url: RouterUrl = None,
) -> None:
    """What the processor may still send in the open window (the router's signed word)."""
    location = ProcessorLocation.from_folder(processor_data_dir, processor_id, router_url)
    with readable_errors():
        answer = run_async(fetch_headroom(location, SystemClock()))
    out.print_json(data=answer.to_claims())


__all__ = ["settlement_app"]
