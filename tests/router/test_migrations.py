"""The router's migrations build exactly the tables the code uses (SQLite and PostgreSQL).

A table or column added to semops.store.router without a migration would only show when
an existing database meets the new code; this compares the migrated schema with the
tables' metadata, as `alembic revision --autogenerate` would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from semops.store import router as tables
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade
from tests.databases import BACKENDS, postgres_or_skip


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    return list(compare_metadata(context, tables.metadata))


@pytest.mark.parametrize("backend", BACKENDS)
def test_router_migrations_match_its_tables(backend: str, tmp_path: Path) -> None:
    databases = postgres_or_skip() if backend == "postgresql" else None
    url = databases.make(["router"])["router"] if databases else sqlite_url(tmp_path / "r.db")

    async def check() -> list[Any]:
        database = Database(url)
        try:
            await upgrade(database, "router")
            await upgrade(database, "router")  # idempotent
            async with database.engine.connect() as connection:
                return await connection.run_sync(_differences)
        finally:
            await database.dispose()

    try:
        assert asyncio.run(check()) == []
    finally:
        if databases is not None:
            databases.drop()
