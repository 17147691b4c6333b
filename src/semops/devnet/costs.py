"""What the pay phase of `semops bench` cost each process, per completed payment.

Just before the first measured payment and just after the last one, the bench takes a
`Reading` of every process: its CPU time (user + system, all threads) and, for a service,
the database counters its `/metrics` shows (`semops_db_*_total`, from `Database.stats`).
The difference between the two readings, divided by the payments completed in between, is
the cost of one payment; the total row adds the processes up.

fsyncs are not counted separately: a commit is taken as one durable sync. That is exact for
PostgreSQL (one WAL flush per commit with `synchronous_commit=on`, group commit aside) and
for SQLite in WAL mode with `synchronous=FULL`; with `synchronous=NORMAL` SQLite syncs only
at checkpoints, and the figure is an upper bound.

The functions here are pure (text in, figures out) except the two readers at the end.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from semops.service.metrics import DB_COMMITS, DB_STATEMENTS, DB_WRITE_TRANSACTIONS

# /proc/<pid>/stat after the ")" closing the command name: field 3 (state) comes first, so
# utime (field 14) and stime (field 15) are at these offsets (proc(5)).
_UTIME_INDEX: Final = 14 - 3
_STIME_INDEX: Final = 15 - 3
FSYNC_LEGEND: Final = (
    "fsyncs/payment = commits/payment (one durable sync per commit: PostgreSQL, SQLite WAL"
    " synchronous=FULL; an upper bound under synchronous=NORMAL)"
)
COLUMNS: Final = (
    "process",
    "cpu_ms/payment",
    "statements/payment",
    "writes/payment",
    "commits/payment",
    "fsyncs/payment",
)
MISSING: Final = "-"
_DB_COUNTERS: Final = (DB_STATEMENTS, DB_WRITE_TRANSACTIONS, DB_COMMITS)


@dataclass(frozen=True, slots=True)
class DatabaseCounts:
    statements: int
    writes: int
    commits: int


@dataclass(frozen=True, slots=True)
class Reading:
    """One process at one moment: CPU seconds used so far, its database counters."""

    cpu_s: float | None
    database: DatabaseCounts | None = None


@dataclass(frozen=True, slots=True)
class ProcessCost:
    """What one process (or all of them: `total`) spent per completed payment."""

    process: str
    cpu_ms: float | None
    statements: float | None
    writes: float | None
    commits: float | None

    @property
    def fsyncs(self) -> float | None:
        return self.commits  # see the module docstring: one durable sync per commit

    def as_json(self) -> dict[str, Any]:
        return {
            "cpu_ms": _rounded(self.cpu_ms, 3),
            "statements": _rounded(self.statements, 3),
            "writes": _rounded(self.writes, 3),
            "commits": _rounded(self.commits, 3),
            "fsyncs": _rounded(self.fsyncs, 3),
        }


def cpu_ticks(stat: str) -> int:
    """utime + stime, in clock ticks, from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may itself hold spaces and ")", so
    the fields are counted from the last ")"."""
    _, closing, rest = stat.rpartition(")")
    fields = rest.split()
    if not closing or len(fields) <= _STIME_INDEX:
        raise ValueError("not the text of /proc/<pid>/stat")
    return int(fields[_UTIME_INDEX]) + int(fields[_STIME_INDEX])


def counter_value(exposition: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of counter `name` (without `_total`) with exactly `labels`, or None."""
    wanted = labels or {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name + "_total" and sample.labels == wanted:
                return float(sample.value)
    return None


def database_counts(exposition: str) -> DatabaseCounts | None:
    """The `semops_db_*` counters of one service's /metrics text (None: it has none)."""
    values = [counter_value(exposition, name) for name in _DB_COUNTERS]
    if any(value is None for value in values):
        return None
    statements, writes, commits = (int(value or 0) for value in values)
    return DatabaseCounts(statements, writes, commits)


def per_payment(process: str, before: Reading, after: Reading, payments: int) -> ProcessCost:
    """The cost of one payment from two readings around `payments` completed payments."""
    if payments <= 0:
        return ProcessCost(process, None, None, None, None)
    cpu_ms = None
    if before.cpu_s is not None and after.cpu_s is not None:
        cpu_ms = (after.cpu_s - before.cpu_s) * 1000 / payments
    if before.database is None or after.database is None:
        return ProcessCost(process, cpu_ms, None, None, None)
    start, end = before.database, after.database
    return ProcessCost(
        process,
        cpu_ms,
        (end.statements - start.statements) / payments,
        (end.writes - start.writes) / payments,
        (end.commits - start.commits) / payments,
    )


def total(costs: Sequence[ProcessCost]) -> ProcessCost:
    """The sum over processes; a column none of them has stays missing."""

    def added(values: list[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return sum(present) if present else None

    return ProcessCost(
        "total",
        added([cost.cpu_ms for cost in costs]),
        added([cost.statements for cost in costs]),
        added([cost.writes for cost in costs]),
        added([cost.commits for cost in costs]),
    )


def cost_table(costs: Sequence[ProcessCost]) -> list[str]:
    """Aligned lines: a header, one row per process, then the total row (last)."""
    rows = [list(COLUMNS)]
    for cost in [*costs, total(costs)]:
        rows.append(
            [
                cost.process,
                _shown(cost.cpu_ms, 1),
                _shown(cost.statements, 2),
                _shown(cost.writes, 2),
                _shown(cost.commits, 2),
                _shown(cost.fsyncs, 2),
            ]
        )
    widths = [max(len(row[index]) for row in rows) for index in range(len(COLUMNS))]
    return [
        "  ".join(
            [row[0].ljust(widths[0])]
            + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        ).rstrip()
        for row in rows
    ]


def costs_json(costs: Sequence[ProcessCost]) -> dict[str, Any]:
    return {
        "processes": {cost.process: cost.as_json() for cost in costs},
        "total": total(costs).as_json(),
        "fsyncs": FSYNC_LEGEND,
    }


def _shown(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"


def _rounded(value: float | None, decimals: int) -> float | None:
    return None if value is None else round(value, decimals)


# --- the readers ------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds process `pid` has used (None where there is no /proc to ask)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            ticks = cpu_ticks(handle.read())
    except (OSError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process (the bench client), all threads."""
    return time.process_time()


__all__ = [
    "FSYNC_LEGEND",
    "DatabaseCounts",
    "ProcessCost",
    "Reading",
    "cost_table",
    "costs_json",
    "counter_value",
    "cpu_ticks",
    "database_counts",
    "own_cpu_s",
    "per_payment",
    "process_cpu_s",
    "total",
]
