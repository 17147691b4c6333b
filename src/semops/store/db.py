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
from typing import Any, Final, Protocol, TypeVar

import asyncpg
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Table, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.compiler import SQLCompiler

from semops.store.results import Result

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
# Prepared statements each PostgreSQL connection keeps (asyncpg's LRU by query text): the
# payment path uses a few dozen distinct statements, the back office and sweeps more.
PG_STATEMENT_CACHE_SIZE: Final = 256
# Compiled statements kept per database (SQLAlchemy's own compiled cache holds 500); one per
# statement shape, so this is reached only by statements built with varying structure.
PG_COMPILED_CACHE_MAX: Final = 500
# An idle PostgreSQL connection above what the load needs is closed after this long.
PG_IDLE_CONNECTION_S: Final = 300

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


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement compiled once for PostgreSQL: its SQL, where its parameters go, and what
    SQLAlchemy would have done to them on the way in."""

    compiled: SQLCompiler
    sql: str
    names: tuple[str, ...]  # the parameter behind $1, $2, ...
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # bind processors by position
    expanding: bool  # IN lists: the SQL and its parameters are expanded per call
    keys: tuple[str, ...] | None  # the result's column names (None: the server's)
    returns_rows: bool  # else the status line gives the rowcount


def _converts_results(type_: Any, dialect: Dialect) -> bool:
    try:
        return type_._cached_result_processor(dialect, None) is not None
    except TypeError:  # numeric types decide by the server's column type, unknown here
        return True


def _compile(
    dialect: Dialect, statement: Any, cache_key: Any, keys: tuple[str, ...], many: bool
) -> _Compiled:
    compiled = dialect.statement_compiler(
        dialect, statement, cache_key=cache_key, column_keys=list(keys), for_executemany=many
    )
    assert isinstance(compiled, SQLCompiler)
    # The tables use strings, integers and booleans, which asyncpg returns as SQLAlchemy
    # would; a type that SQLAlchemy converts on the way out (JSON, Enum, Numeric ...) or a
    # Python-side default is refused here rather than silently returned raw or skipped.
    if compiled.insert_prefetch or compiled.update_prefetch:
        raise NotImplementedError("Python-side column defaults are not run on PostgreSQL")
    for column in compiled._result_columns:
        if _converts_results(column.type, dialect):
            raise NotImplementedError(f"no result conversion for {column.type!r} on PostgreSQL")
    names = tuple(compiled.positiontup or ())
    bind = compiled._bind_processors
    expanding = bool(compiled.post_compile_params or compiled.literal_execute_params)
    crud = compiled.isinsert or compiled.isupdate or compiled.isdelete
    return _Compiled(
        compiled=compiled,
        sql=compiled.string,
        names=names,
        processors=tuple(
            (index, processor)
            for index, name in enumerate(names)
            if callable(processor := bind.get(name))
        ),
        expanding=expanding,
        keys=tuple(column.keyname for column in compiled._result_columns)
        if compiled._result_columns
        else None,
        returns_rows=not crud or bool(compiled.effective_returning),
    )


def _arguments(
    entry: _Compiled, parameters: dict[str, Any] | None, extracted: Any
) -> tuple[str, list[Any]]:
    """The SQL to send and its positional arguments, as SQLAlchemy would bind them."""
    values = entry.compiled.construct_params(parameters, extracted_parameters=extracted)
    if entry.expanding:
        state = entry.compiled._process_parameters_for_postcompile(values)
        names = state.positiontup or ()
        arguments = [state.parameters[name] for name in names]
        for index, name in enumerate(names):
            if (expanded := state.processors.get(name)) is not None:
                arguments[index] = expanded(arguments[index])
        return state.statement, arguments
    arguments = [values[name] for name in entry.names]
    for index, processor in entry.processors:
        arguments[index] = processor(arguments[index])
    return entry.sql, arguments


def _rowcount(status: str) -> int:
    """Rows touched, from the command tag (`UPDATE 3`, `INSERT 0 1`, `DELETE 0`)."""
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else -1


# asyncpg's errors, as the SQLAlchemy exceptions the callers catch (as SQLAlchemy's asyncpg
# dialect translates them; a failed serialisation or a deadlock is an OperationalError, as
# with psycopg). The first class that matches wins.
_ERRORS: Final[tuple[tuple[type[BaseException], type[sa_exc.DBAPIError]], ...]] = (
    (asyncpg.IntegrityConstraintViolationError, sa_exc.IntegrityError),
    (asyncpg.DataError, sa_exc.DataError),
    (asyncpg.SyntaxOrAccessError, sa_exc.ProgrammingError),
    (asyncpg.TransactionRollbackError, sa_exc.OperationalError),
    (asyncpg.PostgresConnectionError, sa_exc.OperationalError),
    (asyncpg.InterfaceError, sa_exc.InterfaceError),
    (OSError, sa_exc.OperationalError),
    (asyncpg.PostgresError, sa_exc.DBAPIError),
)
_DRIVER_ERRORS: Final = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def _translated(error: BaseException, sql: str, arguments: Any) -> sa_exc.DBAPIError:
    kind = next(kind for driver, kind in _ERRORS if isinstance(error, driver))
    invalidated = kind is sa_exc.OperationalError and not isinstance(error, asyncpg.PostgresError)
    return kind(sql, arguments, error, connection_invalidated=invalidated)


class _PostgresConnection:
    """An asyncpg connection behind the `Connection` API: SQLAlchemy Core statements,
    compiled once per shape, run as asyncpg's prepared statements."""

    __slots__ = ("_backend", "_connection", "dialect")

    def __init__(self, connection: Any, backend: _PostgresBackend) -> None:
        self._connection = connection
        self._backend = backend
        self.dialect = backend.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Result:
        self._backend.stats.statements += 1
        if isinstance(parameters, list | tuple):
            rows: list[dict[str, Any]] = list(parameters)
        else:
            rows = [parameters] if parameters else []
        many = len(rows) > 1
        entry, extracted = self._backend.compiled(statement, rows[0] if rows else None, many)
        if many:
            batch = [_arguments(entry, row, extracted) for row in rows]
            sql, arguments = batch[0][0], [arguments for _sql, arguments in batch]
        else:
            sql, arguments = _arguments(entry, rows[0] if rows else None, extracted)
        try:
            if many:
                await self._connection.executemany(sql, arguments)
                return Result(entry.keys, [], -1)
            if entry.returns_rows:
                records = await self._connection.fetch(sql, *arguments)
                return Result(entry.keys, records, len(records))
            status = await self._connection.execute(sql, *arguments)
            return Result(entry.keys, [], _rowcount(status))
        except _DRIVER_ERRORS as error:
            raise _translated(error, sql, arguments) from error


async def _keep_session(_connection: Any) -> None:
    """On release to the pool: nothing beyond asyncpg's ROLLBACK of an open transaction.
    (asyncpg's default reset -- RESET ALL, UNLISTEN, advisory unlock -- is a round trip per
    transaction for session state this code never sets.)"""


class _PostgresBackend:
    """A bounded asyncpg pool; a transaction per `write()`, a plain connection per `read()`."""

    def __init__(self, engine: AsyncEngine, stats: DatabaseStats) -> None:
        self.dialect: Dialect = engine.sync_engine.dialect
        self.stats = stats
        _args, self._connect_kwargs = self.dialect.create_connect_args(engine.url)
        self._pool: Any = None  # an asyncpg.Pool, made on first use (we start in sync code)
        self._creating = asyncio.Lock()
        self._compiled: dict[Any, _Compiled] = {}

    def compiled(
        self, statement: Any, parameters: dict[str, Any] | None, many: bool
    ) -> tuple[_Compiled, Any]:
        """The statement compiled for these parameter names, and its literal values.

        Keyed by SQLAlchemy's cache key (memoized on a statement built once; a few
        microseconds to compute for one built per call, a compilation costs a hundred)."""
        keys = tuple(sorted(parameters)) if parameters else ()
        cache_key = statement._generate_cache_key()
        if cache_key is None:  # not cacheable: compiled every time
            return _compile(self.dialect, statement, None, keys, many), None
        lookup = (cache_key.key, keys, many)
        entry = self._compiled.get(lookup)
        if entry is None:
            if len(self._compiled) >= PG_COMPILED_CACHE_MAX:
                del self._compiled[next(iter(self._compiled))]
            entry = _compile(self.dialect, statement, cache_key, keys, many)
            self._compiled[lookup] = entry
        return entry, cache_key.bindparams

    async def _ready(self) -> Any:
        if self._pool is None:
            async with self._creating:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        min_size=0,
                        max_size=POOL_SIZE + POOL_OVERFLOW_MAX,
                        max_inactive_connection_lifetime=PG_IDLE_CONNECTION_S,
                        statement_cache_size=PG_STATEMENT_CACHE_SIZE,
                        reset=_keep_session,
                        **self._connect_kwargs,
                    )
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = await self._ready()
        try:
            connection = await pool.acquire(timeout=POOL_TIMEOUT_S)
        except TimeoutError as timeout:
            raise sa_exc.TimeoutError(
                f"no PostgreSQL connection free within {POOL_TIMEOUT_S} s"
            ) from timeout
        except _DRIVER_ERRORS as error:
            raise _translated(error, "(connect)", ()) from error
        try:
            yield connection
        finally:
            await pool.release(connection)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[_PostgresConnection]:
        async with self._connection() as connection:
            transaction = connection.transaction(isolation="read_committed")
            try:
                await transaction.start()
            except _DRIVER_ERRORS as error:
                raise _translated(error, "BEGIN", ()) from error
            try:
                yield _PostgresConnection(connection, self)
            except BaseException:
                # The connection may be broken: then the pool replaces it on release.
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except _DRIVER_ERRORS as error:
                raise _translated(error, "COMMIT", ()) from error
            self.stats.commits += 1

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[_PostgresConnection]:
        # No transaction: each statement sees what was committed before it began, as each
        # did in the READ COMMITTED transaction that SQLAlchemy's connect() opened, without
        # its BEGIN and ROLLBACK round trips.
        async with self._connection() as connection:
            yield _PostgresConnection(connection, self)

    async def dispose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), POOL_TIMEOUT_S)
        except TimeoutError:  # a connection still checked out: closed under its user
            pool.terminate()


class Database:
    """A service's database: `write()` and `read()` transactions, in its dialect."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.stats = DatabaseStats()
        # Migrations and inspection only: never on the payment path.
        self.engine = _migration_engine(url)
        self._sqlite = _SqliteBackend(url, self.stats) if self.sqlite else None
        self._postgres = None if self.sqlite else _PostgresBackend(self.engine, self.stats)

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
