"""Database engines for every service: SQLite by default, PostgreSQL in production.

The only place that knows the two dialects apart. Each service has its own database, named
by a SQLAlchemy URL (`sqlite+aiosqlite:///path/bank-a.db`, `postgresql+asyncpg://host/db`).
The store functions take a `Connection` and build statements with SQLAlchemy Core; what
runs them differs:

SQLite runs in the calling thread. A statement by key costs a few microseconds in sqlite3;
handing each one to a worker thread (aiosqlite) cost a hundred times that, in thread hops
and context switches. What may block is handed off instead: taking the write lock when
another process holds it, and the commit's fsync. WAL journal (readers never block the
writer), `synchronous=FULL` (a commit the caller was told about survives power loss),
foreign keys on; reader connections are `query_only`.

Writes are serialised in the process (SQLite serialises writers anyway) and *grouped*: each
`write()` runs as a SAVEPOINT inside the open database transaction, and one COMMIT -- one
fsync -- makes every write that finished meanwhile durable at once. A `write()` returns only
after its COMMIT, so nobody is told of a change that could still be lost; a write that
fails is rolled back to its savepoint and leaves the others alone. Under load the group
grows by itself: whoever arrives during one fsync goes into the next.

PostgreSQL: an asyncpg pool per database (bounded, made on first use, no pre-ping: a broken
connection fails one call and is replaced). `write()` is one READ COMMITTED transaction,
committed when it returns and rolled back on any exception; decisions that depend on a
value take row locks (`SELECT ... FOR UPDATE`) or use conditional updates. `read()` is a
plain connection: each statement sees what was committed before it began, as in a READ
COMMITTED transaction, without BEGIN and ROLLBACK round trips. The store's SQLAlchemy Core
statements are compiled once per shape for the PostgreSQL dialect and run as asyncpg's
prepared statements (each connection caches them by their SQL); their results answer like
SQLAlchemy's (`semops.store.results`), and asyncpg's errors are raised as the SQLAlchemy
exceptions the callers catch (a unique violation is an `IntegrityError`). SQLAlchemy's async
engine (`Database.engine`) is kept for migrations and inspection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

if TYPE_CHECKING:
    from semops.store.postgres import PostgresBackend


# A payment touches a handful of rows; five seconds of waiting for the write lock means the
# process is overloaded and the caller should get a clear "try again", not a hang.
SQLITE_BUSY_TIMEOUT_MS: Final = 5000
_SQLITE_LOCK_POLL_S: Final = 0.002
# Connections per worker process: enough for concurrent requests, bounded so N workers
# times this stays under PostgreSQL's default max_connections (100).
POOL_SIZE: Final = 10
POOL_OVERFLOW_MAX: Final = 5
POOL_TIMEOUT_S: Final = 10
# Idle SQLite reader connections kept for reuse (more are opened when reads overlap).
SQLITE_READERS_KEPT: Final = 8

T = TypeVar("T")


class Connection(Protocol):
    """What the store functions need of a connection, on either backend."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Any, parameters: Any = None) -> Any: ...


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


def _sqlite_pragmas(dbapi_connection: Any, *, reader: bool) -> None:
    # We issue BEGIN ourselves: pysqlite's implicit transactions are off.
    dbapi_connection.isolation_level = None
    # The writer must not wait inside SQLite (that would stop the event loop): its
    # BEGIN IMMEDIATE fails at once when another process writes, and waits in a thread.
    busy_timeout_ms = SQLITE_BUSY_TIMEOUT_MS if reader else 0
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        f"busy_timeout={busy_timeout_ms}",
        "foreign_keys=ON",
        *(("query_only=ON",) if reader else ()),
    ):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _migration_engine(url: str) -> AsyncEngine:
    """The async engine used for migrations and inspection (never on the payment path)."""
    if is_sqlite(url):
        engine = create_async_engine(url, pool_size=1, max_overflow=0)

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_pragmas(dbapi_connection, reader=False)
            dbapi_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    backend = make_url(url).get_backend_name()
    if backend != "postgresql":
        raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")
    # A connection per use: migrations run once at start, so none is kept open beside the
    # asyncpg pool that serves the transactions.
    return create_async_engine(url, poolclass=NullPool)


@dataclass(slots=True)
class DatabaseStats:
    """What this process asked of its database since it started (the operator's metrics
    and `semops bench` report them per payment)."""

    statements: int = 0  # SQL statements executed, BEGIN/SAVEPOINT/COMMIT not counted
    writes: int = 0  # write transactions asked for (`Database.write()`)
    commits: int = 0  # COMMITs that reached the database (each one a durable sync)


class _SqliteConnection:
    """A SQLAlchemy connection run in the calling thread behind the `Connection` API."""

    __slots__ = ("_connection", "_stats", "dialect")

    def __init__(self, connection: SyncConnection, stats: DatabaseStats) -> None:
        self._connection = connection
        self._stats = stats
        self.dialect = connection.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        self._stats.statements += 1
        return self._connection.execute(statement, parameters)

    async def run_sync(self, function: Callable[..., T], *args: Any) -> T:
        return function(self._connection, *args)


def _raw(connection: SyncConnection) -> sqlite3.Connection:
    raw = connection.connection.dbapi_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


class _SqliteBackend:
    """One writer connection with group commit, and a few reader connections."""

    def __init__(self, url: str, stats: DatabaseStats) -> None:
        _create_private_file(url)
        sync_url = make_url(url).set(drivername="sqlite")
        # The commit's fsync runs in a worker thread while no one else uses the writer.
        self._engine: Engine = create_engine(
            sync_url,
            connect_args={"check_same_thread": False},
            pool_size=1,
            max_overflow=SQLITE_READERS_KEPT + POOL_SIZE,
        )
        self._stats = stats
        self._lock = asyncio.Lock()
        self._writer: _SqliteConnection | None = None
        self._open = False  # a database transaction is open on the writer
        self._group: asyncio.Future[None] | None = None  # writes waiting for the next COMMIT
        self._committer: asyncio.Task[None] | None = None
        self._readers: list[SyncConnection] = []

    def _connect(self, *, reader: bool) -> SyncConnection:
        connection = self._engine.connect()
        _sqlite_pragmas(_raw(connection), reader=reader)
        return connection

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[_SqliteConnection]:
        failed: BaseException | None = None
        async with self._lock:
            if self._writer is None:
                self._writer = _SqliteConnection(self._connect(reader=False), self._stats)
            raw = _raw(self._writer._connection)
            if not self._open:
                await self._begin(raw)
            raw.execute("SAVEPOINT semops_write")
            try:
                yield self._writer
            except BaseException as error:
                self._undo(raw)
                failed = error
            else:
                raw.execute("RELEASE semops_write")
                if self._group is None:
                    self._group = asyncio.get_running_loop().create_future()
                if self._committer is None:
                    self._committer = asyncio.create_task(self._commit(raw))
            group = self._group
        if group is not None:
            if failed is None:
                await asyncio.shield(group)
            else:
                # What made this write fail may be another write of its group (a unique
                # key it took a moment ago): wait until that is committed, so that what
                # the caller reads next agrees with the error it gets.
                await asyncio.wait([group])
        if failed is not None:
            raise failed

    async def _begin(self, raw: sqlite3.Connection) -> None:
        """Take the database's write lock; wait in a thread if another process holds it."""
        try:
            raw.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as busy:
            if busy.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            await asyncio.to_thread(_begin_waiting, raw)
        self._open = True

    def _undo(self, raw: sqlite3.Connection) -> None:
        """A write failed: forget its changes, keep those of the others in its group."""
        try:
            raw.execute("ROLLBACK TO semops_write")
            raw.execute("RELEASE semops_write")
        except sqlite3.Error:  # SQLite rolled the whole transaction back itself
            self._fail_group(raw, sqlite3.OperationalError("the database transaction failed"))
            return
        if self._group is None:  # nobody else is waiting: end the transaction now
            raw.execute("ROLLBACK")
            self._open = False

    def _fail_group(self, raw: sqlite3.Connection, error: BaseException) -> None:
        with contextlib.suppress(sqlite3.Error):
            if raw.in_transaction:
                raw.execute("ROLLBACK")
        self._open = False
        group, self._group = self._group, None
        if group is not None and not group.done():
            group.set_exception(error)

    async def _commit(self, raw: sqlite3.Connection) -> None:
        async with self._lock:
            self._committer = None
            group, self._group = self._group, None
            if group is None:  # the group failed meanwhile, and was told
                return
            committing = asyncio.ensure_future(asyncio.to_thread(raw.execute, "COMMIT"))
            cancelled = False
            try:
                await asyncio.shield(committing)
            except asyncio.CancelledError:
                # Shutting down: the thread finishes the COMMIT; learn its outcome before
                # anyone else may touch the writer connection.
                cancelled = True
                await asyncio.wait([committing])
            except Exception:  # noqa: S110 - the outcome is read from `committing` below
                pass
            self._stats.commits += 1
            failure = committing.exception()
            if failure is None:
                self._open = False
                group.set_result(None)
            else:
                self._group = group
                self._fail_group(raw, failure)
            if cancelled:
                raise asyncio.CancelledError

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[_SqliteConnection]:
        connection = self._readers.pop() if self._readers else self._connect(reader=True)
        raw = _raw(connection)
        raw.execute("BEGIN")  # one snapshot for the whole read
        try:
            yield _SqliteConnection(connection, self._stats)
        finally:
            raw.execute("ROLLBACK")
            if len(self._readers) < SQLITE_READERS_KEPT:
                self._readers.append(connection)
            else:
                connection.close()

    async def dispose(self) -> None:
        async with self._lock:  # the last group is committed first
            pass
        if self._committer is not None:
            await self._committer
        for connection in self._readers:
            connection.close()
        self._readers.clear()
        if self._writer is not None:
            self._writer._connection.close()
            self._writer = None
        self._engine.dispose()


def _begin_waiting(raw: sqlite3.Connection) -> None:
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as busy:
            if busy.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(_SQLITE_LOCK_POLL_S)


class Database:
    """A service's database: `write()` and `read()` transactions, in its dialect."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.stats = DatabaseStats()
        # Migrations and inspection only: never on the payment path.
        self.engine = _migration_engine(url)
        self._sqlite = _SqliteBackend(url, self.stats) if self.sqlite else None
        self._postgres: PostgresBackend | None = None
        if not self.sqlite:
            # Imported here: a process on SQLite never loads asyncpg.
            from semops.store.postgres import PostgresBackend

            self._postgres = PostgresBackend(self.engine, self.stats)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """One write transaction: durable when this returns, rolled back on any exception."""
        self.stats.writes += 1
        if self._sqlite is not None:
            async with self._sqlite.write() as connection:
                yield connection
            return
        assert self._postgres is not None
        async with self._postgres.write() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """Reads: one snapshot on SQLite; on PostgreSQL each statement its own (READ
        COMMITTED), as before."""
        if self._sqlite is not None:
            async with self._sqlite.read() as connection:
                yield connection
            return
        assert self._postgres is not None
        async with self._postgres.read() as connection:
            yield connection

    def for_update(self) -> bool:
        """Whether SELECT ... FOR UPDATE is meaningful (PostgreSQL) or a no-op (SQLite)."""
        return not self.sqlite

    async def dispose(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.dispose()
        if self._postgres is not None:
            await self._postgres.dispose()
        await self.engine.dispose()


def upsert(
    connection: Connection,
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
