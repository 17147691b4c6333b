"""Live order status for the checkout page: Server-Sent Events that wake on the service's
own changes.

Theory of operation:

- `OrderChanges` is the service's doorbell. Whoever changes an order (the notice handler,
  the poller, a refund) rings it for that order id *after* its transaction committed; each
  open stream of that order waits on its own `asyncio.Event`. No stream polls in a loop:
  it sleeps until it is woken, or until `recheck_s` passes, when it reads the order once
  more anyway (another worker process may have changed it, and a bell can only be heard
  in the process that rang it).
- A stream is bounded three ways: it ends by itself after `max_s` (the browser's
  EventSource then reconnects after the `retry` we announce), it sends a keep-alive
  comment after `keepalive_s` of silence (so proxies keep it open and a vanished client
  is noticed), and it ends as soon as the order reaches a state the checkout page need
  not follow further. At most `streams_max` streams are open per process; one more is
  refused with 503 `unavailable`, and the page falls back to polling.
- What a stream sends is `public_status`: the state and the guarantee, nothing else. An
  order never holds anything about the payer, and the stream does not send the token,
  notice or idempotency key either: the page needs none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from semops.core.errors import E, SemopsError
from semops.crypto import read_unverified_claims

# States after which the checkout page has nothing left to wait for.
FINAL_STATES: Final = frozenset({"paid", "partially_refunded", "refunded", "expired", "failed"})


# Each stream is one idle connection and one small task; a shop's checkout screens are a
# handful, so 256 leaves room and still bounds what a flood of tabs can hold.
STREAMS_MAX: Final = 256


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of one process's event streams (each with the reason for its number)."""

    # A payment takes seconds; a checkout screen waits minutes at most. Five minutes per
    # connection keeps a forgotten tab from holding a connection for ever; EventSource
    # reconnects by itself, so the page still follows a slow customer.
    max_s: float = 300.0
    # Under the 30-60 s idle timeouts common in proxies and load balancers.
    keepalive_s: float = 15.0
    # How soon a change made by *another* worker process is seen (one row read by key).
    recheck_s: float = 5.0
    streams_max: int = STREAMS_MAX
    # What EventSource waits before reconnecting after the stream ends (milliseconds).
    retry_ms: int = 3000


class OrderChanges:
    """Wakes the event streams of an order when this process changes it."""

    def __init__(self, streams_max: int = STREAMS_MAX) -> None:
        self.streams_max = streams_max
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._open = 0

    @property
    def open_streams(self) -> int:
        return self._open

    def notify(self, order_id: str) -> None:
        for waiter in self._waiters.get(order_id, ()):
            waiter.set()

    def admit(self) -> None:
        """Count one more open stream, or refuse it when the bound is reached."""
        if self._open >= self.streams_max:
            raise SemopsError(
                E.UNAVAILABLE, "too many live status streams; poll GET /v1/orders/{id}"
            )
        self._open += 1

    def release(self) -> None:
        assert self._open > 0, "every released stream was admitted"
        self._open -= 1

    @contextlib.contextmanager
    def watch(self, order_id: str) -> Iterator[asyncio.Event]:
        waiter = asyncio.Event()
        self._waiters.setdefault(order_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(order_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[order_id]


def time_text(timestamp: int | None) -> str | None:
    """A Unix time as people read it (UTC: the shop's screen and the server agree)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def guarantee_of(view: dict[str, Any]) -> dict[str, str] | None:
    """Who guarantees a paid order: from the notice the service verified before storing."""
    notice = view.get("notice")
    if not isinstance(notice, str):
        return None
    claims = read_unverified_claims(notice)
    processor, guarantee = claims.get("payee_processor"), claims.get("guarantee")
    if not isinstance(processor, str) or not isinstance(guarantee, str):
        return None
    return {"processor": processor, "guarantee": guarantee}


def public_status(view: dict[str, Any]) -> dict[str, Any]:
    """What the checkout page is told about an order: its state and its guarantee (public:
    anyone with the order id reads it, so nothing of the shop's own records)."""
    currency = view["currency"]
    return {
        "order_id": view["order_id"],
        "state": view["state"],
        "amount": view["amount"],
        "currency": currency,
        "expires_at": view.get("expires_at"),
        "expires_at_text": time_text(view.get("expires_at")),
        "paid_at": view.get("paid_at"),
        "paid_at_text": time_text(view.get("paid_at")),
        "transfer_id": view.get("transfer_id"),
        "guarantee": guarantee_of(view),
    }


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One event in text/event-stream framing (the JSON has no raw newlines)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def order_stream(
    order_id: str,
    load: Callable[[], Awaitable[dict[str, Any]]],
    changes: OrderChanges,
    limits: StreamLimits,
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """The events of one order until it is final, the time is up, or the client leaves."""
    started = last_write = monotonic()
    sent: dict[str, Any] | None = None
    with changes.watch(order_id) as woken:
        yield f"retry: {limits.retry_ms}\n\n".encode()
        while True:
            # Cleared before the read: a change during the read leaves the bell rung.
            woken.clear()
            status = public_status(await load())
            now = monotonic()
            if status != sent:
                yield sse_event("order", status)
                sent, last_write = status, now
                if status["state"] in FINAL_STATES:
                    return
            elif now - last_write >= limits.keepalive_s:
                yield b": keep-alive\n\n"
                last_write = now
            left_s = limits.max_s - (now - started)
            if left_s <= 0:
                return
            wait_s = min(limits.recheck_s, limits.keepalive_s, left_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=wait_s)


class EventStreamResponse(StreamingResponse):
    """A text/event-stream response that counts itself against the process's bound
    until it ends, however it ends (finished, client gone, server stopping)."""

    def __init__(self, content: AsyncIterator[bytes], changes: OrderChanges) -> None:
        changes.admit()
        self._changes = changes
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                # Tells a buffering proxy (nginx) to pass each event through at once.
                "X-Accel-Buffering": "no",
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._changes.release()


__all__ = [
    "FINAL_STATES",
    "EventStreamResponse",
    "OrderChanges",
    "StreamLimits",
    "guarantee_of",
    "order_stream",
    "public_status",
    "sse_event",
    "time_text",
]
