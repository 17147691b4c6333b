"""`semops chaos`: payments under dropped, duplicated, delayed and reordered messages and
`kill -9`, then proof that nothing was lost, split or made twice.

The harness starts its own network (router, bank-a, mno-b as separate processes) with a
fault-injecting proxy (`devnet.faults`) on every link: each processor to the router, the
router to each processor's scheme port, the wallets to their processor, and each processor
to the merchants' webhook. Customers at both processors pay merchants at both processors
(routed both ways and on-us) with `concurrency` payments in flight, while the proxies
inject `faults` faults and a killer sends SIGKILL to a random service `kills` times and
restarts it. Then the network heals: the wallets carry every unfinished order forward the
way a person's phone would (retry the same order, ask about it), the services finish their
own recovery (in-doubt queries, expiry, outboxes), and the harness reads every party's
records and checks:

- every payment is complete on every side (payer debited and COMMITTED, router COMMITTED,
  payee COMMITTED and the merchant credited and told) or absent on every side (payer
  ABORTED or never received, router ABORTED or never recorded, payee never credited);
- the wallet's view agrees with its processor's;
- money is conserved exactly: the customers' and merchants' money across all processors is
  what was deposited, no reservation is left open, router positions sum to zero, and each
  processor's settlement account mirrors its router position;
- every paid request was notified to its merchant, and no unpaid one was.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from sqlalchemy import func, select

from semops.core.errors import SemopsError
from semops.devnet.actors import (
    Customer,
    Merchant,
    create_customer,
    create_merchant,
    enrol,
    merchant_call,
)
from semops.devnet.faults import FaultBudget, LinkProxy
from semops.devnet.network import PROCESSORS, ROUTER_ID, Layout, Network, ServiceError
from semops.devnet.processes import fresh_port
from semops.protocol import OrderState
from semops.service.tls import TlsFiles
from semops.store import processor as processor_tables
from semops.store import router as router_tables
from semops.store.db import Database, sqlite_url
from semops.wallet.service import Wallet

CHAOS_PIN: Final = "5173"
CURRENCY: Final = "EUR"
AMOUNT_MIN_MINOR: Final = 1
AMOUNT_MAX_MINOR: Final = 900
# Short-lived requests, so that anything left undecided by the faults expires and is
# settled within a minute of the network healing.
REQUEST_TTL_S: Final = 45
# After healing: how long every order, transfer and outbox may take to settle.
SETTLE_TIMEOUT_S: Final = 150.0
SETTLE_POLL_S: Final = 1.0
SETTLE_REPORT_EVERY_S: Final = 10.0
# Between a kill and the restart of the killed service.
DOWN_MIN_S: Final = 0.3
DOWN_MAX_S: Final = 2.5
# A call the harness itself makes (merchant request creation) may meet a killed service.
CALL_RETRY_S: Final = 60.0
SERVICES: Final = (ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS))

OPEN_PAYER_STATES: Final = frozenset({"reserved", "prepared", "in_doubt"})
OPEN_PAYEE_STATES: Final = frozenset({"received", "accepted", "in_doubt"})
PAID_REQUEST_STATES: Final = frozenset({"paid", "partially_refunded", "refunded"})


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    payments: int = 40
    concurrency: int = 8
    faults: int = 40
    kills: int = 3
    fault_rate: float = 0.25
    delay_max_s: float = 1.5
    seed: int = 1

    def __post_init__(self) -> None:
        if self.payments < 1 or self.concurrency < 2 or self.faults < 0 or self.kills < 0:
            raise ValueError("payments >= 1, concurrency >= 2, faults >= 0, kills >= 0")


@dataclass
class Attempt:
    """One payment the harness tried: who paid whom, and what the wallet ended with."""

    number: int
    customer: Customer
    merchant: Merchant
    amount_minor: int
    request_id: str | None = None
    order_id: str | None = None
    wallet_state: str = "not_started"
    error: str | None = None


@dataclass
class ChaosReport:
    settings: ChaosSettings
    attempts: int = 0
    completed: int = 0
    failed: int = 0
    not_ordered: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)
    run_s: float = 0.0
    settle_s: float = 0.0
    checked: Counter[str] = field(default_factory=Counter)
    # Why the payments that failed failed: the payer processor's reason, or the wallet's.
    failures: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        faults = ", ".join(
            f"{kind} {count}" for kind, count in sorted(self.faults.items()) if ":" not in kind
        )
        lines = [
            f"{self.attempts} payments: {self.completed} completed, {self.failed} failed, "
            f"{self.not_ordered} never ordered (request not obtained)",
            f"faults injected: {sum(c for k, c in self.faults.items() if ':' not in k)}"
            f" ({faults or 'none'}); kills: {len(self.kills)} ({', '.join(self.kills) or '-'})",
            f"run {self.run_s:.1f} s, settled in {self.settle_s:.1f} s after healing",
            "checked: "
            + ", ".join(f"{key} {count}" for key, count in sorted(self.checked.items())),
            "failed because: "
            + (", ".join(f"{code} {count}" for code, count in self.failures.most_common()) or "-"),
        ]
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}):")
            lines.extend(f"  - {violation}" for violation in self.violations)
        else:
            lines.append("no violations: every payment complete or absent on all sides")
        return "\n".join(lines)


# --- the network with proxies in every link ---------------------------------------------------


class ProxiedNetwork:
    """A `Network` whose links pass through fault-injecting proxies run by this process."""

    def __init__(self, layout: Layout, budget: FaultBudget) -> None:
        self.budget = budget
        taken = set(layout.ports.values())
        for processor_id, _, _ in PROCESSORS:
            for link in (
                f"{processor_id}>{ROUTER_ID}",
                f"{ROUTER_ID}>{processor_id}",
                f"wallet>{processor_id}",
                f"{processor_id}>webhook",
            ):
                layout.links[link] = fresh_port(taken)
        self.network = Network(layout)
        self.proxies: list[LinkProxy] = []
        self.notices: Counter[str] = Counter()
        self.webhook_port = fresh_port(taken)
        self._webhook: web.AppRunner | None = None

    def tls(self, party: str) -> TlsFiles:
        return TlsFiles.in_directory(self.network.data_dir / party, party)

    def webhook_url(self, processor_id: str) -> str:
        return f"http://127.0.0.1:{self.network.layout.links[f'{processor_id}>webhook']}/notices"

    async def start(self) -> None:
        from semops.devnet.pki import ensure_pki

        layout = self.network.layout
        participants = {ROUTER_ID: "router"} | {pid: "processor" for pid, _, _ in PROCESSORS}
        ensure_pki(self.network.data_dir, participants)
        await self._start_webhook()
        ports = layout.ports
        for processor_id, _, _ in PROCESSORS:
            router, processor = self.tls(ROUTER_ID), self.tls(processor_id)
            # (link, the receiver's URL, the identity shown to the sender, the one used
            # towards the receiver): scheme links are mutual TLS end to end, others HTTP.
            links: list[tuple[str, str, TlsFiles | None, TlsFiles | None]] = [
                (f"{processor_id}>{ROUTER_ID}", layout.router_url(), router, processor),
                (
                    f"{ROUTER_ID}>{processor_id}",
                    f"https://127.0.0.1:{ports[f'{processor_id}-scheme']}",
                    processor,
                    router,
                ),
                (f"wallet>{processor_id}", layout.processor_url(processor_id), None, None),
                (f"{processor_id}>webhook", f"http://127.0.0.1:{self.webhook_port}", None, None),
            ]
            self.proxies += [
                LinkProxy(
                    link,
                    layout.links[link],
                    target,
                    self.budget,
                    serve_as=serve_as,
                    call_as=call_as,
                )
                for link, target, serve_as, call_as in links
            ]
        for proxy in self.proxies:
            await proxy.start()
        await asyncio.to_thread(self.network.start)

    async def _start_webhook(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            from semops.crypto import read_unverified_claims

            token = (await request.read()).decode("ascii", errors="replace").strip()
            with contextlib.suppress(Exception):
                self.notices[str(read_unverified_claims(token).get("request_id"))] += 1
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/notices", receive)
        self._webhook = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._webhook.setup()
        await web.TCPSite(self._webhook, "127.0.0.1", self.webhook_port).start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.network.stop)
        for proxy in self.proxies:
            await proxy.stop()
        if self._webhook is not None:
            await self._webhook.cleanup()

    def database_url(self, service: str) -> str:
        layout = self.network.layout
        return layout.db_urls.get(service) or sqlite_url(layout.root / service / f"{service}.db")


# --- the run ----------------------------------------------------------------------------------


async def run_chaos(
    data_dir: Path,
    settings: ChaosSettings,
    db_urls: dict[str, str] | None = None,
    on_progress: Callable[[str], None] = lambda _: None,
) -> ChaosReport:
    """Start a proxied network in `data_dir`, run the storm, heal, settle, check."""
    from semops.devnet.network import new_layout

    layout = new_layout(data_dir, fixed_ports=False, db_urls=db_urls)
    budget = FaultBudget(0, settings.fault_rate, settings.delay_max_s, settings.seed)
    proxied = ProxiedNetwork(layout, budget)
    report = ChaosReport(settings)
    choice = random.Random(settings.seed)  # noqa: S311 - test traffic, not security
    try:
        on_progress("starting the network behind fault proxies")
        await proxied.start()
        customers, merchants, deposited = await _people(proxied, settings)
        attempts = [
            Attempt(
                number,
                customers[number % len(customers)],
                choice.choice(merchants),
                choice.randint(AMOUNT_MIN_MINOR, AMOUNT_MAX_MINOR),
            )
            for number in range(settings.payments)
        ]
        on_progress(
            f"{settings.payments} payments, {settings.faults} faults, {settings.kills} kills"
        )
        budget.remaining = settings.faults
        started = time.monotonic()
        killer = asyncio.create_task(_killer(proxied, settings, choice, report))
        await _pay_everything(proxied, attempts)
        await killer
        budget.stop()
        report.run_s = time.monotonic() - started
        on_progress("healed: settling every unfinished payment")
        healed = time.monotonic()
        await _settle(proxied, attempts, on_progress)
        report.settle_s = time.monotonic() - healed
        report.faults = budget.injected
        report.attempts = len(attempts)
        report.completed = sum(a.wallet_state == OrderState.COMPLETED for a in attempts)
        report.failed = sum(a.wallet_state == OrderState.FAILED for a in attempts)
        report.not_ordered = sum(a.order_id is None for a in attempts)
        on_progress("checking every side of every payment")
        snapshot = await read_snapshot(proxied)
        report.violations = check(attempts, snapshot, deposited, proxied.notices, report.checked)
        report.failures = failure_reasons(attempts, snapshot)
    finally:
        await proxied.stop()
    return report


async def _people(
    proxied: ProxiedNetwork, settings: ChaosSettings
) -> tuple[list[Customer], list[Merchant], int]:
    network = proxied.network
    per_customer = (settings.payments // settings.concurrency + 2) * AMOUNT_MAX_MINOR
    customers: list[Customer] = []
    for index in range(settings.concurrency):
        processor_id = PROCESSORS[index % len(PROCESSORS)][0]
        customer, code = await asyncio.to_thread(
            create_customer,
            network,
            processor_id,
            f"Chaos Payer {index}",
            f"+49152{index:07d}",
            per_customer,
            CHAOS_PIN,
        )
        await enrol(network, customer, code)
        customers.append(customer)
    merchants = [
        await asyncio.to_thread(
            create_merchant,
            network,
            processor_id,
            f"chaos-shop-{processor_id}",
            f"Chaos Shop {processor_id}",
            proxied.webhook_url(processor_id),
        )
        for processor_id, _, _ in PROCESSORS
    ]
    return customers, merchants, per_customer * len(customers)


async def _killer(
    proxied: ProxiedNetwork, settings: ChaosSettings, choice: random.Random, report: ChaosReport
) -> None:
    """SIGKILL a random service `kills` times while payments run, restarting each."""
    for _ in range(settings.kills):
        await asyncio.sleep(choice.uniform(0.5, 3.0))
        name = choice.choice(SERVICES)
        process = proxied.network.processes[name]
        process.stop(hard=True)
        report.kills.append(name)
        await asyncio.sleep(choice.uniform(DOWN_MIN_S, DOWN_MAX_S))
        process.start()
        await asyncio.to_thread(process.wait_ready)


async def _pay_everything(proxied: ProxiedNetwork, attempts: list[Attempt]) -> None:
    """Each customer pays its attempts one after another; customers pay in parallel."""
    by_customer: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_customer.setdefault(attempt.customer.account_id, []).append(attempt)

    async def one_customer(own: list[Attempt]) -> None:
        wallet = own[0].customer.wallet()
        try:
            for attempt in own:
                await _pay(proxied, wallet, attempt)
        finally:
            await wallet.close()
            wallet.store.close()

    await asyncio.gather(*(one_customer(own) for own in by_customer.values()))


async def _pay(proxied: ProxiedNetwork, wallet: Wallet, attempt: Attempt) -> None:
    token = await _request(proxied, attempt)
    if token is None:
        return
    deadline = time.monotonic() + CALL_RETRY_S
    while time.monotonic() < deadline:
        record = wallet.existing_order(attempt.request_id or "")
        try:
            if record is not None:
                attempt.order_id = record.order_id
                outcome = await wallet.resume(record)
            else:
                outcome = await wallet.pay(await wallet.verify(token), attempt.customer.pin)
            attempt.order_id = outcome.order.order_id
            attempt.wallet_state = outcome.state.value
            return
        except SemopsError as error:  # the link or the processor is down: try again
            attempt.error = error.code
            await asyncio.sleep(0.5)
    record = wallet.existing_order(attempt.request_id or "")
    if record is not None:
        attempt.order_id = record.order_id
        attempt.wallet_state = record.state.value


async def _request(proxied: ProxiedNetwork, attempt: Attempt) -> str | None:
    """The merchant asks its processor for a payment request (retried through kills)."""
    body = {
        "amount_minor": attempt.amount_minor,
        "currency": CURRENCY,
        "reference": f"CHAOS-{attempt.number}",
        "idempotency_key": secrets.token_urlsafe(16),
        "ttl_s": REQUEST_TTL_S,
    }
    deadline = time.monotonic() + CALL_RETRY_S
    while time.monotonic() < deadline:
        try:
            created = await asyncio.to_thread(
                merchant_call,
                proxied.network,
                attempt.merchant,
                "POST",
                "/v1/merchant/requests",
                body,
            )
        except (ServiceError, OSError) as error:
            attempt.error = getattr(error, "code", type(error).__name__)
            await asyncio.sleep(0.5)
            continue
        attempt.request_id = str(created["request_id"])
        return str(created["token"])
    return None


async def _settle(
    proxied: ProxiedNetwork, attempts: list[Attempt], on_progress: Callable[[str], None]
) -> None:
    """After healing: finish every order from the wallet, then wait for every service."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    for name, process in proxied.network.processes.items():
        if not process.alive():
            process.start()
            await asyncio.to_thread(process.wait_ready)
        del name
    unfinished = [a for a in attempts if a.order_id is not None]
    while unfinished and time.monotonic() < deadline:
        still = []
        for attempt in unfinished:
            wallet = attempt.customer.wallet()
            try:
                record = wallet.store.require_order(attempt.order_id or "")
                if not record.is_terminal:
                    with contextlib.suppress(SemopsError):
                        outcome = await wallet.resume(record)
                        attempt.wallet_state = outcome.state.value
                    record = wallet.store.require_order(attempt.order_id or "")
                attempt.wallet_state = record.state.value
                if not record.is_terminal:
                    still.append(attempt)
            finally:
                await wallet.close()
                wallet.store.close()
        unfinished = still
        if unfinished:
            await asyncio.sleep(SETTLE_POLL_S)
    said = 0.0
    while time.monotonic() < deadline:
        open_work = (await read_snapshot(proxied)).open_work()
        if not open_work:
            return
        if time.monotonic() - said > SETTLE_REPORT_EVERY_S:
            said = time.monotonic()
            on_progress(f"waiting for {len(open_work)}: {', '.join(open_work[:4])}")
        await asyncio.sleep(SETTLE_POLL_S)


# --- reading every party's records -----------------------------------------------------------


@dataclass
class ProcessorView:
    orders: dict[str, dict[str, Any]]
    inbound: dict[str, dict[str, Any]]
    requests: dict[str, dict[str, Any]]
    accounts: dict[str, dict[str, Any]]
    deposits_minor: int
    outbox_pending: int
    refusals: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Snapshot:
    processors: dict[str, ProcessorView]
    router_transfers: dict[str, dict[str, Any]]
    positions: dict[str, int]
    router_outbox_pending: int

    def open_work(self) -> list[str]:
        work = [f"router outbox {self.router_outbox_pending}"] if self.router_outbox_pending else []
        work += [
            f"router {t}" for t, row in self.router_transfers.items() if row["state"] == "reserved"
        ]
        for pid, view in self.processors.items():
            work += [
                f"{pid} order {o}"
                for o, r in view.orders.items()
                if r["state"] in OPEN_PAYER_STATES
            ]
            work += [
                f"{pid} inbound {t}"
                for t, r in view.inbound.items()
                if r["state"] in OPEN_PAYEE_STATES
            ]
            if view.outbox_pending:
                work.append(f"{pid} outbox {view.outbox_pending}")
        return work


async def _rows(database: Database, table: Any, key: str) -> dict[str, dict[str, Any]]:
    async with database.read() as connection:
        result = await connection.execute(select(table))
        return {str(row[key]): dict(row) for row in result.mappings()}


async def _booked_accounts(database: Database) -> dict[str, dict[str, Any]]:
    """A processor's accounts with their balances as booked (system postings included
    whether or not they are folded into the rows yet)."""
    async with database.read() as connection:
        rows = await processor_tables.booked_accounts(connection)
        return {str(row["account_id"]): row for row in rows}


async def _count(database: Database, table: Any) -> int:
    async with database.read() as connection:
        query = select(func.count()).select_from(table).where(table.c.delivered_at.is_(None))
        return int((await connection.execute(query)).scalar_one())


async def read_snapshot(proxied: ProxiedNetwork) -> Snapshot:
    processors: dict[str, ProcessorView] = {}
    for processor_id, _, _ in PROCESSORS:
        database = Database(proxied.database_url(processor_id))
        try:
            deposits = await _rows(database, processor_tables.deposits, "deposit_ref")
            processors[processor_id] = ProcessorView(
                orders=await _rows(database, processor_tables.orders, "order_id"),
                inbound=await _rows(database, processor_tables.inbound_transfers, "transfer_id"),
                requests=await _rows(database, processor_tables.requests, "request_id"),
                accounts=await _booked_accounts(database),
                deposits_minor=sum(int(row["amount_minor"]) for row in deposits.values()),
                outbox_pending=await _count(database, processor_tables.outbox),
                refusals=await _rows(database, processor_tables.order_refusals, "order_id"),
            )
        finally:
            await database.dispose()
    database = Database(proxied.database_url(ROUTER_ID))
    try:
        transfers = await _rows(database, router_tables.transfers, "transfer_id")
        async with database.read() as connection:
            positions = {
                str(row["participant_id"]): int(row["net_minor"])
                for row in await router_tables.list_positions(connection)
                if row["currency"] == CURRENCY
            }
        router_outbox = await _count(database, router_tables.outbox)
    finally:
        await database.dispose()
    return Snapshot(processors, transfers, positions, router_outbox)


# --- the checks ---------------------------------------------------------------------------------


def check(
    attempts: list[Attempt],
    snapshot: Snapshot,
    deposited_minor: int,
    notices: Counter[str],
    checked: Counter[str],
) -> list[str]:
    """Every violation of "complete on all sides or absent on all sides" and of conservation."""
    violations = [f"still open after settling: {item}" for item in snapshot.open_work()]
    for attempt in attempts:
        violations += _check_attempt(attempt, snapshot, notices, checked)
    violations += _check_money(snapshot, deposited_minor, checked)
    return violations


def _check_attempt(
    attempt: Attempt, snapshot: Snapshot, notices: Counter[str], checked: Counter[str]
) -> list[str]:
    label = f"payment {attempt.number} ({attempt.customer.processor_id} -> "
    label += f"{attempt.merchant.processor_id}, order {attempt.order_id})"
    payer = snapshot.processors[attempt.customer.processor_id]
    payee = snapshot.processors[attempt.merchant.processor_id]
    request = payee.requests.get(attempt.request_id or "")
    order = payer.orders.get(attempt.order_id or "")
    if attempt.request_id is not None and request is None:
        return [f"{label}: the payee processor has no request {attempt.request_id}"]
    if order is None:
        # Never reached the payer processor: nothing may exist for it anywhere.
        checked["absent (refused or never received)"] += 1
        if request is not None and request["state"] in PAID_REQUEST_STATES:
            return [f"{label}: request paid although no order reached the payer processor"]
        if attempt.wallet_state == OrderState.COMPLETED:
            return [f"{label}: the wallet says completed but the processor has no order"]
        return []
    transfer_id = str(order["transfer_id"])
    routed = not bool(order["on_us"])
    sides = {
        "payer": order["state"],
        "router": snapshot.router_transfers.get(transfer_id, {}).get("state") if routed else None,
        "payee": payee.inbound.get(transfer_id, {}).get("state") if routed else None,
    }
    paid_by_this = (
        request is not None
        and request["state"] in PAID_REQUEST_STATES
        and request["transfer_id"] == transfer_id
    )
    wallet = attempt.wallet_state
    problems: list[str] = []
    if order["state"] == "committed":
        checked["complete" + (" routed" if routed else " on-us")] += 1
        if routed and (sides["router"] != "committed" or sides["payee"] != "committed"):
            problems.append(f"split: {sides}")
        if not paid_by_this:
            problems.append(f"payer committed but the request is {request and request['state']}")
        if notices[attempt.request_id or ""] == 0:
            problems.append("paid but the merchant was never notified")
        if wallet != OrderState.COMPLETED:
            problems.append(f"payer committed but the wallet says {wallet}")
    elif order["state"] == "aborted":
        checked["absent" + (" routed" if routed else " on-us")] += 1
        if routed and sides["router"] not in (None, "aborted"):
            problems.append(f"split: {sides}")
        if routed and sides["payee"] not in (None, "aborted", "rejected"):
            problems.append(f"split: {sides}")
        if paid_by_this:
            problems.append("payer aborted but the request was paid by this transfer")
        if wallet == OrderState.COMPLETED:
            problems.append("payer aborted but the wallet says completed")
    else:
        problems.append(f"payer order still {order['state']}")
    return [f"{label}: {problem}" for problem in problems]


def failure_reasons(attempts: list[Attempt], snapshot: Snapshot) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for attempt in attempts:
        if attempt.wallet_state == OrderState.COMPLETED:
            continue
        payer = snapshot.processors[attempt.customer.processor_id]
        order = payer.orders.get(attempt.order_id or "")
        if order is not None:
            kind = "on-us" if order["on_us"] else "routed"
            reasons[f"{kind} {order['reason_code'] or order['state']}"] += 1
        elif (refusal := payer.refusals.get(attempt.order_id or "")) is not None:
            reasons[f"refused {refusal['code']}"] += 1
        else:
            reasons[f"not received ({attempt.error or attempt.wallet_state})"] += 1
    return reasons


def _check_money(snapshot: Snapshot, deposited_minor: int, checked: Counter[str]) -> list[str]:
    problems: list[str] = []
    people_total = 0
    for processor_id, view in snapshot.processors.items():
        kinds: Counter[str] = Counter()
        for row in view.accounts.values():
            if row["currency"] == CURRENCY:
                kinds[str(row["kind"])] += int(row["balance_minor"])
        people_total += kinds["customer"] + kinds["merchant"]
        if sum(kinds.values()) != 0:
            problems.append(f"{processor_id}: the ledger does not balance: {dict(kinds)}")
        if kinds["suspense"] != 0:
            problems.append(f"{processor_id}: {kinds['suspense']} minor units left reserved")
        if -kinds["funding"] != view.deposits_minor:
            problems.append(
                f"{processor_id}: funding {kinds['funding']} != deposits {view.deposits_minor}"
            )
        position = snapshot.positions.get(processor_id, 0)
        if kinds["settlement"] != -position:
            problems.append(
                f"{processor_id}: settlement account {kinds['settlement']} does not mirror "
                f"the router position {position}"
            )
        for row in view.accounts.values():
            if (
                row["kind"] in ("customer", "merchant")
                and row["balance_minor"] < -row["overdraft_minor"]
            ):
                problems.append(f"{processor_id}: account {row['account_id']} overdrawn")
        checked["ledgers"] += 1
    if people_total != deposited_minor:
        problems.append(
            f"money not conserved: customers and merchants hold {people_total}, "
            f"{deposited_minor} was deposited"
        )
    if sum(snapshot.positions.values()) != 0:
        problems.append(f"router positions do not sum to zero: {snapshot.positions}")
    return problems
