"""Reconciliation (pure): each kind of difference, exactly once, and none for a clean match;
the window's edges (a transfer the router put in a neighbouring window) are not flagged."""

from __future__ import annotations

from dataclasses import replace

from semops.audit.reconcile import LocalTransfer, reconcile
from semops.audit.report import CommittedTransfer, build_report, statement_for

START = 1_900_000_000
OPENED, CLOSED = START, START + 100


def _committed(
    number: int, sender: str, receiver: str, amount: int, kind: str = "payment"
) -> CommittedTransfer:
    return CommittedTransfer(
        f"tr_{number:012d}", kind, sender, receiver, amount, "EUR", START + number
    )


RUN = [
    _committed(1, "bank-a", "mno-b", 1250),
    _committed(2, "mno-b", "bank-a", 700),
    _committed(3, "mno-b", "bank-a", 200, "refund"),
]
STATEMENT = statement_for(build_report("router", 4, OPENED, CLOSED, RUN), "bank-a")


def _local() -> dict[str, LocalTransfer]:
    """bank-a's own records of RUN, decided a second after the router."""
    return {
        transfer.transfer_id: LocalTransfer(
            transfer_id=transfer.transfer_id,
            kind=transfer.kind,
            direction="sent" if transfer.sender == "bank-a" else "received",
            amount_minor=transfer.amount_minor,
            currency="EUR",
            committed=True,
            decided_at=transfer.committed_at + 1,
        )
        for transfer in RUN
    }


MOVEMENTS = {
    "tr_000000000001": ("EUR", -1250),
    "tr_000000000002": ("EUR", 700),
    "tr_000000000003": ("EUR", 200),
}


def _differences(
    local: dict[str, LocalTransfer],
    movements: dict[str, tuple[str, int]] = MOVEMENTS,
    **options: object,
) -> list[tuple[str, str | None]]:
    found = reconcile(STATEMENT, local.values(), movements, **options)  # type: ignore[arg-type]
    return [
        (difference.kind, difference.transfer_id or difference.currency) for difference in found
    ]


def test_matching_records_reconcile_without_differences() -> None:
    assert _differences(_local()) == []


def test_each_kind_of_difference_is_reported_once() -> None:
    local = _local()
    local["tr_000000000001"] = replace(local["tr_000000000001"], amount_minor=1205)
    assert _differences(local) == [("amount_mismatch", "tr_000000000001")]
    local = _local()
    local["tr_000000000002"] = replace(local["tr_000000000002"], direction="sent")
    assert _differences(local) == [("direction_mismatch", "tr_000000000002")]
    local = _local()
    local["tr_000000000003"] = replace(local["tr_000000000003"], committed=False)
    assert _differences(local) == [("not_committed", "tr_000000000003")]
    local = _local()
    del local["tr_000000000002"]
    assert _differences(local) == [("unknown_transfer", "tr_000000000002")]


def test_a_local_commit_the_router_did_not_settle_is_missing_and_moves_the_net() -> None:
    local = _local()
    local["tr_000000000099"] = LocalTransfer(
        "tr_000000000099", "payment", "sent", 50, "EUR", True, START + 50
    )
    movements = {**MOVEMENTS, "tr_000000000099": ("EUR", -50)}
    assert _differences(local, movements) == [
        ("missing_transfer", "tr_000000000099"),
        ("net_mismatch", "EUR"),
    ]


def test_a_changed_settlement_movement_is_a_net_mismatch_with_both_values() -> None:
    movements = {**MOVEMENTS, "tr_000000000002": ("EUR", 710)}
    (difference,) = reconcile(STATEMENT, _local().values(), movements)
    assert (difference.kind, difference.currency, difference.router, difference.local) == (
        "net_mismatch",
        "EUR",
        -350,
        -340,
    )


def test_transfers_of_neighbouring_windows_and_the_open_edge_are_not_missing() -> None:
    local = _local()
    # Committed at the router in the previous window, learned here after this one opened.
    local["tr_000000000070"] = LocalTransfer(
        "tr_000000000070", "payment", "received", 5, "EUR", True, OPENED + 2
    )
    # Committed at the closing second: it may be the next (still open) window's.
    local["tr_000000000071"] = LocalTransfer(
        "tr_000000000071", "payment", "sent", 5, "EUR", True, CLOSED
    )
    # Decided before the window opened or after it closed: another window's business.
    local["tr_000000000072"] = LocalTransfer(
        "tr_000000000072", "payment", "sent", 5, "EUR", True, OPENED - 1
    )
    elsewhere = frozenset({"tr_000000000070"})
    assert _differences(local, elsewhere=elsewhere, boundary_open=True) == []
    assert _differences(local, elsewhere=elsewhere, boundary_open=False) == [
        ("missing_transfer", "tr_000000000071")
    ]
    assert _differences(local, boundary_open=True) == [("missing_transfer", "tr_000000000070")]


def test_uncommitted_local_records_in_the_range_are_not_missing() -> None:
    local = _local()
    local["tr_000000000080"] = LocalTransfer(
        "tr_000000000080", "payment", "sent", 9, "EUR", False, START + 5
    )
    assert _differences(local) == []
