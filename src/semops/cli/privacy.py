"""`semops audit exposure DATA_DIR`: who holds what, checked against DESIGN.md §5.

A shell over `semops.privacy.check_exposure`: it reads every database table, log line and
stored message of every actor of the network in DATA_DIR, prints what it read per actor
and every sensitive datum found outside its column of §5, and exits 1 if there is any.
Values are never printed in full: a report must not become the leak it looks for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from semops.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, fail, out, run_async
from semops.privacy import (
    COLUMNS,
    NOBODY,
    POLICY,
    Category,
    Datum,
    ExposureReport,
    check_exposure_async,
)


def _extra(pins: list[str], codes: list[str], keys: list[str]) -> list[Datum]:
    extra = [Datum(Category.PIN, pin, NOBODY, "given PIN") for pin in pins]
    extra += [Datum(Category.ACTIVATION_CODE, code, NOBODY, "given code") for code in codes]
    extra += [Datum(Category.API_KEY, key, NOBODY, "given API key") for key in keys]
    return extra


def _policy_table() -> Table:
    table = Table(title="DESIGN.md §5 as the check reads it", title_justify="left")
    table.add_column("datum")
    for role in COLUMNS:
        table.add_column(role.value, justify="center")
    for category, cells in POLICY.items():
        table.add_row(escape(category.value), *(escape(cell.value) for cell in cells))
    return table


# (heading, the counts shown in it): pairs print as "a/b" to keep the table narrow.
_SEARCHED_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("dbs", ("databases",)),
    ("tables", ("tables",)),
    ("rows", ("rows",)),
    ("values", ("values",)),
    ("JWS/JWE", ("tokens_decoded", "tokens_opaque")),
    ("logs/lines", ("log_files", "log_lines")),
    ("files/lines", ("other_files", "other_lines")),
    ("keys", ("secret_files",)),
    ("sought", ("data_searched",)),
)


def _searched_table(report: ExposureReport) -> Table:
    title = "What was searched (JWE: sealed to its recipient, counted; keys: modes checked)"
    table = Table(title=title, title_justify="left", show_footer=True)
    table.add_column("actor", footer="total", no_wrap=True)
    for heading, names in _SEARCHED_COLUMNS:
        total = "/".join(str(sum(int(getattr(c, n)) for c in report.actors)) for n in names)
        table.add_column(heading, justify="right", footer=total)
    for counts in report.actors:
        cells = [
            "/".join(str(getattr(counts, name)) for name in names) for _, names in _SEARCHED_COLUMNS
        ]
        table.add_row(escape(counts.actor), *cells)
    return table


def _findings_table(report: ExposureReport) -> Table:
    table = Table(title=f"{len(report.findings)} findings", title_justify="left")
    for name in ("actor", "place", "datum", "encoding", "rule", "value"):
        table.add_column(name, overflow="fold")
    for finding in report.findings:
        table.add_row(
            *(
                escape(text)
                for text in (
                    finding.actor,
                    finding.place,
                    finding.category,
                    finding.encoding,
                    finding.rule,
                    finding.datum,
                )
            )
        )
    return table


def exposure(
    data_dir: Annotated[
        Path,
        typer.Argument(
            help="The network's data directory (with network.json).", show_default=False
        ),
    ],
    pin: Annotated[
        list[str] | None,
        typer.Option("--pin", help="A PIN to look for as well (repeatable; demo.json's are read)."),
    ] = None,
    activation_code: Annotated[
        list[str] | None,
        typer.Option("--activation-code", help="An activation code to look for (repeatable)."),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="An API key to look for (repeatable)."),
    ] = None,
    show_policy: Annotated[
        bool, typer.Option("--policy", help="Print the policy table before the results.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check that no actor holds data outside its column of DESIGN.md §5 (exit 1 if any)."""
    if not (data_dir / "network.json").is_file():
        fail(f"no network.json in {data_dir}", EXIT_BAD_INPUT)
    extra = _extra(pin or [], activation_code or [], api_key or [])
    report = run_async(check_exposure_async(data_dir, extra))
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        if show_policy:
            out.print(_policy_table())
        out.print(_searched_table(report))
        searched = ", ".join(f"{n} {escape(name)}" for name, n in report.data_by_category.items())
        out.print(f"Sensitive data sought: {searched}")
        for note in report.notes:
            out.print(f"[dim]note: {escape(note)}[/dim]")
        if report.ok:
            out.print("[bold green]No exposure:[/bold green] every datum is where §5 allows it.")
        else:
            out.print(_findings_table(report))
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


__all__ = ["exposure"]
