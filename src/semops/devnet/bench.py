"""`semops bench`: payments per second, latency and the cost of a payment in a live network.

The benchmark starts its own network (router, bank-a, mno-b as separate processes; with
`with_merchant` also the shop's merchant backend), creates `concurrency` customers at
bank-a with enrolled wallets and a merchant at mno-b (or at bank-a for `--on-us`), and has
the merchant create every payment request first: through its processor's merchant API, or
with `with_merchant` the way a shop does it, `POST /v1/orders` at its own backend, which
asks the processor and later receives the payment notices on its webhook.

Setup and warm-up (one payment per wallet: connections, directory and key caches) are not
measured. The pay phase lets the wallets pay with `concurrency` payments in flight. The
latency of a payment is the wallet's view: verify the request, store the order, send it
with the PIN block, receive and check the signed receipt. Around the pay phase every
process is read (semops.devnet.costs): CPU time and database counters, so the report says
what one payment cost each of them. With a merchant backend the second reading waits until
its notices have arrived (they are part of the payments), at most `NOTICE_WAIT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from semops.core.money import format_amount
from semops.devnet.actors import Customer, Merchant, create_customer, create_merchant, enrol
from semops.devnet.costs import (
    ProcessCost,
    Reading,
    costs_json,
    counter_value,
    database_counts,
    own_cpu_s,
    per_payment,
    process_cpu_s,
)
from semops.devnet.demo import merchant_backend, merchant_key_file, merchant_token_file
from semops.devnet.network import PROCESSORS, ROUTER_ID, Network
from semops.devnet.processes import open_url
from semops.devnet.profile import ProfileFormat, Recording, start_recordings, stop_recordings
from semops.protocol import OrderState
from semops.service.files import write_secret
from semops.wallet.service import Wallet

BENCH_PIN: Final = "2468"
AMOUNT_MINOR: Final = 100
CURRENCY: Final = "EUR"
MERCHANT_ID: Final = "bench-shop"
# The table's name of the shop's backend process (its process name has the merchant id).
MERCHANT_ROW: Final = "merchant"
CLIENT_ROW: Final = "client"
REQUEST_CREATION_CONCURRENCY: Final = 16
REQUEST_TIMEOUT_S: Final = 30
# Notices of the last payments may still be in a processor's outbox when the wallets are
# done; the shop's figures wait for them this long at most.
NOTICE_WAIT_S: Final = 30.0
SCRAPE_TIMEOUT_S: Final = 10
_NOTICE_POLL_S: Final = 0.1


@dataclass(frozen=True, slots=True)
class BenchSettings:
    payments: int
    concurrency: int
    on_us: bool = False
    with_merchant: bool = False
    profile_dir: Path | None = None
    profile_format: ProfileFormat = "speedscope"
    py_spy: str | None = None  # found by the caller before anything starts

    @property
    def warm_up(self) -> int:
        return self.concurrency  # one payment per wallet


@dataclass(frozen=True, slots=True)
class BenchResult:
    payments: int
    succeeded: int
    failed: int
    wall_s: float
    latencies_ms: list[float]

    @property
    def payments_per_s(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s > 0 else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> str:
        return (
            f"{self.succeeded}/{self.payments} payments in {self.wall_s:.2f} s: "
            f"{self.payments_per_s:.1f} payments/s, "
            f"p50 {self.percentile(0.50):.1f} ms, p95 {self.percentile(0.95):.1f} ms, "
            f"p99 {self.percentile(0.99):.1f} ms"
        )

    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies_ms) if self.latencies_ms else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "payments": self.payments,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 3),
            "payments_per_s": round(self.payments_per_s, 2),
            "latency_ms": {
                "p50": round(self.percentile(0.50), 1),
                "p95": round(self.percentile(0.95), 1),
                "p99": round(self.percentile(0.99), 1),
                "mean": round(self.mean_ms(), 1),
            },
        }


@dataclass
class BenchReport:
    settings: BenchSettings
    database: str
    result: BenchResult
    costs: list[ProcessCost]
    notices_missing: int = 0  # notices the shop had not received when it was read
    # service -> {"file": where py-spy wrote, or None; "error": why not, or None}
    profiles: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        settings = self.settings
        return {
            "kind": "on-us" if settings.on_us else "routed",
            "with_merchant": settings.with_merchant,
            "database": self.database,
            "concurrency": settings.concurrency,
            "warm_up_payments": settings.warm_up,
            **self.result.as_json(),
            "per_payment": costs_json(self.costs),
            "notices_missing": self.notices_missing,
            "profiles": self.profiles,
        }

    def describe(self) -> str:
        settings = self.settings
        kind = "on-us at bank-a" if settings.on_us else "routed bank-a -> mno-b"
        shop = ", with the merchant backend" if settings.with_merchant else ""
        return (
            f"{kind}{shop}, {self.database}, concurrency {settings.concurrency}, "
            f"{settings.warm_up} warm-up payments, {self.result.failed} failed"
        )


# --- people and requests ------------------------------------------------------------------


@dataclass
class Shop:
    """The merchant, and its backend when the bench runs one."""

    merchant: Merchant
    backend_url: str | None = None
    api_token: str | None = None


def prepare_people(
    network: Network, payments: int, concurrency: int, *, on_us: bool, webhook_url: str | None
) -> tuple[list[Customer], Merchant]:
    # Workers take requests from one queue, so one may pay more than its share: fund each
    # customer for twice its share (and its warm-up payment), so funds never limit the run.
    per_customer = (2 * (payments // concurrency) + 10) * AMOUNT_MINOR
    customers = []
    for index in range(concurrency):
        customer, code = create_customer(
            network, "bank-a", f"Bench Payer {index}", f"+49151{index:07d}", per_customer, BENCH_PIN
        )
        asyncio.run(enrol(network, customer, code))
        customers.append(customer)
    processor = "bank-a" if on_us else "mno-b"
    merchant = create_merchant(network, processor, MERCHANT_ID, "Bench Shop", webhook_url)
    return customers, merchant


def start_shop(network: Network, merchant: Merchant, db_url: str | None) -> Shop:
    """The merchant's own backend process, holding its processor API key (0600)."""
    write_secret(merchant_key_file(network, merchant.merchant_id), merchant.api_key.encode())
    backend = merchant_backend(network, merchant.merchant_id, merchant.processor_id, db_url)
    network.processes[backend.name] = backend  # stopped with the network
    backend.start()
    backend.wait_ready()
    token = merchant_token_file(network, merchant.merchant_id).read_text().strip()
    return Shop(merchant, shop_url(network), token)


def shop_url(network: Network) -> str:
    return f"http://127.0.0.1:{network.layout.ports['merchant']}"


async def create_requests(network: Network, shop: Shop, count: int) -> list[str]:
    """`count` payment requests: what each customer scans (a token, or the shop's link)."""
    semaphore = asyncio.Semaphore(REQUEST_CREATION_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def one(session: aiohttp.ClientSession, index: int) -> str:
        async with semaphore:
            if shop.backend_url is None:
                return await _processor_request(session, network, shop.merchant, index)
            return await _shop_order(session, shop, index)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        # The first one alone: a merchant backend fetches its processor's keys on its first
        # order, and orders arriving while that fetch is under way are refused key_unknown.
        first = await one(session, 0)
        rest = await asyncio.gather(*(one(session, index) for index in range(1, count)))
        return [first, *rest]


async def _processor_request(
    session: aiohttp.ClientSession, network: Network, merchant: Merchant, index: int
) -> str:
    url = network.layout.processor_url(merchant.processor_id) + "/v1/merchant/requests"
    body = {
        "amount_minor": AMOUNT_MINOR,
        "currency": CURRENCY,
        "reference": f"BENCH-{index}",
        "idempotency_key": secrets.token_urlsafe(16),
    }
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with session.post(url, json=body, headers=headers, allow_redirects=False) as response:
        document: dict[str, Any] = await response.json(content_type=None)
        if response.status != 201:
            raise RuntimeError(f"request creation failed: {document.get('code')}")
        return str(document["token"])


async def _shop_order(session: aiohttp.ClientSession, shop: Shop, index: int) -> str:
    body = {
        "amount": format_amount(AMOUNT_MINOR, CURRENCY),
        "currency": CURRENCY,
        "reference": f"BENCH-{index}",
    }
    headers = {
        "Authorization": f"Bearer {shop.api_token}",
        "Idempotency-Key": f"ik_{secrets.token_urlsafe(16)}",
    }
    url = f"{shop.backend_url}/v1/orders"
    async with session.post(url, json=body, headers=headers, allow_redirects=False) as response:
        document: dict[str, Any] = await response.json(content_type=None)
        if response.status != 201 or not document.get("link"):
            raise RuntimeError(f"order creation at the shop failed: {document.get('code')}")
        return str(document["link"])


# --- paying -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_wallets(customers: list[Customer]) -> AsyncIterator[list[tuple[Customer, Wallet]]]:
    """Each customer's wallet, open for the warm-up and the pay phase alike."""
    wallets = [(customer, customer.wallet()) for customer in customers]
    try:
        yield wallets
    finally:
        for _, wallet in wallets:
            await wallet.close()
            wallet.store.close()


async def _pay_one(customer: Customer, wallet: Wallet, token: str) -> bool:
    try:
        outcome = await wallet.pay(await wallet.verify(token), customer.pin)
    except Exception:  # a failed payment is counted, the run goes on
        return False
    return outcome.state is OrderState.COMPLETED


async def warm_up(wallets: list[tuple[Customer, Wallet]], tokens: list[str]) -> None:
    """One payment per wallet, not measured: connections open, caches filled."""
    pairs = zip(wallets, tokens, strict=True)
    paid = await asyncio.gather(*(_pay_one(c, wallet, token) for (c, wallet), token in pairs))
    if not all(paid):
        raise RuntimeError(f"{paid.count(False)} of {len(paid)} warm-up payments failed")


async def pay_all(
    wallets: list[tuple[Customer, Wallet]], tokens: list[str], on_progress: Callable[[], None]
) -> BenchResult:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    latencies: list[float] = []
    failures = 0

    async def worker(customer: Customer, wallet: Wallet) -> None:
        nonlocal failures
        while True:
            try:
                token = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            if await _pay_one(customer, wallet, token):
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
            on_progress()

    started = time.perf_counter()
    await asyncio.gather(*(worker(customer, wallet) for customer, wallet in wallets))
    wall = time.perf_counter() - started
    return BenchResult(len(tokens), len(latencies), failures, wall, latencies)


# --- readings -----------------------------------------------------------------------------


def service_rows(network: Network) -> dict[str, int]:
    """Table row -> pid of every running service, in the table's order."""
    names = [ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS)]
    rows = {}
    for name in names:
        process = network.processes[name].process
        assert process is not None
        rows[name] = process.pid
    backend = network.processes.get(f"merchant-{MERCHANT_ID}")
    if backend is not None and backend.process is not None:
        rows[MERCHANT_ROW] = backend.process.pid
    return rows


def shop_metrics(shop: Shop) -> str:
    """The merchant backend's /metrics: on its one port, behind its API token."""
    headers = {"Authorization": f"Bearer {shop.api_token}"}
    request = urllib.request.Request(f"{shop.backend_url}/metrics", headers=headers)  # noqa: S310
    with open_url(request, SCRAPE_TIMEOUT_S) as response:
        return str(response.read().decode())


def _scrape(network: Network, shop: Shop, row: str) -> str:
    return shop_metrics(shop) if row == MERCHANT_ROW else network.metrics(row)


def take_readings(network: Network, shop: Shop, *, cpu_first: bool) -> dict[str, Reading]:
    """Every process's CPU time and database counters. Before the pay phase the scrapes go
    first and after it the CPU times, so that reading costs nothing that is counted."""
    pids = service_rows(network)

    def cpu() -> dict[str, float | None]:
        return {CLIENT_ROW: own_cpu_s()} | {row: process_cpu_s(pid) for row, pid in pids.items()}

    times = cpu() if cpu_first else {}
    texts = {row: _scrape(network, shop, row) for row in pids}
    if not cpu_first:
        times = cpu()
    readings = {CLIENT_ROW: Reading(times[CLIENT_ROW])}
    for row in pids:
        readings[row] = Reading(times[row], database_counts(texts[row]))
    return readings


def notices_received(shop: Shop) -> int:
    paid = counter_value(shop_metrics(shop), "semops_merchant_notices", {"outcome": "paid"})
    return int(paid or 0)


async def wait_for_notices(shop: Shop, expected: int) -> int:
    """Wait until the shop has `expected` paid notices; return how many are still missing."""
    deadline = time.monotonic() + NOTICE_WAIT_S
    while (received := notices_received(shop)) < expected and time.monotonic() < deadline:
        await asyncio.sleep(_NOTICE_POLL_S)
    return max(0, expected - received)


# --- the run ------------------------------------------------------------------------------


async def measure(
    network: Network,
    settings: BenchSettings,
    shop: Shop,
    customers: list[Customer],
    tokens: list[str],
    on_progress: Callable[[], None],
) -> BenchReport:
    """Warm up, then the pay phase between two readings (and py-spy, if asked)."""
    warm, measured = tokens[: settings.warm_up], tokens[settings.warm_up :]
    database = "PostgreSQL" if network.layout.db_urls else "SQLite"
    async with open_wallets(customers) as wallets:
        await warm_up(wallets, warm)
        if shop.backend_url is not None:
            await wait_for_notices(shop, len(warm))
        recordings = _start_profiles(network, settings)
        try:
            before = take_readings(network, shop, cpu_first=False)
            result = await pay_all(wallets, measured, on_progress)
            missing = 0
            if shop.backend_url is not None:
                missing = await wait_for_notices(shop, len(warm) + result.succeeded)
            after = take_readings(network, shop, cpu_first=True)
        finally:
            stop_recordings(recordings)
    costs = [per_payment(row, before[row], after[row], result.succeeded) for row in before]
    profiles: dict[str, dict[str, str | None]] = {
        r.name: {"file": None if r.error else str(r.output), "error": r.error} for r in recordings
    }
    return BenchReport(settings, database, result, costs, missing, profiles)


def _start_profiles(network: Network, settings: BenchSettings) -> list[Recording]:
    if settings.profile_dir is None or settings.py_spy is None:
        return []
    return start_recordings(
        settings.py_spy, service_rows(network), settings.profile_dir, settings.profile_format
    )


@dataclass
class Prepared:
    customers: list[Customer]
    shop: Shop


def prepare(
    network: Network,
    settings: BenchSettings,
    say: Callable[[str], None],
    merchant_db_url: str | None = None,
) -> Prepared:
    """Start the network (the caller stops it), its customers and the merchant."""
    say("Starting the network …")
    network.start()
    webhook = f"{shop_url(network)}/v1/notices" if settings.with_merchant else None
    customers, merchant = prepare_people(
        network,
        settings.warm_up + settings.payments,
        settings.concurrency,
        on_us=settings.on_us,
        webhook_url=webhook,
    )
    shop = Shop(merchant)
    if settings.with_merchant:
        say("Starting the merchant backend …")
        shop = start_shop(network, merchant, merchant_db_url)
    return Prepared(customers, shop)


async def run_bench(
    network: Network,
    settings: BenchSettings,
    prepared: Prepared,
    say: Callable[[str], None],
    on_progress: Callable[[], None],
) -> BenchReport:
    """Create every payment request, warm up, measure."""
    count = settings.warm_up + settings.payments
    say(f"Creating {count} payment requests ({settings.warm_up} for the warm-up) …")
    tokens = await create_requests(network, prepared.shop, count)
    if settings.profile_dir is not None:
        say(f"Profiling every service with py-spy into {settings.profile_dir} …")
    return await measure(network, settings, prepared.shop, prepared.customers, tokens, on_progress)


__all__ = [
    "BenchReport",
    "BenchResult",
    "BenchSettings",
    "Prepared",
    "prepare",
    "run_bench",
]
