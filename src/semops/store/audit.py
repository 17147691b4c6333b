"""The audit_log table every service keeps, and the few queries on it.

audit_log   the hash-chained, append-only log of `semops.audit.chain`: one row per entry,
            `seq` from 1 without gaps, `data` as canonical JSON text. Rows are only ever
            inserted (the migrations add a trigger that refuses UPDATE and DELETE).

An entry is appended inside the transaction of the action it records. Appends must see
the newest entry and none may interleave: SQLite writers are serialised already; on
PostgreSQL a transaction-scoped advisory lock orders them, taken just before the append
(the last statement of the transaction) so it is held for as short a time as possible.
`insert_after` lets a writer that remembers the head append in one statement (the lock
included): the row goes in only if the head it names is still the newest entry.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Insert,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    exists,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from semops.store import prepared
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


_LOCK: Final = text("SELECT pg_advisory_xact_lock(:key)")


@functools.cache
def _last_entry(table: Table) -> Select[Any]:
    return select(table.c.seq, table.c.hash, table.c.kind).order_by(table.c.seq.desc()).limit(1)


@functools.cache
def _insert(table: Table) -> Insert:
    return insert(table)


@functools.cache
def _insert_after(table: Table, dialect: str) -> Any:
    # INSERT ... SELECT <the row> WHERE EXISTS (<the head, as named>) ON CONFLICT DO NOTHING:
    # nothing is inserted if the head is not there (an append of a transaction that rolled
    # back) or if its successor is (another writer appended meanwhile: seq is the key).
    # On PostgreSQL the row comes from a subquery that takes the appenders' advisory lock,
    # so the lock and the append are one round trip. The EXISTS may see a snapshot from
    # before the lock was granted; that is safe: an entry another appender committed while
    # we waited has our seq, and the key check (against what is committed, not the
    # snapshot) makes this a no-op.
    head = table.alias("head")
    names = [column.name for column in table.c]
    row = select(*(prepared.param(table.c[name]) for name in names)).where(
        exists().where(
            head.c.seq == prepared.param(table.c.seq, "head_seq"),
            head.c.hash == prepared.param(table.c.hash, "head_hash"),
        )
    )
    if dialect == "postgresql":
        locked = select(func.pg_advisory_xact_lock(bindparam("b_lock_key", type_=BigInteger)))
        row = row.select_from(locked.subquery("appending"))
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert_for(table).from_select(names, row).on_conflict_do_nothing().returning(table.c.seq)


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


async def insert_after(
    connection: Connection, table: Table, row: dict[str, Any], head: tuple[int, str]
) -> bool:
    """INSERT the entry `row` (the successor of `head`, its (seq, hash)) if `head` is still
    the newest entry; False, and nothing written, if it is not. One statement."""
    assert row["seq"] == head[0] + 1 and row["prev_hash"] == head[1], "not the head's successor"
    parameters = {f"b_{name}": value for name, value in row.items()}
    parameters.update(b_head_seq=head[0], b_head_hash=head[1])
    if connection.dialect.name == "postgresql":
        parameters["b_lock_key"] = _ADVISORY_LOCK_KEY
    result = await connection.execute(_insert_after(table, connection.dialect.name), parameters)
    return result.first() is not None


async def entries_after(
    connection: Connection, table: Table, after_seq: int, limit: int
) -> list[dict[str, Any]]:
    """A page of entries in seq order (the verifier reads the log in pages)."""
    result = await connection.execute(
        select(table).where(table.c.seq > after_seq).order_by(table.c.seq).limit(limit)
    )
    return [dict(row) for row in result.mappings()]
