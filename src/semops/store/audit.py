"""The audit_log table every service keeps, and the few queries on it.

audit_log   the hash-chained, append-only log of `semops.audit.chain`: one row per entry,
            `seq` from 1 without gaps, `data` as canonical JSON text. Rows are only ever
            inserted (the migrations add a trigger that refuses UPDATE and DELETE).

An entry is appended inside the transaction of the action it records. Appends must see
the newest entry and none may interleave: SQLite writers are serialised already; on
PostgreSQL a transaction-scoped advisory lock orders them, taken just before the append
(the last statement of the transaction) so it is held for as short a time as possible.
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import BigInteger, Column, MetaData, String, Table, Text, insert, select, text

from semops.store.db import Connection

# Any fixed number works: each service has its own database, so no two services share it.
_ADVISORY_LOCK_KEY: Final = 0x5E0A0D17
TABLE_NAME: Final = "audit_log"


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


async def lock_for_append(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
        )


async def last_entry(connection: Connection, table: Table) -> tuple[int, str, str] | None:
    """(seq, hash, kind) of the newest entry, or None for an empty log."""
    result = await connection.execute(
        select(table.c.seq, table.c.hash, table.c.kind).order_by(table.c.seq.desc()).limit(1)
    )
    row = result.first()
    return (int(row[0]), str(row[1]), str(row[2])) if row is not None else None


async def recent_entries(connection: Connection, table: Table, limit: int) -> list[tuple[str, str]]:
    """(kind, data) of the newest entries, newest first."""
    result = await connection.execute(
        select(table.c.kind, table.c.data).order_by(table.c.seq.desc()).limit(limit)
    )
    return [(str(row[0]), str(row[1])) for row in result]


async def insert_entry(connection: Connection, table: Table, row: dict[str, Any]) -> None:
    await connection.execute(insert(table).values(**row))


async def entries_after(
    connection: Connection, table: Table, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    """A page of entries in seq order (the verifier reads the log in pages)."""
    result = await connection.execute(
        select(table).where(table.c.seq > after_seq).order_by(table.c.seq).limit(limit)
    )
    return [dict(row) for row in result.mappings()]
