"""The recovery harness: a real network, the means to hurt it, and the three sides' views.

`Scene` holds a running network (router, bank-a, mno-b as OS processes) whose mno-b sits
behind a `Line` relay and whose processors use the shortest transfer validity the CLI
allows (`--transfer-ttl-s`), so a transfer reaches its expiry in seconds, not half a
minute. It can freeze a process (SIGSTOP: alive, listening, answering nothing -- a "slow"
peer), kill one (-9) and start it again, and read where one payment stands at the payer
processor, the router and the payee processor. Payments in these tests go from bank-a
customers to mno-b merchants, so mno-b is always the payee side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, TypeVar

from semops.core.limits import CLOCK_SKEW_MAX_S, IN_DOUBT_POLL_INTERVAL_S, TRANSFER_TTL_MIN_S
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
from semops.devnet.network import Network
from semops.devnet.processes import ServiceProcess, free_port
from semops.wallet.core import TrustedConfig, verify_config
from semops.wallet.service import PaymentOutcome
from tests.recovery.line import Line
from tests.recovery.peek import Peek

T = TypeVar("T")

PAYER: Final = "bank-a"
PAYEE: Final = "mno-b"
ROUTER: Final = "router"
PIN: Final = "4821"
TRANSFER_TTL_S: Final = TRANSFER_TTL_MIN_S
# Generous deadlines: the machine is shared, and each wait ends as soon as its condition
# holds. A transfer the router recorded is decided by TRANSFER_TTL_S at the latest; one
# whose prepare never reached it (the payer died between its reservation and the send, and
# came back too late to send it again) is released by the payer only once no router clock
# within CLOCK_SKEW_MAX_S could still record it, at the next in-doubt pass after that. The
# router's outbox backs off up to a few seconds between attempts.
DECIDED_WITHIN_S: Final = TRANSFER_TTL_S + CLOCK_SKEW_MAX_S + IN_DOUBT_POLL_INTERVAL_S + 25.0
SOON_S: Final = 20.0
_POLL_S: Final = 0.05


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = SOON_S) -> T:
    """Poll `probe` until it returns something other than None/False; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(_POLL_S)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


class RecoveryNetwork(Network):
    """The devnet network, with mno-b's scheme port behind a relay and short transfers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = Line(self.layout.ports[f"{PAYEE}-scheme"])

    def processor_process(self, processor_id: str, kind: str, name: str) -> ServiceProcess:
        process = super().processor_process(processor_id, kind, name)
        process.args += ["--transfer-ttl-s", str(TRANSFER_TTL_S)]
        if processor_id == PAYEE:
            process.args += ["--scheme-url", f"https://127.0.0.1:{self.line.port}"]
        return process


class Webhook:
    """A merchant's webhook receiver that can be taken down and brought back on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/notices"
        self.received: list[str] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        received, lock = self.received, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("ascii")
                with lock:
                    received.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def notices_for(self, request_id: str) -> list[dict[str, Any]]:
        with self._lock:
            bodies = list(self.received)
        claims = [read_unverified_claims(body) for body in bodies]
        return [claim for claim in claims if claim.get("request_id") == request_id]


@dataclass
class People:
    alice: Customer
    carol: Customer
    dave: Customer
    cafe: Merchant
    kiosk: Merchant
    webhook: Webhook


@dataclass(frozen=True)
class Books:
    """Every balance a routed payment from bank-a to mno-b may move, in minor units."""

    customers: dict[str, int]
    merchants: dict[str, int]
    positions: dict[str, int]
    suspense: dict[str, int]


class Scene:
    def __init__(self, network: RecoveryNetwork, peek: Peek, people: People) -> None:
        self.network = network
        self.peek = peek
        self.people = people
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="wallet")

    @property
    def line(self) -> Line:
        return self.network.line

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # --- hurting processes ------------------------------------------------------------

    def process(self, name: str) -> ServiceProcess:
        return self.network.processes[name]

    def _pid(self, name: str) -> int:
        popen = self.process(name).process
        assert popen is not None and popen.poll() is None, f"{name} is not running"
        return popen.pid

    def freeze(self, name: str) -> None:
        os.kill(self._pid(name), signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        popen = self.process(name).process
        if popen is not None and popen.poll() is None:
            os.kill(popen.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def frozen(self, name: str) -> Iterator[None]:
        self.freeze(name)
        try:
            yield
        finally:
            self.thaw(name)

    def kill(self, name: str) -> None:
        self.process(name).stop(hard=True)  # SIGKILL: a frozen process dies as it stands

    def start(self, name: str) -> None:
        process = self.process(name)
        process.start()
        process.wait_ready()

    def heal(self) -> None:
        """After a test, whatever happened: nothing frozen, nothing held, everyone up."""
        self.line.open()
        for name, process in self.network.processes.items():
            if process.alive():
                self.thaw(name)
            else:
                self.start(name)

    # --- paying -----------------------------------------------------------------------

    def request(self, merchant: Merchant, amount_minor: int) -> dict[str, Any]:
        return request_payment(self.network, merchant, amount_minor)

    def pay_in_background(self, customer: Customer, token: str) -> Future[PaymentOutcome]:
        return self._pool.submit(asyncio.run, pay(customer, token))

    def trusted(self, processor_id: str) -> TrustedConfig:
        url = self.network.layout.processor_url(processor_id) + "/v1/wallet/config"
        with urllib.request.urlopen(url, timeout=10) as response:
            return verify_config(json.loads(response.read()), int(time.time()))

    # --- the three sides --------------------------------------------------------------

    def order(self, request_id: str) -> dict[str, Any] | None:
        """The payer processor's order paying `request_id` (at most one per test)."""
        return self.peek.row(PAYER, "SELECT * FROM orders WHERE request_id = :r", r=request_id)

    def wait_order(self, request_id: str) -> dict[str, Any]:
        return wait_for("the payer's order", lambda: self.order(request_id))

    def payer_state(self, transfer_id: str) -> str:
        return str(
            self.peek.scalar(
                PAYER, "SELECT state FROM orders WHERE transfer_id = :t", t=transfer_id
            )
        )

    def router_transfer(self, transfer_id: str) -> dict[str, Any] | None:
        return self.peek.row(
            ROUTER, "SELECT * FROM transfers WHERE transfer_id = :t", t=transfer_id
        )

    def router_state(self, transfer_id: str) -> str | None:
        row = self.router_transfer(transfer_id)
        return None if row is None else str(row["state"])

    def inbound(self, transfer_id: str) -> dict[str, Any] | None:
        return self.peek.row(
            PAYEE, "SELECT * FROM inbound_transfers WHERE transfer_id = :t", t=transfer_id
        )

    def inbound_state(self, transfer_id: str) -> str | None:
        row = self.inbound(transfer_id)
        return None if row is None else str(row["state"])

    def inbound_count(self) -> int:
        return int(self.peek.scalar(PAYEE, "SELECT COUNT(*) AS n FROM inbound_transfers"))

    def request_view(self, merchant: Merchant, request_id: str) -> dict[str, Any]:
        view = merchant_call(self.network, merchant, "GET", f"/v1/merchant/requests/{request_id}")
        assert isinstance(view, dict)
        return view

    def router_status_pushes(self, destination: str, transfer_id: str) -> list[dict[str, Any]]:
        """The router's outbox rows carrying `transfer_id`'s status to `destination`."""
        rows = self.peek.rows(
            ROUTER,
            "SELECT message_id, body, attempts, delivered_at FROM outbox "
            "WHERE destination = :d ORDER BY message_id",
            d=destination,
        )
        return [
            row for row in rows if read_unverified_claims(row["body"])["transfer_id"] == transfer_id
        ]

    def notice_deliveries(self, request_id: str) -> list[dict[str, Any]]:
        return self.peek.rows(
            PAYEE,
            "SELECT message_id, attempts, delivered_at FROM outbox WHERE request_id = :r",
            r=request_id,
        )

    # --- money ------------------------------------------------------------------------

    def books(self) -> Books:
        people, network = self.people, self.network
        customers = {
            customer.name: balance(network, PAYER, customer.account_id)
            for customer in (people.alice, people.carol, people.dave)
        }
        merchants = {
            merchant.merchant_id: balance(network, PAYEE, merchant.account_id)
            for merchant in (people.cafe, people.kiosk)
        }
        rows = network.router_admin("GET", "/v1/admin/positions")["positions"]
        positions = {row["participant_id"]: row["net_minor"] for row in rows}
        suspense = {processor_id: self.suspense(processor_id) for processor_id in (PAYER, PAYEE)}
        return Books(customers, merchants, positions, suspense)

    def suspense(self, processor_id: str) -> int:
        """Money a processor holds in flight (reservations not yet posted or voided)."""
        position = self.network.admin(processor_id, "GET", "/v1/admin/position")
        return int(position["positions"][0]["suspense_minor"])

    def balance(self, merchant: Merchant) -> int:
        return balance(self.network, merchant.processor_id, merchant.account_id)

    def available(self, customer: Customer) -> int:
        path = f"/v1/admin/accounts/{customer.account_id}"
        return int(self.network.admin(customer.processor_id, "GET", path)["available_minor"])

    def assert_moved(
        self, before: Books, *, payer: Customer, payee: Merchant, amount_minor: int
    ) -> None:
        """Exactly `amount_minor` went from `payer` to `payee` (0: nothing moved), on every
        side, and no reservation is left open at either processor."""
        after = self.books()
        expected_customers = dict(before.customers)
        expected_customers[payer.name] -= amount_minor
        expected_merchants = dict(before.merchants)
        expected_merchants[payee.merchant_id] += amount_minor
        assert after.customers == expected_customers
        assert after.merchants == expected_merchants
        assert after.positions.get(PAYER, 0) == before.positions.get(PAYER, 0) - amount_minor
        assert after.positions.get(PAYEE, 0) == before.positions.get(PAYEE, 0) + amount_minor
        assert sum(after.positions.values()) == 0
        assert after.suspense == {PAYER: 0, PAYEE: 0}, "a reservation is still open"
        assert self.available(payer) == after.customers[payer.name]

    def assert_three_sides(self, transfer_id: str, outcome: str) -> None:
        """The transfer ended `outcome` at the payer, the router and (if it ever saw the
        transfer) the payee processor: never split."""
        assert self.payer_state(transfer_id) == outcome
        assert self.router_state(transfer_id) == outcome
        inbound = self.inbound_state(transfer_id)
        if outcome == "committed":
            assert inbound == "committed"
        else:
            assert inbound in (None, "rejected", "aborted")


def paid_transfer(outcome: PaymentOutcome) -> str:
    """The transfer id of a completed payment, from its receipt."""
    assert outcome.receipt is not None, outcome.order
    return outcome.receipt.transfer_id


async def pay(customer: Customer, token: str) -> PaymentOutcome:
    wallet = customer.wallet()
    try:
        return await wallet.pay(await wallet.verify(token), customer.pin)
    finally:
        await wallet.close()
        wallet.store.close()


async def wallet_status(customer: Customer, order_id: str) -> PaymentOutcome:
    wallet = customer.wallet()
    try:
        return await wallet.status(order_id)
    finally:
        await wallet.close()
        wallet.store.close()


async def wallet_resume(customer: Customer, order_id: str) -> PaymentOutcome:
    wallet = customer.wallet()
    try:
        return await wallet.resume(wallet.store.require_order(order_id))
    finally:
        await wallet.close()
        wallet.store.close()


def make_people(network: Network) -> People:
    customers = []
    for processor_id, name, phone in (
        (PAYER, "Alice Example", "+4915112345678"),
        (PAYER, "Carol Example", "+4915155555555"),
        (PAYER, "Dave Example", "+4915166666666"),
    ):
        customer, code = create_customer(network, processor_id, name, phone, 100_000, PIN)
        asyncio.run(enrol(network, customer, code))
        customers.append(customer)
    webhook = Webhook()
    cafe = create_merchant(network, PAYEE, "corner-cafe", "Corner Café")
    kiosk = create_merchant(network, PAYEE, "news-kiosk", "News Kiosk", webhook_url=webhook.url)
    alice, carol, dave = customers
    return People(alice, carol, dave, cafe=cafe, kiosk=kiosk, webhook=webhook)
