"""`semops bench`: payments per second and latency through a live network.

The benchmark starts its own network (router, bank-a, mno-b as separate processes),
creates `concurrency` customers at bank-a with enrolled wallets and a merchant at mno-b
(or at bank-a for `--on-us`), has the merchant create every payment request first, then
lets the wallets pay them with `concurrency` payments in flight. The latency of a payment
is the wallet's view: verify the request, store the order, send it with the PIN block,
receive and check the signed receipt. Merchants' notices are delivered meanwhile.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from semops.devnet.actors import Customer, Merchant, create_customer, create_merchant, enrol
from semops.devnet.network import Network
from semops.protocol import OrderState

BENCH_PIN: Final = "2468"
AMOUNT_MINOR: Final = 100
REQUEST_CREATION_CONCURRENCY: Final = 16


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


def prepare_people(
    network: Network, payments: int, concurrency: int, *, on_us: bool
) -> tuple[list[Customer], Merchant]:
    # Workers take requests from one queue, so one may pay more than its share: fund each
    # customer for twice its share, so that funds never limit the run.
    per_customer = (2 * (payments // concurrency) + 10) * AMOUNT_MINOR
    customers = []
    for index in range(concurrency):
        customer, code = create_customer(
            network, "bank-a", f"Bench Payer {index}", f"+49151{index:07d}", per_customer, BENCH_PIN
        )
        asyncio.run(enrol(network, customer, code))
        customers.append(customer)
    processor = "bank-a" if on_us else "mno-b"
    merchant = create_merchant(network, processor, "bench-shop", "Bench Shop")
    return customers, merchant


async def create_requests(network: Network, merchant: Merchant, count: int) -> list[str]:
    url = network.layout.processor_url(merchant.processor_id) + "/v1/merchant/requests"
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    semaphore = asyncio.Semaphore(REQUEST_CREATION_CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, index: int) -> str:
        body = {
            "amount_minor": AMOUNT_MINOR,
            "currency": "EUR",
            "reference": f"BENCH-{index}",
            "idempotency_key": secrets.token_urlsafe(16),
        }
        async with (
            semaphore,
            session.post(url, json=body, headers=headers, allow_redirects=False) as response,
        ):
            document: dict[str, Any] = await response.json()
            if response.status != 201:
                raise RuntimeError(f"request creation failed: {document.get('code')}")
            return str(document["token"])

    async with aiohttp.ClientSession(timeout=timeout) as session:
        return list(await asyncio.gather(*(one(session, index) for index in range(count))))


async def pay_all(
    customers: list[Customer], tokens: list[str], on_progress: Callable[[], None]
) -> BenchResult:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for token in tokens:
        queue.put_nowait(token)
    latencies: list[float] = []
    failures = 0

    async def worker(customer: Customer) -> None:
        nonlocal failures
        wallet = customer.wallet()
        try:
            while True:
                try:
                    token = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    outcome = await wallet.pay(await wallet.verify(token), customer.pin)
                    ok = outcome.state is OrderState.COMPLETED
                except Exception:  # a failed payment is counted, the run goes on
                    ok = False
                if ok:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    failures += 1
                on_progress()
        finally:
            await wallet.close()
            wallet.store.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(customer) for customer in customers))
    wall = time.perf_counter() - started
    return BenchResult(len(tokens), len(latencies), failures, wall, latencies)
