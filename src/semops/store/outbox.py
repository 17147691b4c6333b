"""Queries every service's durable outbox shares (the tables differ in their payload
columns; the delivery bookkeeping is the same: attempts, next attempt, delivered)."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Insert, Integer, Select, Table, Update, bindparam, insert, select, update

from semops.store import prepared
from semops.store.db import Connection

# Every outbox table has these columns; the rest are its payload (destination and body, and
# where it goes: the router's `path`, a processor's `request_id`).
_BOOKKEEPING = frozenset(
    {"message_id", "attempts", "next_attempt_at", "delivered_at", "created_at"}
)


@functools.cache
def _enqueue(outbox: Table) -> Insert:
    payload = [column for column in outbox.c if column.key not in _BOOKKEEPING]
    return (
        insert(outbox)
        .values(
            {
                **{column.key: prepared.param(column) for column in payload},
                "attempts": 0,
                "next_attempt_at": prepared.param(outbox.c.next_attempt_at),
                "delivered_at": None,
                "created_at": prepared.param(outbox.c.created_at),
            }
        )
        .returning(outbox.c.message_id)
    )


async def enqueue(
    connection: Connection, outbox: Table, payload: dict[str, Any], now: int
) -> dict[str, Any]:
    """Queue a message (`payload`: the table's payload columns); the row as stored, its id
    from the insert, for the deliverer."""
    parameters = {f"b_{name}": value for name, value in payload.items()}
    result = await connection.execute(
        _enqueue(outbox), {**parameters, "b_next_attempt_at": now, "b_created_at": now}
    )
    return {
        "message_id": int(result.scalar_one()),
        **payload,
        "attempts": 0,
        "next_attempt_at": now,
        "delivered_at": None,
        "created_at": now,
    }


@functools.cache
def _due(outbox: Table) -> Select[Any]:
    return (
        select(outbox)
        .where(
            outbox.c.delivered_at.is_(None),
            outbox.c.next_attempt_at <= prepared.param(outbox.c.next_attempt_at),
        )
        .order_by(outbox.c.message_id)
        .limit(bindparam("b_limit", type_=Integer()))
    )


@functools.cache
def _delivered(outbox: Table) -> Update:
    return (
        update(outbox)
        .where(
            outbox.c.message_id.in_(
                bindparam("b_message_ids", expanding=True, type_=outbox.c.message_id.type)
            )
        )
        .values(delivered_at=prepared.param(outbox.c.delivered_at))
    )


@functools.cache
def _attempted(outbox: Table) -> Update:
    return (
        update(outbox)
        .where(outbox.c.message_id == prepared.param(outbox.c.message_id))
        .values(
            attempts=prepared.param(outbox.c.attempts),
            next_attempt_at=prepared.param(outbox.c.next_attempt_at),
        )
    )


async def due_messages(
    connection: Connection, outbox: Table, now: int, limit: int
) -> list[dict[str, Any]]:
    result = await connection.execute(_due(outbox), {"b_next_attempt_at": now, "b_limit": limit})
    return [dict(row) for row in result.mappings()]


async def mark_delivered(
    connection: Connection, outbox: Table, message_ids: list[int], now: int
) -> None:
    """Several acknowledged messages marked in one statement (the deliverer batches them)."""
    await connection.execute(
        _delivered(outbox), {"b_message_ids": message_ids, "b_delivered_at": now}
    )


async def mark_attempt(
    connection: Connection, outbox: Table, message_id: int, attempts: int, at: int
) -> None:
    await connection.execute(
        _attempted(outbox),
        {"b_message_id": message_id, "b_attempts": attempts, "b_next_attempt_at": at},
    )
