"""Settlement over real processes: a mixed run, a closed window, its signed report, each
processor's reconciliation, the net-debit cap, and the network's audit logs.

The router, bank-a and mno-b run as separate processes on SQLite (tests/e2e covers the
payment flow on PostgreSQL too). One run, made once for the module:

    alice@bank-a pays the café@mno-b 1250 and 300, bob@mno-b pays the book shop@bank-a 700,
    the café refunds 200 of the first payment, carol@bank-a pays the café's already-paid
    request (declined by the payee side, aborted at the router), bank-a gets a cap of 1000
    and a payment of 500 above it is refused while one of 300 within it goes through.

Then the window is closed. bank-a's expected net is -1250 - 300 + 700 + 200 - 300 = -950.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semops.audit.reconcile import Difference
from semops.audit.report import SettlementReport, open_report
from semops.core.clock import Clock
from semops.devnet.actors import (
    Customer,
    Merchant,
    create_customer,
    create_merchant,
    enrol,
    merchant_call,
    request_payment,
)
from semops.devnet.network import Network, new_layout
from semops.processor.reconcile import ProcessorLocation, fetch_headroom, reconcile_window
from semops.protocol import OrderState
from semops.service.clock import SystemClock
from tests.audit.runner import semops

pytestmark = pytest.mark.timeout(300)

PIN = "4821"
SETTLE_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    layout = new_layout(tmp_path_factory.mktemp("settle"), fixed_ports=False, db_urls=None)
    net = Network(layout)
    try:
        net.start()
        yield net
    finally:
        net.stop()


async def _pay(customer: Customer, token: str) -> Any:
    wallet = customer.wallet()
    try:
        return await wallet.pay(await wallet.verify(token), customer.pin)
    finally:
        await wallet.close()
        wallet.store.close()


def _pay_request(network: Network, customer: Customer, shop: Merchant, amount: int) -> Any:
    created = request_payment(network, shop, amount)
    outcome = asyncio.run(_pay(customer, created["token"]))
    return created, outcome


def _account(network: Network, customer: Customer) -> dict[str, Any]:
    result = network.admin(
        customer.processor_id, "GET", f"/v1/admin/accounts/{customer.account_id}"
    )
    assert isinstance(result, dict)
    return result


def _net(network: Network, processor_id: str) -> int:
    position = network.admin(processor_id, "GET", "/v1/admin/position")
    return sum(
        row["net_position_minor"] for row in position["positions"] if row["currency"] == "EUR"
    )


def _wait_for_nets(network: Network, expected: dict[str, int]) -> None:
    """Until each processor's ledger shows the expected position (outbox deliveries)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        seen = {processor: _net(network, processor) for processor in expected}
        if seen == expected or time.monotonic() > deadline:
            assert seen == expected
            return
        time.sleep(0.2)


def _location(network: Network, processor_id: str) -> ProcessorLocation:
    return ProcessorLocation.from_folder(network.data_dir / processor_id)


def _reconcile(network: Network, processor_id: str, window_id: int) -> list[Difference]:
    clock: Clock = SystemClock()
    result = asyncio.run(reconcile_window(_location(network, processor_id), window_id, clock))
    return result.differences


@pytest.fixture(scope="module")
def settled(network: Network) -> dict[str, Any]:
    """The mixed run, then the window closed; what the tests need to know about it."""
    alice, code = create_customer(network, "bank-a", "Alice Example", "+4915112345678", 50_000, PIN)
    asyncio.run(enrol(network, alice, code))
    bob, code = create_customer(network, "mno-b", "Bob Example", "+4917698765432", 50_000, PIN)
    asyncio.run(enrol(network, bob, code))
    cafe = create_merchant(network, "mno-b", "corner-cafe", "Corner Cafe")
    books = create_merchant(network, "bank-a", "book-shop", "Book Shop")

    first, paid = _pay_request(network, alice, cafe, 1250)
    assert paid.state is OrderState.COMPLETED
    _, paid = _pay_request(network, bob, books, 700)
    assert paid.state is OrderState.COMPLETED
    _, paid = _pay_request(network, alice, cafe, 300)
    assert paid.state is OrderState.COMPLETED
    refund = merchant_call(
        network,
        cafe,
        "POST",
        f"/v1/merchant/requests/{first['request_id']}/refunds",
        {"refund_id": "rf-settle-0001", "amount_minor": 200},
    )
    assert refund["state"] == "completed", refund
    carol, code = create_customer(network, "bank-a", "Carol Example", "+4915155555555", 5_000, PIN)
    asyncio.run(enrol(network, carol, code))
    carol_before = _account(network, carol)
    declined = asyncio.run(_pay(carol, first["token"]))  # routed, refused by the payee side
    assert declined.state is OrderState.FAILED
    assert declined.order.error_code in ("request_already_paid", "request_not_payable")
    assert _account(network, carol)["balance_minor"] == carol_before["balance_minor"]
    _wait_for_nets(network, {"bank-a": -650, "mno-b": 650})

    # The cap, per window: bank-a owes 650 here; with a cap of 1000 it may send 350 more.
    network.router_admin("PUT", "/v1/admin/participants/bank-a/cap", {"net_debit_cap_minor": 1000})
    try:
        headroom = asyncio.run(fetch_headroom(_location(network, "bank-a"), SystemClock()))
        alice_before = _account(network, alice)
        _, refused = _pay_request(network, alice, cafe, 500)
        alice_after_refusal = _account(network, alice)
        _, within = _pay_request(network, alice, cafe, 300)
        assert within.state is OrderState.COMPLETED
    finally:
        network.router_admin(
            "PUT", "/v1/admin/participants/bank-a/cap", {"net_debit_cap_minor": None}
        )
    _wait_for_nets(network, {"bank-a": -950, "mno-b": 950})

    closed = network.router_admin("POST", "/v1/admin/windows/close")
    return {
        "alice": alice,
        "carol": carol,
        "headroom": headroom,
        "refused": refused,
        "alice_before": alice_before,
        "alice_after_refusal": alice_after_refusal,
        "closed": closed,
    }


def _report(network: Network, window_id: int) -> SettlementReport:
    document = network.router_admin("GET", f"/v1/admin/windows/{window_id}")
    root = (network.data_dir / "pki" / "root-ca.crt").read_bytes()
    return open_report(document["report"], document["router_certificate"], root, int(time.time()))


def test_a_prepare_above_the_cap_is_refused_and_the_reservation_released(
    settled: dict[str, Any],
) -> None:
    headroom = settled["headroom"]
    assert headroom.participant_id == "bank-a" and headroom.cap_minor == 1000
    (line,) = headroom.lines
    assert (line.currency, line.position_minor, line.headroom_minor) == ("EUR", -650, 350)
    refused = settled["refused"]
    assert refused.state is OrderState.FAILED
    assert refused.order.error_code == "net_debit_cap_exceeded"
    before, after = settled["alice_before"], settled["alice_after_refusal"]
    assert after["balance_minor"] == before["balance_minor"]
    assert after["available_minor"] == before["available_minor"]  # nothing left held


def test_the_closed_window_report_is_signed_balances_and_matches_every_ledger(
    network: Network, settled: dict[str, Any]
) -> None:
    closed = settled["closed"]
    assert (closed["window_id"], closed["next_window_id"]) == (1, 2)
    report = _report(network, 1)
    assert report.window_id == 1 and report.transfers_count == 5  # 4 payments, 1 refund
    assert closed["report_digest"] and report.closed_at >= report.opened_at
    nets = {part.participant_id: part.position("EUR") for part in report.participants}
    assert sum(position.net_minor for position in nets.values() if position) == 0
    bank, mno = nets["bank-a"], nets["mno-b"]
    assert bank is not None and mno is not None
    assert (bank.net_minor, bank.sent_minor, bank.received_minor) == (-950, 1850, 900)
    assert (bank.sent_count, bank.received_count) == (3, 2)
    assert mno.net_minor == 950
    # Each processor's own ledger (its settlement account) says the same.
    assert _net(network, "bank-a") == bank.net_minor
    assert _net(network, "mno-b") == mno.net_minor
    kinds = sorted(line.kind for line in report.participant("bank-a").transfers)
    assert kinds == ["payment"] * 4 + ["refund"]
    # The next window is open and empty; the closed one is listed with its digest.
    windows = network.router_admin("GET", "/v1/admin/windows")["windows"]
    assert [(row["window_id"], row["state"]) for row in windows] == [(2, "open"), (1, "closed")]
    assert windows[1]["report_digest"] == closed["report_digest"]


def test_each_processor_reconciles_the_window_without_differences(
    network: Network, settled: dict[str, Any]
) -> None:
    for processor in ("bank-a", "mno-b"):
        result = semops(
            "settlement",
            "reconcile",
            "--processor-data-dir",
            str(network.data_dir / processor),
            "--window",
            "1",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no differences" in result.stdout


def test_the_report_prints_as_csv_for_people(network: Network, settled: dict[str, Any]) -> None:
    result = semops(
        "settlement", "report", "1", "--data-dir", str(network.data_dir / "router"), "--csv"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("window_id,opened_at,closed_at,participant_id,currency,net_minor")
    rows = {line.split(",")[3]: int(line.split(",")[5]) for line in lines[1:]}
    assert rows == {"bank-a": -950, "mno-b": 950}


def _sql(network: Network, processor: str, statement: str, *args: Any) -> list[Any]:
    with sqlite3.connect(network.data_dir / processor / f"{processor}.db", timeout=10) as db:
        return db.execute(statement, args).fetchall()


def _sent_payment(network: Network) -> tuple[str, int]:
    ((transfer_id, amount),) = _sql(
        network,
        "bank-a",
        "SELECT transfer_id, amount_minor FROM orders WHERE on_us = 0 AND state = 'committed' "
        "AND amount_minor = 1250",
    )
    return transfer_id, amount


def test_a_changed_transfer_record_is_exactly_one_amount_mismatch(
    network: Network, settled: dict[str, Any]
) -> None:
    transfer_id, amount = _sent_payment(network)
    _sql(
        network,
        "bank-a",
        "UPDATE orders SET amount_minor = ? WHERE transfer_id = ?",
        1205,
        transfer_id,
    )
    try:
        differences = _reconcile(network, "bank-a", 1)
    finally:
        _sql(
            network,
            "bank-a",
            "UPDATE orders SET amount_minor = ? WHERE transfer_id = ?",
            amount,
            transfer_id,
        )
    assert [(d.kind, d.transfer_id) for d in differences] == [("amount_mismatch", transfer_id)]
    assert (differences[0].router, differences[0].local) == ("1250 EUR", "1205 EUR")
    assert _reconcile(network, "bank-a", 1) == []


def test_a_lost_inbound_record_is_exactly_one_unknown_transfer(
    network: Network, settled: dict[str, Any]
) -> None:
    with sqlite3.connect(network.data_dir / "mno-b" / "mno-b.db", timeout=10) as db:
        db.row_factory = sqlite3.Row
        row = dict(
            db.execute(
                "SELECT * FROM inbound_transfers WHERE amount_minor = 300 LIMIT 1"
            ).fetchone()
        )
        db.execute("DELETE FROM inbound_transfers WHERE transfer_id = ?", (row["transfer_id"],))
    try:
        differences = _reconcile(network, "mno-b", 1)
    finally:
        with sqlite3.connect(network.data_dir / "mno-b" / "mno-b.db", timeout=10) as db:
            columns = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            db.execute(
                f"INSERT INTO inbound_transfers ({columns}) VALUES ({marks})", tuple(row.values())
            )
    assert [(d.kind, d.transfer_id) for d in differences] == [
        ("unknown_transfer", row["transfer_id"])
    ]


def test_a_changed_settlement_posting_is_exactly_one_net_mismatch(
    network: Network, settled: dict[str, Any]
) -> None:
    transfer_id, _ = _sent_payment(network)
    query = (
        "SELECT p.entry_id, p.amount_minor FROM postings p "
        "JOIN entries e ON p.entry_id = e.entry_id "
        "WHERE e.transfer_ref = ? AND p.account_id = 'settlement:EUR'"
    )
    ((entry_id, posted),) = _sql(network, "bank-a", query, transfer_id)
    update = (
        "UPDATE postings SET amount_minor = ? WHERE entry_id = ? AND account_id = 'settlement:EUR'"
    )
    _sql(network, "bank-a", update, posted + 10, entry_id)
    try:
        differences = _reconcile(network, "bank-a", 1)
    finally:
        _sql(network, "bank-a", update, posted, entry_id)
    assert [(d.kind, d.currency, d.router, d.local) for d in differences] == [
        ("net_mismatch", "EUR", -950, -960)
    ]


def test_a_local_transfer_the_router_never_settled_is_exactly_one_missing_transfer(
    network: Network, settled: dict[str, Any]
) -> None:
    report = _report(network, 1)
    transfer_id, _ = _sent_payment(network)
    ((order_id,),) = _sql(
        network, "bank-a", "SELECT order_id FROM orders WHERE transfer_id = ?", transfer_id
    )
    copy = (
        "INSERT INTO orders SELECT 'or_forged-order-0001', account_id, device_kid, content_digest, "
        "'tr_forged-transfer-0001', on_us, request_id, payee_processor, payee_id, payee_name, "
        "reference, amount_minor, currency, condition, state, expires_at, fulfilment, "
        "reason_code, receipt, created_at, ?, prepare FROM orders WHERE order_id = ?"
    )
    _sql(network, "bank-a", copy, report.opened_at, order_id)
    try:
        differences = _reconcile(network, "bank-a", 1)
    finally:
        _sql(network, "bank-a", "DELETE FROM orders WHERE order_id = 'or_forged-order-0001'")
    assert [(d.kind, d.transfer_id) for d in differences] == [
        ("missing_transfer", "tr_forged-transfer-0001")
    ]


def _audit_kinds(network: Network, service: str) -> list[str]:
    """The kinds of a service's audit entries, once it has chained what it staged."""
    deadline = time.monotonic() + 10
    with sqlite3.connect(network.data_dir / service / f"{service}.db", timeout=10) as db:
        while db.execute("SELECT COUNT(*) FROM audit_pending").fetchone()[0]:
            assert time.monotonic() < deadline, f"{service} does not chain its audit entries"
            time.sleep(0.05)
        return [row[0] for row in db.execute("SELECT kind FROM audit_log ORDER BY seq")]


def test_a_processor_audits_orders_and_its_back_office_without_naming_anyone(
    network: Network, settled: dict[str, Any]
) -> None:
    carol: Customer = settled["carol"]
    network.admin("bank-a", "POST", f"/v1/admin/credentials/{carol.account_id}/unlock")
    devices = network.admin("bank-a", "GET", f"/v1/admin/accounts/{carol.account_id}/devices")
    kid = devices["devices"][0]["kid"]
    network.admin("bank-a", "POST", f"/v1/admin/devices/{kid}/revoke")
    kinds = _audit_kinds(network, "bank-a")
    assert kinds.count("order_committed") == 3  # 1250, 300, 300
    assert kinds.count("order_failed") == 2  # the declined one and the one above the cap
    assert {"merchant_created", "credential_unlocked", "device_revoked"} <= set(kinds)
    assert _audit_kinds(network, "mno-b").count("order_committed") == 1
    with sqlite3.connect(network.data_dir / "bank-a" / "bank-a.db", timeout=10) as db:
        text = " ".join(row[0] for row in db.execute("SELECT data FROM audit_log"))
    for person in (settled["alice"], carol):
        assert person.name not in text and person.phone not in text
    assert f'"kid":"{kid}"' in text and '"reason_code":"net_debit_cap_exceeded"' in text


def test_every_audit_log_of_the_run_verifies_and_an_edit_is_named(
    network: Network, settled: dict[str, Any], tmp_path: Path
) -> None:
    result = semops("audit", "verify", str(network.data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("router", "bank-a", "mno-b"):
        assert f"ok     {service}:" in result.stdout
    # The router's log holds the run's operator actions and transfers.
    kinds = _audit_kinds(network, "router")
    assert kinds.count("transfer_committed") == 5 and kinds.count("transfer_aborted") == 1
    assert kinds.count("cap_changed") == 2 and "window_closed" in kinds
    # A copy of the network's data with one router entry edited is refused, by name.
    copy = tmp_path / "data"
    shutil.copytree(network.data_dir / "pki", copy / "pki")
    shutil.copytree(
        network.data_dir / "router", copy / "router", ignore=shutil.ignore_patterns("*.db*")
    )
    with (
        sqlite3.connect(network.data_dir / "router" / "router.db") as live,
        sqlite3.connect(copy / "router" / "router.db") as target,
    ):
        live.backup(target)
    with sqlite3.connect(copy / "router" / "router.db") as db:
        db.execute("DROP TRIGGER audit_log_no_update")
        seq = db.execute("SELECT seq FROM audit_log WHERE kind = 'cap_changed' LIMIT 1").fetchone()[
            0
        ]
        db.execute(
            "UPDATE audit_log SET data = replace(data, '1000', '9000') WHERE seq = ?", (seq,)
        )
    result = semops("audit", "verify", str(copy))
    assert result.returncode == 1
    assert f"router: entry {seq}: hash does not match the content (altered)" in result.stderr


def test_the_operator_closes_and_lists_windows_from_the_command_line(
    network: Network, settled: dict[str, Any]
) -> None:
    router_dir = str(network.data_dir / "router")
    closed = semops("settlement", "close", "--data-dir", router_dir)
    assert closed.returncode == 0, closed.stderr
    assert "Window 2" in closed.stdout and "(verified)" in closed.stdout
    assert "window 3 is open" in closed.stdout
    listed = semops("settlement", "windows", "--data-dir", router_dir, "--json")
    assert listed.returncode == 0, listed.stderr
    states = [(row["window_id"], row["state"]) for row in json.loads(listed.stdout)["windows"]]
    assert states == [(3, "open"), (2, "closed"), (1, "closed")]
    shown = semops("settlement", "report", "1", "--data-dir", router_dir)
    assert shown.returncode == 0 and "-950" in shown.stdout and "transfers 5" in shown.stdout
    missing = semops("settlement", "report", "3", "--data-dir", router_dir)
    assert missing.returncode == 1 and "no report yet" in missing.stderr
    sealed = semops("router", "checkpoint", "--data-dir", router_dir)
    assert sealed.returncode == 0, sealed.stderr
