"""Durable outboxes: when to try a message again, and the one loop that delivers them.

Theory of operation. A message to another party is written to the sender's database in the
transaction that made it (the router's TransferStatus with its decision, a processor's
PaymentNotice with the credit), and delivered from there until the receiver acknowledges
it: at least once, never dropped. A message that cannot be delivered is re-sent with
exponential back-off, capped so that a party coming back is served within a minute; after
OUTBOX_ATTEMPTS_WARN attempts it is still retried at the cap and reported in metrics, so
an operator sees the stuck destination.

`Deliverer` sends due messages side by side: at most OUTBOX_PER_DESTINATION_MAX to one
destination and OUTBOX_IN_FLIGHT_MAX in all, so one slow receiver neither holds up the
others nor is flooded. It is woken as soon as a message is queued (its `wakeup` event, set
after the queuing transaction commits) and polls every OUTBOX_POLL_INTERVAL_S besides,
for messages whose back-off ended and for what another worker queued. A failed delivery
backs the whole destination off: its other due messages are not sent until the failed
one's next attempt, and are given that time (counted as an attempt) so that they leave
the due list and cannot crowd out other destinations.

A message queued by this process is offered to the deliverer once its transaction has
committed (`offer`): started at once if a slot is free, else kept in memory and started as
soon as a slot to its destination frees, all without reading the outbox for it; the polls
find the rest (one backed off, what another worker queued, what a restart left). A
message a poll finds while its destination is full waits in the same queue: one queue per
destination, oldest first, the destinations served in turn, so neither kind of message
can starve the other and no destination the others. The queues hold at most
OUTBOX_WAITING_MAX messages (beyond, the next poll). A waiting message is in the outbox
too, so dropping the queues (a stop, a destination failing) loses nothing.

Acknowledgements are recorded in batches: a delivery the receiver acknowledged joins the
next `delivered` write, which marks every message acknowledged since the previous one in
one statement, after waiting OUTBOX_MARK_LINGER_S for more (on SQLite that write joins a
group commit anyway; on PostgreSQL the batch saves a commit, an fsync, per message).
Until its mark is committed an acknowledged message is not sent again by this process; if
the process stops first, it is sent once more after the restart and acknowledged again (at
least once, as always).

Order. Deliveries may overtake each other. Every receiver applies what it gets by its id
(a status by transfer id and state, a notice by request id), and each transfer or request
gets one message per destination, so no receiver depends on the order; a copy delivered
twice (its acknowledgement lost, a worker restarted) is acknowledged and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from typing import Any, Final, Protocol

import structlog

from semops.core.clock import Clock
from semops.core.errors import SemopsError

log = structlog.get_logger("semops.service")

OUTBOX_BACKOFF_FIRST_S: Final = 1
OUTBOX_BACKOFF_MAX_S: Final = 30
OUTBOX_ATTEMPTS_WARN: Final = 20
# Messages read per look at the outbox, so one backlog cannot make a read unbounded.
OUTBOX_BATCH_MAX: Final = 100
OUTBOX_POLL_INTERVAL_S: Final = 0.5
OUTBOX_DELIVERY_TIMEOUT_S: Final = 5.0
# Deliveries in flight to one destination: enough to keep a receiver's workers busy (each
# delivery is one write transaction there), few enough that a backlog is not a flood.
OUTBOX_PER_DESTINATION_MAX: Final = 4
# Deliveries in flight in all: each holds a pooled connection, and its bookkeeping a write
# transaction here when it ends.
OUTBOX_IN_FLIGHT_MAX: Final = 16
# Offered messages kept in memory for a free slot, in all: beyond, the polls find them.
OUTBOX_WAITING_MAX: Final = 1000
# One `deliver_due` pass looks at the outbox at most this often (each look may start more).
_PASS_LOOKS_MAX: Final = 64
# Acknowledged messages marked delivered by one write (one IN list).
OUTBOX_MARK_BATCH_MAX: Final = 100
# How long the first acknowledgement of a batch waits for others before they are marked:
# under load one write (on PostgreSQL one commit, one fsync) marks many deliveries. What
# it costs: an acknowledged message is sent once more if the process stops within it.
OUTBOX_MARK_LINGER_S: Final = 0.05

OutboxMessage = dict[str, Any]


def next_attempt_at(now: int, attempts: int) -> int:
    """Back-off after `attempts` failed deliveries: 1, 2, 4, … seconds, at most 30."""
    delay: int = min(OUTBOX_BACKOFF_FIRST_S << max(attempts - 1, 0), OUTBOX_BACKOFF_MAX_S)
    return now + delay


async def _first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until one of `events` is set, or `timeout_s` passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class OutboxChannel(Protocol):
    """One service's outbox: its table, and how a message reaches its destination."""

    async def due(self, now: int, limit: int) -> list[OutboxMessage]:
        """Undelivered messages whose next attempt is due, oldest first (each has
        `message_id`, `destination` and `attempts`)."""
        ...

    async def send(self, message: OutboxMessage) -> None:
        """Deliver; return only once the receiver acknowledged it, else raise SemopsError."""
        ...

    async def delivered(self, messages: list[OutboxMessage], now: int) -> None:
        """Record that the receivers acknowledged these messages (one write)."""
        ...

    async def retry_later(
        self, message: OutboxMessage, attempts: int, at: int, error: SemopsError | None
    ) -> None:
        """Record a failed attempt (`error`), or one not made because the destination is
        backed off (None): the message is due again at `at`."""
        ...


class Deliverer:
    """Delivers an outbox concurrently, bounded per destination and in all (module doc)."""

    def __init__(
        self,
        channel: OutboxChannel,
        clock: Clock,
        *,
        wakeup: asyncio.Event | None = None,
        per_destination_max: int = OUTBOX_PER_DESTINATION_MAX,
        in_flight_max: int = OUTBOX_IN_FLIGHT_MAX,
        batch_max: int = OUTBOX_BATCH_MAX,
    ) -> None:
        assert 0 < per_destination_max <= in_flight_max
        self.channel = channel
        self.clock = clock
        self.wakeup = wakeup if wakeup is not None else asyncio.Event()
        self.per_destination_max = per_destination_max
        self.in_flight_max = in_flight_max
        self.batch_max = batch_max
        self.delivered_count = 0
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._sending: Counter[str] = Counter()
        self._backed_off_until: dict[str, int] = {}
        # Ids whose delivery ended while the outbox was being read: that read may still
        # list them as due, and they must not go out a second time.
        self._ended_while_reading: set[int] | None = None
        self._held_back = False
        # Acknowledged, delivery not yet recorded (not sent again meanwhile); and of those,
        # the ones waiting for the next `delivered` write.
        self._acknowledged: set[int] = set()
        self._to_mark: list[OutboxMessage] = []
        self._marker: asyncio.Task[None] | None = None
        self._running = False  # `run` is delivering: offered messages may start at once
        # Offered messages waiting for a slot, per destination, and all their ids.
        self._waiting: dict[str, deque[OutboxMessage]] = {}
        self._waiting_ids: set[int] = set()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def in_flight_to(self, destination: str) -> int:
        return self._sending[destination]

    async def start_due(self) -> int:
        """Start delivering what is due and may start now; returns how many started."""
        now = self.clock.now()
        self._ended_while_reading = set()
        try:
            due = await self.channel.due(now, self.batch_max)
        finally:
            ended, self._ended_while_reading = self._ended_while_reading, None
        started, held_back = 0, False
        for message in due:
            message_id, destination = message["message_id"], message["destination"]
            if (
                message_id in self._tasks
                or message_id in ended
                or message_id in self._acknowledged
                or message_id in self._waiting_ids
            ):
                continue
            until = self._backed_off_until.get(destination)
            if until is not None and now < until:
                await self.channel.retry_later(message, message["attempts"] + 1, until, None)
                continue
            if not self._may_start(destination):
                # Waits in memory with what was offered, in turn; beyond the bound, for
                # the next look (woken when a slot frees).
                if not self._wait(message):
                    held_back = True
                continue
            self._start(message)
            started += 1
        self._held_back = held_back
        return started

    def offer(self, messages: list[OutboxMessage]) -> None:
        """Messages this process just queued, their transaction committed: each starts now
        if it may (as `start_due` would start it), else waits in memory for a slot; one
        backed off, or beyond the memory bound, at the next look, which is woken for it.
        Outside `run` only the wake-up."""
        now = self.clock.now()
        for message in messages:
            message_id, destination = message["message_id"], message["destination"]
            if (
                message_id in self._tasks
                or message_id in self._acknowledged
                or message_id in self._waiting_ids
            ):
                continue
            until = self._backed_off_until.get(destination)
            if not self._running or (until is not None and now < until):
                self.wakeup.set()
            elif self._may_start(destination):
                self._start(message)
            elif not self._wait(message):
                self.wakeup.set()

    def _backed_off(self, destination: str) -> bool:
        until = self._backed_off_until.get(destination)
        return until is not None and self.clock.now() < until

    def _may_start(self, destination: str) -> bool:
        return (
            len(self._tasks) < self.in_flight_max
            and self._sending[destination] < self.per_destination_max
        )

    def _wait(self, message: OutboxMessage) -> bool:
        """Keep a message for a free slot, after those already waiting for its destination;
        False if the memory queue is full."""
        if len(self._waiting_ids) >= OUTBOX_WAITING_MAX:
            return False
        self._waiting.setdefault(message["destination"], deque()).append(message)
        self._waiting_ids.add(message["message_id"])
        return True

    def _start_waiting(self) -> None:
        """Start waiting messages while slots are free: oldest first per destination, one
        destination after the other (a served one goes to the back of the turn)."""
        progress = True
        while progress and self._waiting and len(self._tasks) < self.in_flight_max:
            progress = False
            for destination in list(self._waiting):
                if not self._may_start(destination) or self._backed_off(destination):
                    continue
                queue = self._waiting.pop(destination)
                message = queue.popleft()
                self._waiting_ids.discard(message["message_id"])
                self._start(message)
                progress = True
                if queue:
                    self._waiting[destination] = queue  # to the back of the turn
                if len(self._tasks) >= self.in_flight_max:
                    return

    def _drop_waiting(self, destination: str) -> list[OutboxMessage]:
        """What waited for a destination, no longer waiting (left to the polls)."""
        dropped = list(self._waiting.pop(destination, ()))
        for message in dropped:
            self._waiting_ids.discard(message["message_id"])
        return dropped

    def _start(self, message: OutboxMessage) -> None:
        message_id, destination = message["message_id"], message["destination"]
        self._sending[destination] += 1
        task = asyncio.create_task(self._deliver(message))
        self._tasks[message_id] = task

        def ended(_: asyncio.Task[None]) -> None:
            self._tasks.pop(message_id, None)
            self._sending[destination] -= 1
            if self._sending[destination] <= 0:
                del self._sending[destination]
            if self._ended_while_reading is not None:
                self._ended_while_reading.add(message_id)
            if self._waiting:
                self._start_waiting()  # a slot is free for a message waiting for one
            if self._held_back:
                self.wakeup.set()  # a slot is free for a message that had to wait

        task.add_done_callback(ended)

    async def _deliver(self, message: OutboxMessage) -> None:
        destination = message["destination"]
        try:
            try:
                await self.channel.send(message)
            except SemopsError as error:
                attempts = message["attempts"] + 1
                at = next_attempt_at(self.clock.now(), attempts)
                until = max(at, self._backed_off_until.get(destination, at))
                self._backed_off_until[destination] = until
                # What waited for this destination is given the back-off too, as a look at
                # the outbox would (module docstring).
                dropped = self._drop_waiting(destination)
                await self.channel.retry_later(message, attempts, at, error)
                for waiting in dropped:
                    await self.channel.retry_later(waiting, waiting["attempts"] + 1, until, None)
                return
            self._backed_off_until.pop(destination, None)
            self._acknowledge(message)
        except Exception as error:  # the message stays due and is sent again later
            log.error("outbox_delivery_failed", error_type=type(error).__name__)

    def _acknowledge(self, message: OutboxMessage) -> None:
        self._acknowledged.add(message["message_id"])
        self._to_mark.append(message)
        if self._marker is None:
            self._marker = asyncio.create_task(self._mark())

    async def _mark(self) -> None:
        """Record acknowledgements, a batch per write, until none is waiting."""
        try:
            await asyncio.sleep(OUTBOX_MARK_LINGER_S)
            while self._to_mark:
                batch = self._to_mark[:OUTBOX_MARK_BATCH_MAX]
                del self._to_mark[:OUTBOX_MARK_BATCH_MAX]
                ids = [message["message_id"] for message in batch]
                try:
                    await self.channel.delivered(batch, self.clock.now())
                except Exception as error:  # still undelivered there: due again, re-sent
                    log.error("outbox_mark_failed", error_type=type(error).__name__)
                else:
                    self.delivered_count += len(batch)
                    if self._ended_while_reading is not None:
                        self._ended_while_reading.update(ids)
                finally:
                    self._acknowledged.difference_update(ids)
        finally:
            self._marker = None

    async def _marked(self) -> None:
        """Wait until every acknowledgement so far is recorded (or its write failed)."""
        while self._marker is not None:
            await asyncio.shield(self._marker)

    async def deliver_due(self) -> int:
        """One pass: deliver everything due now (bounded as always) and wait for it;
        returns how many deliveries were acknowledged meanwhile."""
        before = self.delivered_count
        for _ in range(_PASS_LOOKS_MAX):
            await self.start_due()
            if not self._held_back:
                break
            # Some had to wait for a slot (so some are in flight): look again when one ends.
            await asyncio.wait(list(self._tasks.values()), return_when=asyncio.FIRST_COMPLETED)
        while self._tasks:  # with what waited for a slot, started as the slots freed
            await asyncio.gather(*self._tasks.values())
        await self._marked()
        return self.delivered_count - before

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set: at once when woken, else every poll interval. On
        the way out deliveries still in flight are cancelled: unacknowledged, they stay in
        the outbox and go out again."""
        self._running = True
        try:
            while not stop.is_set():
                self.wakeup.clear()
                try:
                    await self.start_due()
                except Exception as error:  # keep the loop alive; the error is logged
                    log.error("outbox_failed", error_type=type(error).__name__)
                await _first_of(self.wakeup, stop, timeout_s=OUTBOX_POLL_INTERVAL_S)
        finally:
            self._running = False
            self._waiting.clear()  # still in the outbox: the next run's polls find them
            self._waiting_ids.clear()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # What was acknowledged is recorded before the loop ends (else sent again).
            with contextlib.suppress(Exception):
                await self._marked()


__all__ = [
    "OUTBOX_ATTEMPTS_WARN",
    "OUTBOX_BATCH_MAX",
    "OUTBOX_DELIVERY_TIMEOUT_S",
    "OUTBOX_IN_FLIGHT_MAX",
    "OUTBOX_MARK_BATCH_MAX",
    "OUTBOX_MARK_LINGER_S",
    "OUTBOX_PER_DESTINATION_MAX",
    "OUTBOX_POLL_INTERVAL_S",
    "OUTBOX_WAITING_MAX",
    "Deliverer",
    "OutboxChannel",
    "OutboxMessage",
    "next_attempt_at",
]
