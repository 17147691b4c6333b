"""Read-only looks into each service's own database, for what no API shows.

The router has no API listing its transfers or its outbox, and a processor shows neither
the state of an order's transfer to its back office nor its inbound transfers; the tests
read those rows straight from the service's database (the SQLite file or the PostgreSQL
database of that service), the same way an operator would. Reads only: every change goes
through the services.

The services may be frozen or killed while a test looks, so each read is its own short
connection (SQLite) or a pooled connection to the PostgreSQL server (which stays up).
Queries run on one private event loop in a background thread, so they can be made from
plain test code and from the relay's threads alike.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from semops.store.db import is_sqlite, sqlite_url

T = TypeVar("T")
QUERY_TIMEOUT_S: Final = 20.0


class Peek:
    def __init__(self, data_dir: Path, db_urls: dict[str, str]) -> None:
        self._data_dir = data_dir
        self._db_urls = db_urls
        self._engines: dict[str, AsyncEngine] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()

    def _url(self, service: str) -> str:
        url = self._db_urls.get(service)
        return url or sqlite_url(self._data_dir / service / f"{service}.db")

    def _engine(self, service: str) -> AsyncEngine:
        with self._lock:
            if service not in self._engines:
                url = self._url(service)
                if is_sqlite(url):
                    engine = create_async_engine(url, poolclass=NullPool)
                else:
                    engine = create_async_engine(url, pool_size=2, pool_pre_ping=True)
                self._engines[service] = engine
            return self._engines[service]

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(QUERY_TIMEOUT_S)

    def rows(self, service: str, sql: str, **params: Any) -> list[dict[str, Any]]:
        engine = self._engine(service)

        async def query() -> list[dict[str, Any]]:
            async with engine.connect() as connection:
                result = await connection.execute(text(sql), params)
                return [dict(row) for row in result.mappings()]

        return self._run(query())

    def row(self, service: str, sql: str, **params: Any) -> dict[str, Any] | None:
        found = self.rows(service, sql, **params)
        assert len(found) <= 1, f"expected at most one row, got {len(found)}"
        return found[0] if found else None

    def scalar(self, service: str, sql: str, **params: Any) -> Any:
        found = self.rows(service, sql, **params)
        assert len(found) == 1
        return next(iter(found[0].values()))

    def close(self) -> None:
        async def dispose() -> None:
            for engine in self._engines.values():
                await engine.dispose()

        self._run(dispose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
