"""Queries every service's durable outbox shares (the tables differ in their payload
columns; the delivery bookkeeping is the same: attempts, next attempt, delivered)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select, update

from semops.store.db import Connection


async def due_messages(
    connection: Connection, outbox: Table, now: int, limit: int
) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.message_id)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


async def mark_delivered(connection: Connection, outbox: Table, message_id: int, now: int) -> None:
    await connection.execute(
        update(outbox).where(outbox.c.message_id == message_id).values(delivered_at=now)
    )


async def mark_attempt(
    connection: Connection, outbox: Table, message_id: int, attempts: int, at: int
) -> None:
    await connection.execute(
        update(outbox)
        .where(outbox.c.message_id == message_id)
        .values(attempts=attempts, next_attempt_at=at)
    )
