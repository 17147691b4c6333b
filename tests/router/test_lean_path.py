"""No redundant work on the router's payment path (issue 12), in process, on both backends.

The router is the real `Router` over a real database (the harness of test_windows.py,
its fixtures in conftest.py);
what is counted is work that once was done twice: signing a decision's TransferStatus for
the outbox and again for the reply; statuses delivered one at a time, and only at the next
poll.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from semops.protocol import TransferStatus
from semops.router import service
from semops.service import outbox
from semops.store import router as store
from tests.databases import CompiledPerCall
from tests.router.test_windows import Scheme

pytestmark = pytest.mark.anyio


class StatusSignatures:
    """The router's `sign`, recording every TransferStatus token it makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens: list[str] = []
        self._sign = service.sign
        monkeypatch.setattr(service, "sign", self)

    def __call__(self, message: Any, key: Any) -> str:
        token = self._sign(message, key)
        if isinstance(message, TransferStatus):
            self.tokens.append(token)
        return token


async def _undelivered(scheme: Scheme) -> list[dict[str, Any]]:
    async with scheme.database.read() as connection:
        return await store.due_messages(connection, 2**40, 100)


async def test_a_decision_is_signed_once_for_the_reply_and_the_outbox(
    scheme: Scheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    signatures = StatusSignatures(monkeypatch)
    _, state = await scheme.pay(100)
    assert state == "committed"
    assert scheme.last_outcome is not None
    (token,) = signatures.tokens  # one signature for the one state change
    assert scheme.last_outcome.token == token
    (queued,) = await _undelivered(scheme)
    assert (queued["destination"], queued["body"]) == ("mno-b", token)


class HeldStatuses:
    """Status deliveries wait until `count` of them are in flight at once (then all go
    on); routed prepares are fulfilled as by the FulfillingPeer."""

    def __init__(self, peer: Any, count: int) -> None:
        self.peer = peer
        self.count = count
        self.in_flight = 0
        self.together = asyncio.Event()
        self.delivered: list[str] = []

    async def call_jose(self, method: str, url: str, **options: Any) -> str:
        if not url.endswith("/v1/scheme/status"):
            return str(await self.peer.call_jose(method, url, **options))
        self.in_flight += 1
        if self.in_flight >= self.count:
            self.together.set()
        await self.together.wait()
        self.delivered.append(options["jose"])
        return ""


async def test_statuses_to_one_processor_go_out_side_by_side(scheme: Scheme) -> None:
    """Issue 12: one status at a time made payee credits lag seconds behind receipts."""
    for _ in range(3):
        assert (await scheme.pay(100))[1] == "committed"
    held = HeldStatuses(scheme.router.peer, count=3)
    scheme.router.peer = held  # type: ignore[assignment]
    # One at a time, the first delivery would wait for the third forever.
    assert await asyncio.wait_for(scheme.router.deliver_outbox(), 10) == 3
    assert await _undelivered(scheme) == []


async def test_a_decision_wakes_the_outbox_at_once(
    scheme: Scheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    held = HeldStatuses(scheme.router.peer, count=1)
    scheme.router.peer = held  # type: ignore[assignment]
    stop = asyncio.Event()
    background = asyncio.create_task(scheme.router.run_background(stop))
    try:
        await asyncio.sleep(0.2)  # the deliverer has looked once and sleeps for an hour
        await scheme.pay(100)
        assert scheme.last_outcome is not None
        for _ in range(100):
            if held.delivered:
                break
            await asyncio.sleep(0.05)
        assert held.delivered == [scheme.last_outcome.token]
    finally:
        stop.set()
        await asyncio.wait_for(background, 10)


async def test_a_decision_goes_out_without_a_look_at_the_outbox(
    scheme: Scheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deciding call hands its committed status to the running deliverer: no read of
    the outbox per payment; the acknowledgements are marked in one batch."""
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    looks = 0
    channel = scheme.router.outbox.channel
    due = channel.due

    async def counted_due(now: int, limit: int) -> list[dict[str, Any]]:
        nonlocal looks
        looks += 1
        return await due(now, limit)

    monkeypatch.setattr(channel, "due", counted_due)
    stop = asyncio.Event()
    background = asyncio.create_task(scheme.router.run_background(stop))
    try:
        await asyncio.sleep(0.2)  # the deliverer has looked once and sleeps for an hour
        assert looks == 1
        stats = scheme.database.stats
        writes = stats.writes
        for _ in range(3):
            await asyncio.gather(*(scheme.pay(100) for _ in range(4)))
        for _ in range(100):
            if not await _undelivered(scheme):
                break
            await asyncio.sleep(0.05)
        assert await _undelivered(scheme) == []
        assert looks == 1  # twelve statuses delivered, the outbox never read for them
        # 12 payments take 24 writes; their marks take far fewer than one each.
        assert stats.writes - writes < 24 + 12, stats.writes - writes
    finally:
        stop.set()
        await asyncio.wait_for(background, 10)


# One routed payment at the router: a write recording the prepare RESERVED (the insert, which
# reads the sender's cap; none here), a write deciding it (the transfer with its window in
# one conditional update, marked for the positions fold; the outbox message; the audit
# entry, staged). No row another payment touches. Lower these when a change takes fewer.
ROUTER_STATEMENTS_MAX = {"sqlite": 4, "postgresql": 4}
ROUTER_WRITES_MAX = 2


async def test_a_routed_payment_stays_within_its_statement_budget(
    scheme: Scheme, monkeypatch: pytest.MonkeyPatch
) -> None:
    await scheme.pay(100)  # the first one warms the statement caches
    stats = scheme.database.stats
    statements, writes = stats.statements, stats.writes
    per_call = CompiledPerCall(monkeypatch)
    _, state = await scheme.pay(100)
    assert state == "committed"
    taken = (stats.statements - statements, stats.writes - writes)
    backend = "sqlite" if scheme.database.sqlite else "postgresql"
    assert taken[0] <= ROUTER_STATEMENTS_MAX[backend], taken
    assert taken[1] <= ROUTER_WRITES_MAX, taken
    assert per_call.statements == []  # every statement compiled once, not per payment
