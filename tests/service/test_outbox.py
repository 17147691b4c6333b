"""The outbox deliverer (semops.service.outbox) over an in-memory outbox: deliveries side by
side within their bounds, a slow or failing destination kept apart from the others, woken
at once when a message is queued, at least once and never twice for nothing."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from semops.core.clock import FixedClock
from semops.core.errors import E, SemopsError
from semops.service import outbox
from semops.service.outbox import Deliverer, next_attempt_at

pytestmark = pytest.mark.anyio
NOW = 1_900_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Outbox:
    """An outbox table and its destinations: records what is sent; a destination can be
    made to hold its deliveries (until released) or to fail them."""

    def __init__(self, clock: FixedClock) -> None:
        self.clock = clock
        self.rows: dict[int, dict[str, Any]] = {}
        self.sent: Counter[int] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.most_in_flight: Counter[str] = Counter()
        self.most_in_flight_total = 0
        self.held: dict[str, asyncio.Event] = {}
        self.failing: set[str] = set()
        self.deferred: list[int] = []
        self.reading: asyncio.Event | None = None  # when set, `due` waits for it after reading
        self.marking: asyncio.Event | None = None  # when set, `delivered` waits for it
        self.marks: list[int] = []  # messages per `delivered` call
        self.reads = 0  # calls of `due`: looks at the outbox table
        self.order: list[int] = []  # message ids in the order their sends began

    def add(self, destination: str, count: int = 1) -> list[int]:
        ids = []
        for _ in range(count):
            message_id = len(self.rows) + 1
            self.rows[message_id] = {
                "message_id": message_id,
                "destination": destination,
                "attempts": 0,
                "next_attempt_at": self.clock.now(),
                "delivered_at": None,
            }
            ids.append(message_id)
        return ids

    def hold(self, destination: str) -> asyncio.Event:
        self.held[destination] = asyncio.Event()
        return self.held[destination]

    async def due(self, now: int, limit: int) -> list[dict[str, Any]]:
        self.reads += 1
        rows = [
            dict(row)
            for row in self.rows.values()
            if row["delivered_at"] is None and row["next_attempt_at"] <= now
        ][:limit]
        if self.reading is not None:
            await self.reading.wait()
        return rows

    async def send(self, message: dict[str, Any]) -> None:
        destination = message["destination"]
        self.sent[message["message_id"]] += 1
        self.order.append(message["message_id"])
        self.in_flight[destination] += 1
        self.most_in_flight[destination] = max(
            self.most_in_flight[destination], self.in_flight[destination]
        )
        self.most_in_flight_total = max(self.most_in_flight_total, sum(self.in_flight.values()))
        try:
            if destination in self.held:
                await self.held[destination].wait()
            await asyncio.sleep(0)
            if destination in self.failing:
                raise SemopsError(E.UNAVAILABLE, "down")
        finally:
            self.in_flight[destination] -= 1

    async def delivered(self, messages: list[dict[str, Any]], now: int) -> None:
        self.marks.append(len(messages))
        if self.marking is not None:
            await self.marking.wait()
        for message in messages:
            self.rows[message["message_id"]]["delivered_at"] = now

    async def retry_later(
        self, message: dict[str, Any], attempts: int, at: int, error: SemopsError | None
    ) -> None:
        self.rows[message["message_id"]].update(attempts=attempts, next_attempt_at=at)
        if error is None:
            self.deferred.append(message["message_id"])

    def undelivered(self) -> list[int]:
        return [key for key, row in self.rows.items() if row["delivered_at"] is None]


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def box(clock: FixedClock) -> Outbox:
    return Outbox(clock)


def deliverer(box: Outbox, clock: FixedClock, **bounds: int) -> Deliverer:
    return Deliverer(box, clock, **bounds)


async def until_delivered(box: Outbox, timeout_s: float = 2.0) -> None:
    """Wait (bounded) until nothing in the outbox is undelivered; the caller asserts it."""
    for _ in range(int(timeout_s / 0.01)):
        if not box.undelivered():
            return
        await asyncio.sleep(0.01)


async def stopped(sender: Deliverer, stop: asyncio.Event, running: asyncio.Task[None]) -> None:
    """End a running deliverer's loop and wait for it."""
    stop.set()
    sender.wakeup.set()
    await asyncio.wait_for(running, 5)


async def test_a_pass_delivers_everything_due_side_by_side_within_the_bounds(
    box: Outbox, clock: FixedClock
) -> None:
    box.add("bank-a", 10)
    box.add("mno-b", 10)
    sender = deliverer(box, clock, per_destination_max=3, in_flight_max=5)
    assert await sender.deliver_due() == 20
    assert box.undelivered() == [] and set(box.sent.values()) == {1}
    assert max(box.most_in_flight.values()) == 3  # side by side, never more per destination
    assert box.most_in_flight_total == 5


async def test_a_slow_destination_does_not_hold_up_the_others(
    box: Outbox, clock: FixedClock
) -> None:
    """Issue 12: one at a time, every status waited for every one before it."""
    release = box.hold("slow")
    slow = box.add("slow", 6)
    fast = box.add("fast", 6)
    sender = deliverer(box, clock, per_destination_max=2, in_flight_max=4)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    for _ in range(200):
        await asyncio.sleep(0.01)  # marks wait OUTBOX_MARK_LINGER_S
        if not set(fast) & set(box.undelivered()):
            break
    assert not set(fast) & set(box.undelivered())  # all of them, while the slow one waits
    assert set(slow) <= set(box.undelivered()) and sender.in_flight_to("slow") == 2
    release.set()
    await until_delivered(box)
    assert box.undelivered() == []
    await stopped(sender, stop, running)


async def test_a_failing_destination_backs_off_as_a_whole(box: Outbox, clock: FixedClock) -> None:
    box.failing.add("down")
    down = box.add("down", 5)
    box.add("up", 3)
    sender = deliverer(box, clock, per_destination_max=1, in_flight_max=4)
    assert await sender.deliver_due() == 3
    assert box.sent[down[0]] == 1
    assert all(box.sent[message_id] == 0 for message_id in down[1:])  # not tried: backed off
    assert box.deferred == down[1:]
    retry_at = next_attempt_at(NOW, 1)
    assert {box.rows[message_id]["next_attempt_at"] for message_id in down} == {retry_at}
    assert await sender.deliver_due() == 0  # nothing due before the back-off ends
    box.failing.clear()
    clock.advance(retry_at - NOW)
    assert await sender.deliver_due() == 5  # never dropped: all of them, once it answers
    assert box.undelivered() == []


async def test_a_queued_message_is_sent_at_once_not_at_the_next_poll(
    box: Outbox, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    sender = deliverer(box, clock)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    await asyncio.sleep(0.01)  # it has looked once and now sleeps for an hour
    box.add("mno-b")
    sender.wakeup.set()
    for _ in range(500):
        if not box.undelivered():
            break
        await asyncio.sleep(0.01)
    assert box.undelivered() == []
    await stopped(sender, stop, running)


async def test_a_delivery_that_ends_while_the_outbox_is_read_is_not_sent_again(
    box: Outbox, clock: FixedClock
) -> None:
    (first,) = box.add("mno-b")
    sender = deliverer(box, clock)
    assert await sender.start_due() == 1
    box.reading = asyncio.Event()
    looking = asyncio.create_task(sender.start_due())  # reads `first` as due, then waits
    await asyncio.sleep(0)
    while sender.in_flight:  # meanwhile the first delivery is acknowledged
        await asyncio.sleep(0)
    box.reading.set()
    assert await looking == 0
    assert box.sent[first] == 1


async def test_a_delivery_cut_off_by_a_stop_is_sent_again(box: Outbox, clock: FixedClock) -> None:
    """At least once: an unacknowledged message stays in the outbox."""
    box.hold("mno-b")
    (message_id,) = box.add("mno-b")
    stop = asyncio.Event()
    first = deliverer(box, clock)
    running = asyncio.create_task(first.run(stop))
    while not box.sent[message_id]:
        await asyncio.sleep(0)
    stop.set()
    first.wakeup.set()
    await asyncio.wait_for(running, 5)
    assert box.undelivered() == [message_id]
    del box.held["mno-b"]
    assert await deliverer(box, clock).deliver_due() == 1
    assert box.sent[message_id] == 2


async def test_acknowledgements_within_the_linger_are_marked_by_one_write(
    box: Outbox, clock: FixedClock
) -> None:
    box.add("mno-b", 10)
    sender = deliverer(box, clock, per_destination_max=4, in_flight_max=16)
    assert await sender.deliver_due() == 10
    assert box.marks == [10] and box.undelivered() == []


async def test_acknowledgements_are_recorded_in_batches_and_never_resent_meanwhile(
    box: Outbox, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "OUTBOX_MARK_LINGER_S", 0)  # the first mark starts at once
    ids = box.add("mno-b", 10)
    box.marking = asyncio.Event()  # the first `delivered` write waits
    sender = deliverer(box, clock, per_destination_max=4, in_flight_max=16)
    passing = asyncio.create_task(sender.deliver_due())
    while sum(box.sent.values()) < 10:  # later looks at the outbox skip what is acknowledged
        await asyncio.sleep(0)
    assert len(box.marks) == 1 and box.undelivered() == ids
    box.marking.set()
    assert await passing == 10
    assert len(box.marks) == 2 and sum(box.marks) == 10  # all acknowledged meanwhile: one write
    assert box.undelivered() == [] and set(box.sent.values()) == {1}


async def test_a_failed_record_of_delivery_leaves_the_message_due_again(
    box: Outbox, clock: FixedClock
) -> None:
    [message_id] = box.add("mno-b")
    sender = deliverer(box, clock)
    original = box.delivered

    async def failing(messages: list[dict[str, Any]], now: int) -> None:
        raise RuntimeError("the database went away")

    box.delivered = failing  # type: ignore[method-assign]
    assert await sender.deliver_due() == 0
    assert box.undelivered() == [message_id]
    box.delivered = original  # type: ignore[method-assign]
    assert await sender.deliver_due() == 1
    assert box.undelivered() == [] and box.sent[message_id] == 2  # at least once


async def test_offered_messages_go_out_at_once_within_the_bounds_and_the_rest_wait_in_memory(
    box: Outbox, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    sender = deliverer(box, clock, per_destination_max=2, in_flight_max=4)
    ids = box.add("mno-b", 3)
    sender.offer([box.rows[message_id] for message_id in ids])  # not running: a wake-up only
    assert sender.in_flight == 0 and sender.wakeup.is_set()
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    await until_delivered(box)
    assert box.undelivered() == []
    release = box.hold("mno-b")
    later = box.add("mno-b", 5) + box.add("bank-c", 3)
    sender.wakeup.clear()
    reads = box.reads
    sender.offer([box.rows[message_id] for message_id in later])
    # Two start at once (the destination's bound), two to bank-c (the bound in all); the
    # rest wait in memory for a slot: no look at the outbox is needed for them.
    assert (sender.in_flight_to("mno-b"), sender.in_flight_to("bank-c")) == (2, 2)
    assert not sender.wakeup.is_set()
    release.set()
    await until_delivered(box)
    assert box.undelivered() == [] and set(box.sent.values()) == {1}  # none sent twice
    assert box.reads == reads and box.most_in_flight["mno-b"] == 2
    assert box.most_in_flight_total == 4
    await stopped(sender, stop, running)


async def test_offered_messages_waiting_for_a_failing_destination_are_left_to_the_polls(
    box: Outbox, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    sender = deliverer(box, clock, per_destination_max=1, in_flight_max=4)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    await asyncio.sleep(0.01)
    box.failing.add("mno-b")
    ids = box.add("mno-b", 3)
    sender.offer([box.rows[message_id] for message_id in ids])
    for _ in range(100):
        await asyncio.sleep(0.01)
        if sender.in_flight == 0:
            break
    # The first failed and backed the destination off: the two waiting were not sent.
    assert box.sent == Counter({ids[0]: 1})
    box.failing.clear()
    clock.advance(60)
    await sender.deliver_due()  # the poll finds all three
    assert box.undelivered() == [] and box.sent[ids[0]] == 2 and box.sent[ids[1]] == 1
    await stopped(sender, stop, running)


async def test_waiting_messages_are_served_in_turn_and_a_polled_one_waits_with_them(
    box: Outbox, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot in all: what waits for it is started destination by destination, oldest
    first; a message a poll finds (queued by another worker) waits in the same turn,
    neither starving the offered ones nor starved by them."""
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    sender = deliverer(box, clock, per_destination_max=1, in_flight_max=1)
    stop = asyncio.Event()
    running = asyncio.create_task(sender.run(stop))
    await asyncio.sleep(0.01)
    release = box.hold("mno-b")
    first = box.add("mno-b", 3)
    sender.offer([box.rows[message_id] for message_id in first])  # one starts, two wait
    (polled,) = box.add("bank-c")  # not offered: another worker's
    await sender.start_due()  # the poll finds it: the slot is taken, so it waits in turn
    later = box.add("bank-c")
    sender.offer([box.rows[message_id] for message_id in later])
    release.set()
    await until_delivered(box)
    assert box.undelivered() == [] and set(box.sent.values()) == {1}
    a1, a2, a3 = first
    assert box.order == [a1, a2, polled, a3, later[0]]  # mno-b and bank-c take turns
    await stopped(sender, stop, running)
