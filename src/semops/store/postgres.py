"""PostgreSQL for `semops.store.db.Database`: an asyncpg pool, SQLAlchemy Core statements
compiled once per shape and run as asyncpg's prepared statements.

`Database` (store/db.py, whose docstring has the whole story) uses this on a PostgreSQL URL
only, so a service on SQLite never loads asyncpg. Results answer like SQLAlchemy's
(`semops.store.results`); asyncpg's errors are raised as the SQLAlchemy exceptions callers
catch (a unique violation is an `IntegrityError`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler

from semops.store.db import POOL_OVERFLOW_MAX, POOL_SIZE, POOL_TIMEOUT_S, DatabaseStats
from semops.store.results import Result

# Prepared statements each PostgreSQL connection keeps (asyncpg's LRU by query text): the
# payment path uses a few dozen distinct statements, the back office and sweeps more.
PG_STATEMENT_CACHE_SIZE: Final = 256
# Compiled statements kept per database (SQLAlchemy's own compiled cache holds 500); one per
# statement shape, so this is reached only by statements built with varying structure.
PG_COMPILED_CACHE_MAX: Final = 500
# An idle PostgreSQL connection above what the load needs is closed after this long.
PG_IDLE_CONNECTION_S: Final = 300


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

    def __init__(self, connection: Any, backend: PostgresBackend) -> None:
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


class PostgresBackend:
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


__all__ = ["PostgresBackend"]
