"""Concurrency over real processes: money is never overdrawn and nothing happens twice.

The network is the router, bank-a and mno-b as separate OS processes (SQLite, then
PostgreSQL), the wallet is the real wallet code over HTTP, the merchants use their
processor's API. Each test fires its calls at once from one asyncio loop (or threads for
the merchant's blocking calls) and then checks, to the minor unit:

- the answers (exactly K successes, every other one the stable error code);
- the balances through the back-office API, and the positions at the router;
- the books of each processor read back from its database: every entry's and transfer's
  postings sum to zero, balances equal the sum of their postings, no customer or merchant
  below its floor, and -- once everything is decided -- no reservation left open;
- the rows that must exist exactly once (orders, router transfers, notices in the outbox).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.crypto import read_unverified_claims
from semops.devnet.actors import (
    Customer,
    Merchant,
    balance,
    create_customer,
    create_merchant,
    enrol,
    merchant_call,
    request_payment,
)
from semops.devnet.network import ROUTER_ID, Network, ServiceError
from semops.devnet.processes import free_port
from semops.privacy import sqlite_read_url
from semops.protocol import OrderState
from semops.service.clock import SystemClock
from semops.wallet.client import Answer, HttpTransport, Transport
from semops.wallet.service import ORDERS_PATH, PaymentOutcome, Wallet
from semops.wallet.store import WalletStore
from tests.databases import BOOKED_ACCOUNTS_SQL

pytestmark = pytest.mark.timeout(300)

PIN: Final = "4821"
# Generous deadlines for what happens after an answer (outbox deliveries, a pending order
# asked again): the machine is shared, so these bound a wait, they never measure speed.
SETTLE_S: Final = 45.0
POLL_S: Final = 0.1
ORDER_TIMEOUT_S: Final = 40.0
PAID_CODES: Final = frozenset({E.REQUEST_ALREADY_PAID.code, E.REQUEST_NOT_PAYABLE.code})
LIMITED_KINDS: Final = frozenset({"customer", "merchant"})

T = TypeVar("T")


# --- the merchants' webhook endpoint -------------------------------------------------------


class Webhooks:
    """A loopback HTTP server recording every PaymentNotice POSTed to it (answers 204)."""

    def __init__(self) -> None:
        self.notices: list[str] = []
        self._lock = threading.Lock()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                with received._lock:
                    received.notices.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/notices"

    def for_request(self, request_id: str) -> list[str]:
        with self._lock:
            notices = list(self.notices)
        return [n for n in notices if read_unverified_claims(n).get("request_id") == request_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhooks() -> Iterator[Webhooks]:
    server = Webhooks()
    try:
        yield server
    finally:
        server.close()


# --- people, wallets, payments -------------------------------------------------------------


def _customer(network: Network, processor_id: str, deposit_minor: int) -> Customer:
    """A fresh customer with an enrolled wallet (names and folders unique per call)."""
    tag = secrets.token_hex(4)
    phone = "+49151" + "".join(str(secrets.randbelow(10)) for _ in range(8))
    customer, code = create_customer(
        network, processor_id, f"Payer {tag}", phone, deposit_minor, PIN
    )
    asyncio.run(enrol(network, customer, code))
    return customer


def _merchant(network: Network, processor_id: str, webhooks: Webhooks | None = None) -> Merchant:
    merchant_id = f"shop-{secrets.token_hex(4)}"
    return create_merchant(
        network,
        processor_id,
        merchant_id,
        f"Shop {merchant_id[-8:]}",
        webhook_url=webhooks.url if webhooks is not None else None,
    )


def _wallet_folders(customer: Customer, count: int) -> list[Customer]:
    """Copies of the customer's enrolled wallet folder: several wallets of one account.

    The back office issues one activation code per customer, so a second device cannot be
    enrolled for the same account through the API; copies of the folder are the way to
    have several independent wallets (each with its own local order store) on one account.
    """
    folders = []
    for index in range(count):
        target = customer.wallet_dir.with_name(f"{customer.wallet_dir.name}-{index}")
        shutil.copytree(customer.wallet_dir, target)
        folders.append(dataclasses.replace(customer, wallet_dir=target))
    return folders


async def _settled(wallet: Wallet, outcome: PaymentOutcome) -> PaymentOutcome:
    """A pending order asked about again (re-sent while it may be) until it is decided."""
    deadline = time.monotonic() + SETTLE_S
    while outcome.state is OrderState.PENDING and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
        outcome = await wallet.resume(outcome.order)
    return outcome


async def _pay(customer: Customer, token: str) -> PaymentOutcome:
    wallet = customer.wallet()
    try:
        outcome = await wallet.pay(await wallet.verify(token), customer.pin)
        return await _settled(wallet, outcome)
    finally:
        await wallet.close()
        wallet.store.close()


def _wait_for(what: str, probe: Callable[[], T], done: Callable[[T], bool]) -> T:
    """Poll `probe` until `done` holds (asynchronous deliveries), within SETTLE_S."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {value!r} after {SETTLE_S} s")
        time.sleep(POLL_S)


def _balance_is(network: Network, who: Customer | Merchant, expected: int) -> None:
    _wait_for(
        f"balance of {who.account_id}",
        lambda: balance(network, who.processor_id, who.account_id),
        lambda value: value == expected,
    )


def _positions(network: Network) -> dict[str, int]:
    result = network.router_admin("GET", "/v1/admin/positions")
    return {
        row["participant_id"]: row["net_minor"]
        for row in result["positions"]
        if row["currency"] == "EUR"
    }


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    changes = {key: after.get(key, 0) - before.get(key, 0) for key in {*before, *after}}
    return {key: value for key, value in changes.items() if value}


# --- reading a service's database (checks only; nothing is written) ------------------------


def _rows(network: Network, service: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    url = network.layout.db_urls.get(service) or sqlite_read_url(
        network.data_dir / service / f"{service}.db"
    )

    async def read() -> list[dict[str, Any]]:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text(sql), params)
                return [dict(row) for row in result.mappings()]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _check_books(network: Network, processor_id: str) -> None:
    """DESIGN.md §7 on one processor's stored ledger, with nothing left in flight."""
    accounts = _rows(network, processor_id, BOOKED_ACCOUNTS_SQL)
    entries = _rows(network, processor_id, "SELECT entry_id, kind, transfer_ref FROM entries")
    postings = _rows(network, processor_id, "SELECT * FROM postings")
    ref_of = {entry["entry_id"]: entry["transfer_ref"] for entry in entries}
    by_entry: dict[str, int] = {}
    by_transfer: dict[str, int] = {}
    by_account: dict[str, int] = {}
    for posting in postings:
        amount_minor = int(posting["amount_minor"])
        entry_id = posting["entry_id"]
        by_entry[entry_id] = by_entry.get(entry_id, 0) + amount_minor
        by_transfer[ref_of[entry_id]] = by_transfer.get(ref_of[entry_id], 0) + amount_minor
        account_id = posting["account_id"]
        by_account[account_id] = by_account.get(account_id, 0) + amount_minor
    assert {k: v for k, v in by_entry.items() if v} == {}, "an entry does not sum to zero"
    assert {k: v for k, v in by_transfer.items() if v} == {}, "a transfer does not sum to zero"
    for account in accounts:
        assert int(account["balance_minor"]) == by_account.get(account["account_id"], 0), account
        if account["kind"] in LIMITED_KINDS:
            assert account["balance_minor"] >= -account["overdraft_minor"], account
    assert sum(int(account["balance_minor"]) for account in accounts) == 0
    kinds: dict[str, set[str]] = {}
    for entry in entries:
        kinds.setdefault(entry["transfer_ref"], set()).add(entry["kind"])
    still_open = [
        ref for ref, found in kinds.items() if "reserve" in found and not found & {"post", "void"}
    ]
    assert still_open == [], "a reservation is still open after everything was decided"
    suspense = [a for a in accounts if a["kind"] == "suspense"]
    assert all(int(account["balance_minor"]) == 0 for account in suspense), suspense


def _router_transfers(network: Network) -> int:
    return int(_rows(network, ROUTER_ID, "SELECT count(*) AS n FROM transfers")[0]["n"])


# --- 1. one account, many concurrent payments ----------------------------------------------


async def _watch_available(customer: Customer, stop: asyncio.Event) -> list[int]:
    """The payer's own view of its money, read again and again while the payments run."""
    wallet = customer.wallet()
    seen: list[int] = []
    try:
        while not stop.is_set():
            view = await wallet.balance()
            seen.extend((int(view["available_minor"]), int(view["balance_minor"])))
            await asyncio.sleep(0.02)
    finally:
        await wallet.close()
        wallet.store.close()
    return seen


async def _storm(wallets: list[Customer], tokens: list[str]) -> tuple[list[Any], list[int]]:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_available(wallets[0], stop))
    try:
        outcomes = await asyncio.gather(
            *(_pay(wallets[i % len(wallets)], token) for i, token in enumerate(tokens)),
            return_exceptions=True,
        )
    finally:
        stop.set()
    return list(outcomes), await watcher


def test_concurrent_payments_from_one_account_never_overdraw_it(network: Network) -> None:
    funded_for, fired, amount = 4, 10, 700
    payer = _customer(network, "bank-a", funded_for * amount)
    routed_shop, on_us_shop = _merchant(network, "mno-b"), _merchant(network, "bank-a")
    shops = [routed_shop if i % 2 == 0 else on_us_shop for i in range(fired)]
    tokens = [request_payment(network, shop, amount)["token"] for shop in shops]
    positions_before = _positions(network)

    outcomes, seen = asyncio.run(_storm(_wallet_folders(payer, 3), tokens))

    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    states = [o.state for o in outcomes]
    assert states.count(OrderState.COMPLETED) == funded_for, states
    refused = [o.order.error_code for o in outcomes if o.state is not OrderState.COMPLETED]
    assert refused == [E.INSUFFICIENT_FUNDS.code] * (fired - funded_for), refused
    assert seen and min(seen) >= 0, "the payer's money went below zero while paying"
    won = [shop for shop, o in zip(shops, outcomes, strict=True) if o.state is OrderState.COMPLETED]
    routed_minor = won.count(routed_shop) * amount

    view = network.admin("bank-a", "GET", f"/v1/admin/accounts/{payer.account_id}")
    assert (view["balance_minor"], view["available_minor"]) == (0, 0)
    _balance_is(network, routed_shop, routed_minor)
    _balance_is(network, on_us_shop, won.count(on_us_shop) * amount)
    assert _moved(positions_before, _positions(network)) == (
        {"bank-a": -routed_minor, "mno-b": routed_minor} if routed_minor else {}
    )
    # The payer's account saw exactly K reservations, each posted, none voided.
    payer_entries = _rows(
        network,
        "bank-a",
        "SELECT e.kind AS kind FROM entries e JOIN postings p ON p.entry_id = e.entry_id "
        "WHERE p.account_id = :account",
        account=payer.account_id,
    )
    assert sorted(row["kind"] for row in payer_entries) == ["deposit"] + ["reserve"] * funded_for
    for processor_id in ("bank-a", "mno-b"):
        _check_books(network, processor_id)


# --- 2. one order, many concurrent copies --------------------------------------------------


class _Unsent:
    """The wallet's own transport, except that the order itself never leaves: the wallet
    stores and signs it, then gets no answer (so it stays PENDING with its stored token)."""

    def __init__(self, base_url: str) -> None:
        self.http = HttpTransport(base_url)

    async def request(self, method: str, path: str, **options: Any) -> Answer:
        if method == "POST" and path == ORDERS_PATH:
            raise SemopsError(E.UNAVAILABLE, "the order is held back by the test")
        return await self.http.request(method, path, **options)

    async def close(self) -> None:
        await self.http.close()


async def _copies(url: str, token: str, count: int) -> list[Answer]:
    transports = [HttpTransport(url) for _ in range(count)]
    try:
        return list(
            await asyncio.gather(
                *(
                    t.request("POST", ORDERS_PATH, jose=token, timeout_s=ORDER_TIMEOUT_S)
                    for t in transports
                )
            )
        )
    finally:
        for transport in transports:
            await transport.close()


async def _one_order_many_times(
    customer: Customer, request_token: str, copies: int
) -> tuple[str, list[Answer], PaymentOutcome, list[Answer]]:
    def unsent(url: str) -> Transport:
        return _Unsent(url)

    wallet = Wallet(WalletStore.open(customer.wallet_dir), unsent, SystemClock())
    try:
        held = await wallet.pay(await wallet.verify(request_token), customer.pin)
        assert held.state is OrderState.PENDING, held.order
        token = held.order.token
        url = wallet.store.require_enrolment().processor_url
        answers = await _copies(url, token, copies)
        # Pending answers: the very same order asked again, until it is decided.
        again: list[Answer] = []
        deadline = time.monotonic() + SETTLE_S
        while not any(a.status == 200 for a in again) and time.monotonic() < deadline:
            if again:
                await asyncio.sleep(POLL_S)
            again.extend(await _copies(url, token, 1))
    finally:
        await wallet.close()
        wallet.store.close()
    # Afterwards the real wallet, now online, carries its stored order forward.
    online = customer.wallet()
    try:
        outcome = await online.resume(online.store.require_order(held.order.order_id))
    finally:
        await online.close()
        online.store.close()
    return token, answers, outcome, again


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "on-us"])
def test_copies_of_one_order_sent_at_once_pay_exactly_once(
    network: Network, webhooks: Webhooks, routed: bool
) -> None:
    copies, amount = 16, 1_234
    payer = _customer(network, "bank-a", 10_000)
    shop = _merchant(network, "mno-b" if routed else "bank-a", webhooks)
    created = request_payment(network, shop, amount)
    transfers_before = _router_transfers(network)
    positions_before = _positions(network)

    token, answers, outcome, again = asyncio.run(
        _one_order_many_times(payer, created["token"], copies)
    )

    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) <= {200, 202}, [(a.status, a.body[:200]) for a in answers]
    receipts = {answer.body.decode() for answer in [*answers, *again] if answer.status == 200}
    assert len(receipts) == 1, "copies of one order got different receipts"
    (receipt,) = receipts
    for answer in answers:
        if answer.status == 202:
            assert answer.json()["state"] == "pending"
    # A copy after completion (the wallet re-sending its stored token) gets the same.
    assert outcome.state is OrderState.COMPLETED, outcome.order
    assert outcome.order.receipt == receipt
    late = asyncio.run(_copies(network.layout.processor_url("bank-a"), token, 1))
    assert [(a.status, a.body.decode()) for a in late] == [(200, receipt)]

    claims = read_unverified_claims(receipt)
    assert claims["amount_minor"] == amount and claims["request_id"] == created["request_id"]
    assert balance(network, "bank-a", payer.account_id) == 10_000 - amount  # one debit
    _balance_is(network, shop, amount)  # one credit
    orders = _rows(
        network,
        "bank-a",
        "SELECT transfer_id, state FROM orders WHERE request_id = :request",
        request=created["request_id"],
    )
    assert orders == [{"transfer_id": claims["transfer_id"], "state": "committed"}]
    reserves = _rows(
        network,
        "bank-a",
        "SELECT entry_id FROM entries WHERE transfer_ref = :ref AND kind = 'reserve'",
        ref=claims["transfer_id"],
    )
    assert len(reserves) == 1
    assert _router_transfers(network) - transfers_before == (1 if routed else 0)
    assert _moved(positions_before, _positions(network)) == (
        {"bank-a": -amount, "mno-b": amount} if routed else {}
    )
    # One notice: queued once, delivered (the same signed notice every time it arrives).
    notices = _wait_for(
        "the merchant's notice",
        lambda: webhooks.for_request(created["request_id"]),
        lambda found: len(found) >= 1,
    )
    assert len(set(notices)) == 1
    queued = _rows(
        network,
        shop.processor_id,
        "SELECT body FROM outbox WHERE request_id = :request",
        request=created["request_id"],
    )
    assert [row["body"] for row in queued] == notices[:1]
    for processor_id in ("bank-a", "mno-b"):
        _check_books(network, processor_id)


# --- 3. one request, two payers at two processors ------------------------------------------


# The on-us payment is decided in one local transaction, the routed one crosses three
# processes, so started together the on-us one nearly always wins. Starting the on-us payer
# a little later for some requests lets the routed one win too (or meet it half-way).
ON_US_DELAYS_S: Final = (0.0, 0.05, 0.15)


async def _later(delay_s: float, payment: Awaitable[T]) -> T:
    await asyncio.sleep(delay_s)
    return await payment


def test_one_request_paid_at_once_by_two_customers_is_paid_once(network: Network) -> None:
    amount, start = 900, 10_000
    alice = _customer(network, "bank-a", start)
    bob = _customer(network, "mno-b", start)
    shops = [
        _merchant(network, processor_id)
        for processor_id in ("mno-b", "bank-a")
        for _ in ON_US_DELAYS_S
    ]
    requests = [request_payment(network, shop, amount) for shop in shops]
    positions_before = _positions(network)

    async def race() -> list[Any]:
        payments = []
        for index, (shop, request) in enumerate(zip(shops, requests, strict=True)):
            delay_s = ON_US_DELAYS_S[index % len(ON_US_DELAYS_S)]
            for payer in (alice, bob):
                on_us = payer.processor_id == shop.processor_id
                payments.append(_later(delay_s if on_us else 0.0, _pay(payer, request["token"])))
        return list(await asyncio.gather(*payments, return_exceptions=True))

    outcomes = asyncio.run(race())
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes

    paid_by = {"bank-a": 0, "mno-b": 0}
    expected_moves = {"bank-a": 0, "mno-b": 0}
    for index, shop in enumerate(shops):
        pair = outcomes[2 * index : 2 * index + 2]
        states = sorted(o.state for o in pair)
        assert states == sorted([OrderState.COMPLETED, OrderState.FAILED]), pair
        (winner,) = [
            p for p, o in zip((alice, bob), pair, strict=True) if o.state is OrderState.COMPLETED
        ]
        (loser,) = [o for o in pair if o.state is OrderState.FAILED]
        assert loser.order.error_code in PAID_CODES, loser.order
        paid_by[winner.processor_id] += amount
        if winner.processor_id != shop.processor_id:
            expected_moves[winner.processor_id] -= amount
            expected_moves[shop.processor_id] += amount
        _balance_is(network, shop, amount)  # money moved once, into the shop
        status = merchant_call(
            network, shop, "GET", f"/v1/merchant/requests/{requests[index]['request_id']}"
        )
        assert status["state"] == "paid"

    assert balance(network, "bank-a", alice.account_id) == start - paid_by["bank-a"]
    assert balance(network, "mno-b", bob.account_id) == start - paid_by["mno-b"]
    assert _moved(positions_before, _positions(network)) == {
        k: v for k, v in expected_moves.items() if v
    }
    for processor_id in ("bank-a", "mno-b"):
        _check_books(network, processor_id)


# --- 4. concurrent partial refunds ----------------------------------------------------------


def _refund(network: Network, shop: Merchant, request_id: str, amount_minor: int) -> Any:
    body = {
        "refund_id": make_id(IdKind.REFUND, secrets.token_bytes(16)),
        "amount_minor": amount_minor,
    }
    try:
        answer = merchant_call(
            network, shop, "POST", f"/v1/merchant/requests/{request_id}/refunds", body
        )
    except ServiceError as error:
        return error
    return answer


async def _in_threads(calls: list[Callable[[], T]]) -> list[T]:
    return list(await asyncio.gather(*(asyncio.to_thread(call) for call in calls)))


@pytest.mark.parametrize("routed", [True, False], ids=["routed", "on-us"])
def test_concurrent_partial_refunds_never_exceed_the_paid_amount(
    network: Network, routed: bool
) -> None:
    paid, part, attempts, start = 1_000, 300, 6, 5_000
    payer = _customer(network, "bank-a", start)
    shop = _merchant(network, "mno-b" if routed else "bank-a")
    # Two payments: the shop holds enough to cover every attempted refund, so only the
    # bound on the refunded request (not the shop's balance) can stop the excess.
    other = request_payment(network, shop, paid)
    created = request_payment(network, shop, paid)
    for request in (other, created):
        outcome = asyncio.run(_pay(payer, request["token"]))
        assert outcome.state is OrderState.COMPLETED, outcome.order
    _balance_is(network, shop, 2 * paid)
    assert attempts * part <= 2 * paid
    positions_before = _positions(network)

    answers = asyncio.run(
        _in_threads(
            [lambda: _refund(network, shop, created["request_id"], part) for _ in range(attempts)]
        )
    )

    refused = [a for a in answers if isinstance(a, ServiceError)]
    accepted = [a for a in answers if not isinstance(a, ServiceError)]
    assert [error.code for error in refused] == [E.REFUND_EXCEEDS_PAID.code] * len(refused), refused
    assert len(accepted) == paid // part, answers  # as many as fit, and no more
    for answer in accepted:
        _wait_for(
            "the refund's outcome",
            lambda answer=answer: merchant_call(
                network, shop, "GET", f"/v1/merchant/refunds/{answer['refund_id']}"
            )["state"],
            lambda state: state in ("completed", "failed"),
        )
        final = merchant_call(network, shop, "GET", f"/v1/merchant/refunds/{answer['refund_id']}")
        assert final["state"] == "completed", final
    refunded = len(accepted) * part
    assert refunded <= paid
    status = merchant_call(network, shop, "GET", f"/v1/merchant/requests/{created['request_id']}")
    assert (status["state"], status["refunded_minor"]) == ("partially_refunded", refunded)
    assert balance(network, shop.processor_id, shop.account_id) == 2 * paid - refunded
    _balance_is(network, payer, start - 2 * paid + refunded)
    assert _moved(positions_before, _positions(network)) == (
        {"bank-a": refunded, "mno-b": -refunded} if routed else {}
    )
    if routed:  # the payer's processor accepted no more than was paid either
        received = _rows(
            network,
            "bank-a",
            "SELECT amount_minor, state FROM refunds_in WHERE transfer_id = :transfer",
            transfer=status["transfer_id"],
        )
        assert sorted(row["state"] for row in received) == ["credited"] * len(accepted)
        assert sum(row["amount_minor"] for row in received) == refunded
    for processor_id in ("bank-a", "mno-b"):
        _check_books(network, processor_id)


def test_payments_crossing_in_both_directions_at_once_all_commit(network: Network) -> None:
    """bank-a pays mno-b while mno-b pays bank-a, many at once: each commit moves both
    processors' positions, and commits in opposite directions must not lock those rows in
    opposite orders (on PostgreSQL that was a deadlock, answered 500, and the payments then
    expired)."""
    pairs = 8
    amount = 100
    east = [_customer(network, "bank-a", 10_000) for _ in range(pairs)]
    west = [_customer(network, "mno-b", 10_000) for _ in range(pairs)]
    shop_at_mno, shop_at_bank = _merchant(network, "mno-b"), _merchant(network, "bank-a")
    before = _positions(network)
    tokens = [
        (payer, request_payment(network, shop, amount)["token"])
        for payers, shop in ((east, shop_at_mno), (west, shop_at_bank))
        for payer in payers
    ]

    async def everyone() -> list[PaymentOutcome]:
        return list(await asyncio.gather(*(_pay(payer, token) for payer, token in tokens)))

    outcomes = asyncio.run(everyone())
    assert [o.state for o in outcomes] == [OrderState.COMPLETED] * (2 * pairs), [
        (o.state, o.order.error_code) for o in outcomes
    ]
    _balance_is(network, shop_at_mno, pairs * amount)
    _balance_is(network, shop_at_bank, pairs * amount)
    after = _positions(network)
    # As much went each way: the net positions are where they were.
    assert {pid: after.get(pid, 0) for pid in ("bank-a", "mno-b")} == {
        pid: before.get(pid, 0) for pid in ("bank-a", "mno-b")
    }
