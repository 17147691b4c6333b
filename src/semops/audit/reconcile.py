"""Reconciliation: a processor's own records against the router's signed statement (pure).

Theory of operation (DESIGN.md §8). After a window closes, each processor compares its
statement with what it recorded itself, and every disagreement becomes one `Difference`:

    unknown_transfer     the statement lists a transfer this processor has no record of
    not_committed        it has a record, but not a committed one (aborted, in doubt)
    direction_mismatch   the statement says sent where the processor received, or back
    amount_mismatch      another amount or currency
    missing_transfer     the processor committed a routed transfer in the window's time
                         range that the statement does not list
    net_mismatch         the statement's net position in a currency is not what the
                         processor's settlement account moved for the window's transfers

Amounts of single transfers come from the processor's transfer records (orders, inbound
transfers, refunds); the net comes from its ledger (postings to the settlement account,
in the router's sign: + owed to the processor). So a changed transfer record shows as an
amount difference, a changed posting as a net difference, and each appears once.

A processor learns of a commit a little after the router decided it, so a transfer the
router put in the previous window can carry a local time inside this one. The caller
passes the ids of the neighbouring windows' statements (`elsewhere`); a transfer decided
exactly at the closing second while the next window is still open is left for that
window's reconciliation (`boundary_open`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from semops.audit.report import SettlementStatement

DIFFERENCE_KINDS: Final = (
    "unknown_transfer",
    "not_committed",
    "direction_mismatch",
    "amount_mismatch",
    "missing_transfer",
    "net_mismatch",
)


@dataclass(frozen=True, slots=True)
class LocalTransfer:
    """A routed transfer as the processor recorded it (sent: orders, refunds out;
    received: inbound transfers, refunds in)."""

    transfer_id: str
    kind: str  # payment | refund
    direction: str  # sent | received
    amount_minor: int
    currency: str
    committed: bool
    decided_at: int | None


@dataclass(frozen=True, slots=True)
class Difference:
    kind: str
    transfer_id: str | None = None
    currency: str | None = None
    router: Any = None  # what the statement says
    local: Any = None  # what the processor recorded

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "transfer_id": self.transfer_id,
            "currency": self.currency,
            "router": self.router,
            "local": self.local,
        }

    def __str__(self) -> str:
        subject = self.transfer_id or self.currency or ""
        return f"{self.kind} {subject}: router {self.router!r}, local {self.local!r}"


def _line_differences(
    statement: SettlementStatement, local: Mapping[str, LocalTransfer]
) -> list[Difference]:
    differences = []
    for line in statement.settlement.transfers:
        mine = local.get(line.transfer_id)
        if mine is None:
            differences.append(Difference("unknown_transfer", line.transfer_id, line.currency))
        elif not mine.committed:
            differences.append(
                Difference("not_committed", line.transfer_id, line.currency, "committed", "not")
            )
        elif mine.direction != line.direction:
            differences.append(
                Difference(
                    "direction_mismatch",
                    line.transfer_id,
                    line.currency,
                    line.direction,
                    mine.direction,
                )
            )
        elif (mine.amount_minor, mine.currency) != (line.amount_minor, line.currency):
            differences.append(
                Difference(
                    "amount_mismatch",
                    line.transfer_id,
                    line.currency,
                    f"{line.amount_minor} {line.currency}",
                    f"{mine.amount_minor} {mine.currency}",
                )
            )
    return differences


def _missing(
    statement: SettlementStatement,
    local: Iterable[LocalTransfer],
    elsewhere: frozenset[str],
    boundary_open: bool,
) -> list[LocalTransfer]:
    listed = {line.transfer_id for line in statement.settlement.transfers}
    missing = []
    for mine in local:
        if not mine.committed or mine.decided_at is None or mine.transfer_id in listed:
            continue
        if mine.transfer_id in elsewhere:
            continue
        if not statement.opened_at <= mine.decided_at <= statement.closed_at:
            continue
        if boundary_open and mine.decided_at == statement.closed_at:
            continue  # may be the open window's: its reconciliation will tell
        missing.append(mine)
    return sorted(missing, key=lambda item: item.transfer_id)


def reconcile(
    statement: SettlementStatement,
    local: Iterable[LocalTransfer],
    movements: Mapping[str, tuple[str, int]],
    *,
    elsewhere: frozenset[str] = frozenset(),
    boundary_open: bool = False,
) -> list[Difference]:
    """Every difference between the statement and the processor's own records.

    `local`: the processor's routed transfers that the statement lists or that were
    decided in the window's time range. `movements`: per transfer id, the currency and the
    settlement account's movement in the router's sign (+ received, - sent)."""
    records = list(local)
    by_id = {record.transfer_id: record for record in records}
    differences = _line_differences(statement, by_id)
    missing = _missing(statement, records, elsewhere, boundary_open)
    differences += [
        Difference(
            "missing_transfer",
            mine.transfer_id,
            mine.currency,
            None,
            f"{mine.direction} {mine.amount_minor} {mine.currency}",
        )
        for mine in missing
    ]
    refs = {line.transfer_id for line in statement.settlement.transfers}
    refs |= {mine.transfer_id for mine in missing}
    local_net: dict[str, int] = defaultdict(int)
    for ref in refs:
        if ref in movements:
            currency, amount = movements[ref]
            local_net[currency] += amount
    router_net = {p.currency: p.net_minor for p in statement.settlement.positions}
    for currency in sorted(set(router_net) | set(local_net)):
        ours, theirs = local_net.get(currency, 0), router_net.get(currency, 0)
        if ours != theirs:
            differences.append(Difference("net_mismatch", None, currency, theirs, ours))
    return differences
