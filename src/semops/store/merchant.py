"""The merchant backend's tables and the queries on them. The only place its SQL lives.

orders    one row per checkout order. Written (state `creating`, with its idempotency key
          and content digest) *before* the payment request is asked of the processor, so a
          lost answer is retried with the same key and never creates a second request. The
          basket stays here; only its digest goes to the processor. When paid, the row
          keeps the processor's signed PaymentNotice: the guarantee, nothing about the payer.
refunds   refunds the merchant asked for, by a refund id made and stored before the call,
          with the caller's Idempotency-Key and the digest of what it asked: the same key
          finds the same refund (and its refund id, the one the processor knows) for ever.
sessions  signed-in shop pages: the SHA-256 of each session cookie (never the cookie), the
          API token it was opened under (a digest) and its absolute expiry. Logout deletes
          the row; rotating the token ends every session.
notices   every verified PaymentNotice received (webhook or poll), matched or not, keyed by
          transfer id: a re-delivery finds its row and changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)

from semops.core.limits import ORDERS_PAGE_MAX
from semops.store.db import Connection

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("idempotency_key", String(64), nullable=False, unique=True),
    Column("content_digest", String(43), nullable=False),
    Column("request_id", String(64), nullable=True, unique=True),
    Column("token", Text, nullable=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reference", String(35), nullable=True),
    Column("basket", Text, nullable=True),  # JSON lines; never sent anywhere
    Column("basket_digest", String(43), nullable=True),
    Column("ttl_s", Integer, nullable=False),
    Column("state", String(24), nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("paid_at", BigInteger, nullable=True),
    Column("transfer_id", String(64), nullable=True),
    Column("notice", Text, nullable=True),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("polled_at", BigInteger, nullable=False),
    Index("ix_orders_state_polled", "state", "polled_at"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("order_id", String(64), ForeignKey("orders.order_id"), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("reason", String(200), nullable=True),
    Column("state", String(16), nullable=False),  # requested | sent | in_doubt | completed | failed
    Column("error_code", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    # The caller's key (None only on refunds made before keys were required).
    Column("idempotency_key", String(64), nullable=True),
    Column("content_digest", String(43), nullable=True),
    Index("ix_refunds_order", "order_id"),
    Index("ux_refunds_idempotency_key", "idempotency_key", unique=True),
    Index("ix_refunds_state", "state"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("session_digest", String(64), primary_key=True),  # SHA-256 hex of the cookie
    Column("token_digest", String(64), nullable=False),  # SHA-256 hex of the API token
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index("ix_sessions_expires", "expires_at"),
)

notices = Table(
    "notices",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("token", Text, nullable=False),
    Column("order_id", String(64), nullable=True),  # None: no order of ours asked for it
    Column("received_at", BigInteger, nullable=False),
    Index("ix_notices_request", "request_id"),
)

# Refund states in which the outcome is not known yet: asked again by the poller.
REFUND_UNSETTLED = ("requested", "sent", "in_doubt")


# --- Queries ------------------------------------------------------------------------------
# Every function takes an open connection: the caller decides the transaction boundary.


async def insert_order(connection: Connection, row: dict[str, Any]) -> None:
    await connection.execute(insert(orders).values(**row))


async def get_order(
    connection: Connection, order_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(orders).where(orders.c.order_id == order_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def get_order_by_key(connection: Connection, idempotency_key: str) -> dict[str, Any] | None:
    result = await connection.execute(
        select(orders).where(orders.c.idempotency_key == idempotency_key)
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def get_order_by_request(connection: Connection, request_id: str) -> dict[str, Any] | None:
    result = await connection.execute(select(orders).where(orders.c.request_id == request_id))
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def update_order(
    connection: Connection, order_id: str, expected_state: str, values: dict[str, Any]
) -> bool:
    """Change an order only if it is still in `expected_state` (false if it moved)."""
    result = await connection.execute(
        update(orders)
        .where(orders.c.order_id == order_id, orders.c.state == expected_state)
        .values(**values)
    )
    return bool(result.rowcount == 1)


async def forget_unanswered_order(connection: Connection, order_id: str) -> bool:
    """Remove an order the processor refused at once (still CREATING: nothing else refers
    to it), so refused input leaves no trace; False if it moved meanwhile."""
    result = await connection.execute(
        delete(orders).where(orders.c.order_id == order_id, orders.c.state == "creating")
    )
    return bool(result.rowcount == 1)


async def mark_polled(connection: Connection, order_id: str, now: int) -> None:
    await connection.execute(
        update(orders).where(orders.c.order_id == order_id).values(polled_at=now)
    )


async def orders_to_poll(
    connection: Connection, states: tuple[str, ...], polled_before: int, limit: int
) -> list[dict[str, Any]]:
    """Orders waiting for news (longest-waiting first), plus paid ones with open refunds."""
    unsettled = (
        select(refunds.c.order_id).where(refunds.c.state.in_(REFUND_UNSETTLED)).scalar_subquery()
    )
    result = await connection.execute(
        select(orders)
        .where(
            or_(orders.c.state.in_(states), orders.c.order_id.in_(unsettled)),
            orders.c.polled_at < polled_before,
        )
        .order_by(orders.c.polled_at, orders.c.order_id)
        .limit(min(limit, ORDERS_PAGE_MAX))
    )
    return [dict(row) for row in result.mappings()]


async def list_orders(
    connection: Connection, before: tuple[int, str] | None, limit: int
) -> list[dict[str, Any]]:
    """A page of orders, newest first; `before` is the (created_at, order_id) of the last
    row of the previous page (keyset paging: stable while new orders arrive)."""
    query = select(orders).order_by(orders.c.created_at.desc(), orders.c.order_id.desc())
    if before is not None:
        created_at, order_id = before
        query = query.where(
            or_(
                orders.c.created_at < created_at,
                and_(orders.c.created_at == created_at, orders.c.order_id < order_id),
            )
        )
    result = await connection.execute(query.limit(max(1, min(limit, ORDERS_PAGE_MAX))))
    return [dict(row) for row in result.mappings()]


async def refund_totals(
    connection: Connection, order_ids: list[str], states: tuple[str, ...]
) -> dict[str, int]:
    """For each of the orders, the sum of its refunds in the given states (absent: 0)."""
    if not order_ids:
        return {}
    result = await connection.execute(
        select(refunds.c.order_id, func.sum(refunds.c.amount_minor))
        .where(refunds.c.order_id.in_(order_ids[:ORDERS_PAGE_MAX]), refunds.c.state.in_(states))
        .group_by(refunds.c.order_id)
    )
    return {order_id: int(total) for order_id, total in result.all()}


async def insert_refund(connection: Connection, row: dict[str, Any]) -> None:
    await connection.execute(insert(refunds).values(**row))


async def get_refund(
    connection: Connection, refund_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    """A refund; `for_update` locks it to the end of the transaction (PostgreSQL)."""
    query = select(refunds).where(refunds.c.refund_id == refund_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def update_refund(connection: Connection, refund_id: str, values: dict[str, Any]) -> None:
    await connection.execute(
        update(refunds).where(refunds.c.refund_id == refund_id).values(**values)
    )


async def get_refund_by_key(connection: Connection, idempotency_key: str) -> dict[str, Any] | None:
    result = await connection.execute(
        select(refunds).where(refunds.c.idempotency_key == idempotency_key)
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def refunds_of(connection: Connection, order_id: str) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(refunds)
        .where(refunds.c.order_id == order_id)
        .order_by(refunds.c.created_at, refunds.c.refund_id)
        .limit(ORDERS_PAGE_MAX)
    )
    return [dict(row) for row in result.mappings()]


async def refund_total(connection: Connection, order_id: str, states: tuple[str, ...]) -> int:
    """The sum of an order's refunds in the given states."""
    result = await connection.execute(
        select(func.coalesce(func.sum(refunds.c.amount_minor), 0)).where(
            refunds.c.order_id == order_id, refunds.c.state.in_(states)
        )
    )
    return int(result.scalar_one())


async def open_session(
    connection: Connection, row: dict[str, Any], now: int, sessions_max: int
) -> None:
    """Store a new session; first drop expired ones, then the oldest beyond the bound."""
    await connection.execute(delete(sessions).where(sessions.c.expires_at <= now))
    kept = (
        select(sessions.c.session_digest)
        .order_by(sessions.c.created_at.desc(), sessions.c.session_digest.desc())
        .limit(max(0, sessions_max - 1))
    )
    await connection.execute(delete(sessions).where(sessions.c.session_digest.not_in(kept)))
    await connection.execute(insert(sessions).values(**row))


async def get_session(connection: Connection, session_digest: str) -> dict[str, Any] | None:
    result = await connection.execute(
        select(sessions).where(sessions.c.session_digest == session_digest)
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def close_session(connection: Connection, session_digest: str) -> None:
    await connection.execute(delete(sessions).where(sessions.c.session_digest == session_digest))


async def save_notice(connection: Connection, row: dict[str, Any]) -> bool:
    """Store a verified notice once; false if its transfer was already recorded."""
    existing = await connection.execute(
        select(notices.c.transfer_id).where(notices.c.transfer_id == row["transfer_id"])
    )
    if existing.first() is not None:
        return False
    await connection.execute(insert(notices).values(**row))
    return True


async def get_notice(connection: Connection, transfer_id: str) -> dict[str, Any] | None:
    result = await connection.execute(select(notices).where(notices.c.transfer_id == transfer_id))
    row = result.mappings().first()
    return dict(row) if row is not None else None


__all__ = [
    "REFUND_UNSETTLED",
    "close_session",
    "get_notice",
    "get_order",
    "get_order_by_key",
    "get_order_by_request",
    "get_refund",
    "get_refund_by_key",
    "get_session",
    "insert_order",
    "insert_refund",
    "list_orders",
    "mark_polled",
    "metadata",
    "notices",
    "open_session",
    "orders",
    "orders_to_poll",
    "refund_total",
    "refund_totals",
    "refunds",
    "refunds_of",
    "save_notice",
    "sessions",
    "update_order",
    "update_refund",
]
