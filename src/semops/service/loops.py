"""Background work a service repeats until it stops: one loop for all of it, and one
way to catch up in bounded batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from semops.store.db import Connection, Database

log = structlog.get_logger("semops.service")


async def every(
    stop: asyncio.Event, interval_s: float, work: Callable[[], Awaitable[object]]
) -> None:
    """Run `work` now and then every `interval_s` until `stop` is set. An error is logged
    (its type and stable code, never its text) and the loop goes on."""
    while not stop.is_set():
        try:
            await work()
        except Exception as error:  # keep the loop alive; the error is logged
            log.error(
                "background_failed",
                work=getattr(work, "__qualname__", "work"),
                error_type=type(error).__name__,
                code=getattr(error, "code", None),
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


async def in_batches(
    database: Database, step: Callable[[Connection], Awaitable[int]], batch_max: int
) -> int:
    """Background catch-up work (a fold, the audit chainer): `step` in a short write
    transaction of its own, again as long as it did a full batch; how much it did."""
    done = 0
    while True:
        async with database.write() as connection:
            batch = await step(connection)
        done += batch
        if batch < batch_max:
            return done
