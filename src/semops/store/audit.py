"""The audit_log table every service keeps, and the few queries on it.

audit_log   the hash-chained, append-only log of `semops.audit.chain`: one row per entry,
            `seq` from 1 without gaps, `data` as canonical JSON text. Rows are only ever
            inserted (the migrations add a trigger that refuses UPDATE and DELETE).

audit_pending  entries staged by the transactions of the actions they record, not chained
            yet: `id` in the order they were staged, the entry's `at`, `kind`, `actor`,
            `data`. The chainer takes them out in id order and appends them to audit_log.

An entry is staged inside the transaction of the action it records (one INSERT, no lock,
no head to read): a payment's commit never waits for another's. Chaining -- appending to
audit_log -- must see the newest entry and no two may interleave: SQLite writers are
serialised already; on PostgreSQL a transaction-scoped advisory lock orders them. The
chainer (`take_pending` + `insert_entries` under that lock) runs in the background and
before any append made in place (operator actions, seals), so the log keeps the order in
which entries were staged, except between transactions that overlapped.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Insert,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
)

from semops.store import prepared
from semops.store.db import Connection

# Any fixed number works: each service has its own database, so no two services share it.
_ADVISORY_LOCK_KEY: Final = 0x5E0A0D17
TABLE_NAME: Final = "audit_log"
PENDING_TABLE_NAME: Final = "audit_pending"


def audit_table(metadata: MetaData) -> Table:
    return Table(
        TABLE_NAME,
        metadata,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("at", BigInteger, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("actor", String(64), nullable=False),
        Column("data", Text, nullable=False),
        Column("prev_hash", String(43), nullable=False),
        Column("hash", String(43), nullable=False),
    )


def audit_pending_table(metadata: MetaData) -> Table:
    return Table(
        PENDING_TABLE_NAME,
        metadata,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("at", BigInteger, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("actor", String(64), nullable=False),
        Column("data", Text, nullable=False),
    )


_LOCK: Final = text("SELECT pg_advisory_xact_lock(:key)")


@functools.cache
def _last_entry(table: Table) -> Select[Any]:
    return select(table.c.seq, table.c.hash, table.c.kind).order_by(table.c.seq.desc()).limit(1)


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)


@functools.cache
def _take_pending(pending: Table) -> Any:
    # One statement reads and removes, so an entry committed between a read and a delete
    # cannot be removed unread (each statement of READ COMMITTED sees a new snapshot).
    oldest = select(pending.c.id).order_by(pending.c.id).limit(bindparam("b_limit", type_=Integer))
    return (
        delete(pending)
        .where(pending.c.id.in_(oldest.scalar_subquery()))
        .returning(pending.c.id, pending.c.at, pending.c.kind, pending.c.actor, pending.c.data)
    )


async def lock_for_append(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(_LOCK, {"key": _ADVISORY_LOCK_KEY})


async def last_entry(connection: Connection, table: Table) -> tuple[int, str, str] | None:
    """(seq, hash, kind) of the newest entry, or None for an empty log."""
    result = await connection.execute(_last_entry(table))
    row = result.first()
    return (int(row[0]), str(row[1]), str(row[2])) if row is not None else None


async def recent_entries(connection: Connection, table: Table, limit: int) -> list[tuple[str, str]]:
    """(kind, data) of the newest entries, newest first."""
    result = await connection.execute(
        select(table.c.kind, table.c.data).order_by(table.c.seq.desc()).limit(limit)
    )
    return [(str(row[0]), str(row[1])) for row in result]


async def insert_entry(connection: Connection, table: Table, row: dict[str, Any]) -> None:
    if prepared.columns_known(table, tuple(row)):
        await connection.execute(_insert(table), row)
    else:  # SQLAlchemy's own error for an unknown column
        await connection.execute(insert(table).values(**row))


async def insert_entries(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT entries (audit_log rows, all with the same columns) in one statement."""
    if rows:
        await connection.execute(_insert(table), rows if len(rows) > 1 else rows[0])


async def stage(
    connection: Connection, pending: Table, at: int, kind: str, actor: str, data: str
) -> None:
    await connection.execute(
        _insert(pending), {"at": at, "kind": kind, "actor": actor, "data": data}
    )


async def take_pending(
    connection: Connection, pending: Table, limit: int
) -> list[tuple[int, int, str, str, str]]:
    """Remove and return the oldest staged entries, (id, at, kind, actor, data) in id
    order. Only a chainer holding the append lock calls it."""
    result = await connection.execute(_take_pending(pending), {"b_limit": limit})
    return sorted(
        (int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4])) for row in result
    )


async def count_pending(connection: Connection, pending: Table) -> int:
    result = await connection.execute(select(func.count()).select_from(pending))
    return int(result.scalar_one())


async def entries_after(
    connection: Connection, table: Table, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    """A page of entries in seq order (the verifier reads the log in pages)."""
    result = await connection.execute(
        select(table).where(table.c.seq > after_seq).order_by(table.c.seq).limit(limit)
    )
    return [dict(row) for row in result.mappings()]
