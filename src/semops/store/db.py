"""Database engines for every service: SQLite by default, PostgreSQL in production.

The only place that knows the two dialects apart. Each service has its own database, named
by a SQLAlchemy URL (`sqlite+aiosqlite:///path/bank-a.db`, `postgresql+asyncpg://host/db`).

SQLite: WAL journal (readers never block the writer), `busy_timeout` so a writer waits
instead of failing, foreign keys on, and write transactions opened with BEGIN IMMEDIATE so
two transactions never deadlock upgrading a read lock to a write lock. Within one process
writes are also serialised by `Database.write()`, which costs nothing SQLite would not
serialise anyway and turns lock waits into an orderly queue.

PostgreSQL: READ COMMITTED with row locks (`SELECT … FOR UPDATE`) and conditional updates
where a decision depends on a value; a bounded pool per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# A payment touches a handful of rows; five seconds of waiting for the write lock means the
# process is overloaded and the caller should get a clear "try again", not a hang.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
# Connections per worker process: enough for concurrent requests, bounded so N workers
# times this stays under PostgreSQL's default max_connections (100).
POOL_SIZE: Final = 10
POOL_OVERFLOW_MAX: Final = 5
POOL_TIMEOUT_S: Final = 10
_READ_ONLY: Final = "semops_read_only"


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _create_private_file(url: str) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use the umask, often 0644):
    a processor's database holds customer data. SQLite gives its -wal and -shm files the
    permissions of the database file."""
    database = make_url(url).database
    if not database or database == ":memory:" or os.path.exists(database):
        return
    os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_engine(url: str) -> AsyncEngine:
    _create_private_file(url)
    engine = create_async_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW_MAX)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit transactions are off).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Readers take a deferred (shared) transaction; writers the write lock up front.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=POOL_OVERFLOW_MAX,
        pool_timeout=POOL_TIMEOUT_S,
        pool_pre_ping=True,
    )


def create_engine_for(url: str) -> AsyncEngine:
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url)
    if backend == "postgresql":
        return _postgres_engine(url)
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")


@dataclass(slots=True)
class DatabaseStats:
    """What this process asked of its database since it started (the operator's metrics
    and `semops bench` report them per payment)."""

    statements: int = 0  # SQL statements executed, BEGIN/COMMIT not counted
    writes: int = 0  # write transactions asked for (`Database.write()`)
    commits: int = 0  # COMMITs that reached the database (each one a durable sync)


class Database:
    """An engine plus the write discipline of its dialect."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine_for(url)
        self.sqlite = is_sqlite(url)
        self._write_lock = asyncio.Lock() if self.sqlite else None
        self.stats = DatabaseStats()
        stats = self.stats

        @event.listens_for(self.engine.sync_engine, "before_cursor_execute")
        def _count(_connection: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
            if not statement.startswith("BEGIN"):
                stats.statements += 1

        @event.listens_for(self.engine.sync_engine, "commit")
        def _committed(*_args: Any) -> None:
            stats.commits += 1

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed on success, rolled back on any exception."""
        self.stats.writes += 1
        if self._write_lock is None:
            async with self.engine.begin() as connection:
                yield connection
            return
        async with self._write_lock, self.engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as connection:
            await connection.execution_options(**{_READ_ONLY: True})
            yield connection

    def for_update(self) -> bool:
        """Whether SELECT … FOR UPDATE is meaningful (PostgreSQL) or a no-op (SQLite)."""
        return not self.sqlite

    async def dispose(self) -> None:
        await self.engine.dispose()


def upsert(
    connection: AsyncConnection,
    table: Table,
    values: dict[str, Any],
    keys: list[str],
    update: dict[str, Any],
) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE, in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return (
            pg_insert(table)
            .values(**values)
            .on_conflict_do_update(index_elements=keys, set_=update)
        )
    return (
        sqlite_insert(table)
        .values(**values)
        .on_conflict_do_update(index_elements=keys, set_=update)
    )
