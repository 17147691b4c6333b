"""The router's tables and the queries on them. The only place the router's SQL lives.

participants  the scheme members (processors and the router itself), their certificates,
              endpoint, status and net-debit cap; the signed directory is built from here.
transfers     every payment and refund the router has seen, with its state at the commit
              point. The row is written RESERVED before the payee side is asked, and moves
              to COMMITTED or ABORTED exactly once (ROUTER_TRANSFER in protocol/states.py).
positions     each processor's net position per currency: + is owed to it, - it owes.
              Updated in the same transaction as the commit, so positions always equal
              the sum of committed transfers.
outbox        router-signed status messages waiting to be delivered to a processor that
              did not answer; re-sent until acknowledged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from semops.core.limits import DIRECTORY_ENTRIES_MAX
from semops.store.db import upsert

metadata = MetaData()

participants = Table(
    "participants",
    metadata,
    Column("participant_id", String(32), primary_key=True),
    Column("kind", String(8), nullable=False),  # bank | mno | router
    Column("display_name", String(40), nullable=False),
    Column("endpoint", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # active | suspended
    Column("sign_certificate", Text, nullable=False),
    Column("enc_certificate", Text, nullable=False),
    Column("net_debit_cap_minor", BigInteger, nullable=True),  # None: no cap configured
    Column("registered_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # payment | refund
    Column("payer_processor", String(32), nullable=False),  # who sends the money
    Column("payee_processor", String(32), nullable=False),  # who receives it
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("condition", String(43), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("fulfilment", String(43), nullable=True),
    Column("reason_code", String(64), nullable=True),
    Column("original_transfer_id", String(64), nullable=True),
    Column("content_digest", String(43), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Index("ix_transfers_state_expires", "state", "expires_at"),
    Index("ix_transfers_original", "original_transfer_id"),
)

positions = Table(
    "positions",
    metadata,
    Column("participant_id", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("net_minor", BigInteger, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("destination", String(32), nullable=False),
    Column("path", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_outbox_due", "delivered_at", "next_attempt_at"),
)


# --- Queries ------------------------------------------------------------------------------
# Every function takes an open connection: the caller decides the transaction boundary.


async def save_participant(connection: AsyncConnection, row: dict[str, Any]) -> None:
    update = {
        key: value
        for key, value in row.items()
        if key not in ("participant_id", "registered_at", "status", "net_debit_cap_minor")
    }
    await connection.execute(upsert(connection, participants, row, ["participant_id"], update))


async def list_participants(connection: AsyncConnection) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(participants).order_by(participants.c.participant_id).limit(DIRECTORY_ENTRIES_MAX)
    )
    return [dict(row) for row in result.mappings()]


async def get_participant(
    connection: AsyncConnection, participant_id: str
) -> dict[str, Any] | None:
    result = await connection.execute(
        select(participants).where(participants.c.participant_id == participant_id)
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def set_participant_status(
    connection: AsyncConnection, participant_id: str, status: str, now: int
) -> bool:
    result = await connection.execute(
        update(participants)
        .where(participants.c.participant_id == participant_id)
        .values(status=status, updated_at=now)
    )
    return result.rowcount == 1


async def set_net_debit_cap(
    connection: AsyncConnection, participant_id: str, cap_minor: int | None, now: int
) -> bool:
    result = await connection.execute(
        update(participants)
        .where(participants.c.participant_id == participant_id)
        .values(net_debit_cap_minor=cap_minor, updated_at=now)
    )
    return result.rowcount == 1


async def get_transfer(
    connection: AsyncConnection, transfer_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(transfers).where(transfers.c.transfer_id == transfer_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def insert_transfer(connection: AsyncConnection, row: dict[str, Any]) -> None:
    await connection.execute(insert(transfers).values(**row))


async def decide_transfer(
    connection: AsyncConnection,
    transfer_id: str,
    *,
    state: str,
    decided_at: int,
    fulfilment: str | None = None,
    reason_code: str | None = None,
) -> bool:
    """Move a RESERVED transfer to its final state; False if it was already decided."""
    result = await connection.execute(
        update(transfers)
        .where(transfers.c.transfer_id == transfer_id, transfers.c.state == "reserved")
        .values(state=state, decided_at=decided_at, fulfilment=fulfilment, reason_code=reason_code)
    )
    return result.rowcount == 1


async def expired_reserved(connection: AsyncConnection, now: int, limit: int) -> list[str]:
    result = await connection.execute(
        select(transfers.c.transfer_id)
        .where(transfers.c.state == "reserved", transfers.c.expires_at <= now)
        .order_by(transfers.c.expires_at)
        .limit(limit)
    )
    return [row[0] for row in result]


async def refunds_total(connection: AsyncConnection, original_transfer_id: str) -> int:
    """Refunds of a transfer that are committed or still in flight."""
    result = await connection.execute(
        select(func.coalesce(func.sum(transfers.c.amount_minor), 0)).where(
            transfers.c.original_transfer_id == original_transfer_id,
            transfers.c.kind == "refund",
            transfers.c.state.in_(("reserved", "committed")),
        )
    )
    return int(result.scalar_one())


async def adjust_position(
    connection: AsyncConnection, participant_id: str, currency: str, delta_minor: int
) -> None:
    values = {"participant_id": participant_id, "currency": currency, "net_minor": delta_minor}
    statement = upsert(
        connection,
        positions,
        values,
        ["participant_id", "currency"],
        {"net_minor": positions.c.net_minor + delta_minor},
    )
    await connection.execute(statement)


async def get_position(connection: AsyncConnection, participant_id: str, currency: str) -> int:
    result = await connection.execute(
        select(positions.c.net_minor).where(
            positions.c.participant_id == participant_id, positions.c.currency == currency
        )
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0


async def reserved_outflow(connection: AsyncConnection, participant_id: str, currency: str) -> int:
    """What a processor may still owe for payments in flight (counted against its cap)."""
    result = await connection.execute(
        select(func.coalesce(func.sum(transfers.c.amount_minor), 0)).where(
            transfers.c.payer_processor == participant_id,
            transfers.c.currency == currency,
            transfers.c.state == "reserved",
        )
    )
    return int(result.scalar_one())


async def list_positions(connection: AsyncConnection) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(positions).order_by(positions.c.participant_id, positions.c.currency)
    )
    return [dict(row) for row in result.mappings()]


async def enqueue(
    connection: AsyncConnection, destination: str, path: str, body: str, now: int
) -> None:
    await connection.execute(
        insert(outbox).values(
            destination=destination,
            path=path,
            body=body,
            attempts=0,
            next_attempt_at=now,
            delivered_at=None,
            created_at=now,
        )
    )


async def due_messages(connection: AsyncConnection, now: int, limit: int) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(outbox)
        .where(outbox.c.delivered_at.is_(None), outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.message_id)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


async def mark_delivered(connection: AsyncConnection, message_id: int, now: int) -> None:
    await connection.execute(
        update(outbox).where(outbox.c.message_id == message_id).values(delivered_at=now)
    )


async def mark_attempt(
    connection: AsyncConnection, message_id: int, attempts: int, next_attempt_at: int
) -> None:
    await connection.execute(
        update(outbox)
        .where(outbox.c.message_id == message_id)
        .values(attempts=attempts, next_attempt_at=next_attempt_at)
    )
