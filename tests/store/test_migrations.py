"""The migrations of each service build exactly the tables its code declares, on SQLite and
on PostgreSQL.

A column or index added to a table in semops.store.<service> without a revision (or a
revision that differs from the table) would work in tests that create tables from the code
and fail on a real database migrated from an older release. Alembic's own comparison (the
one `semops.store.revision` autogenerates from) must find nothing to do at head, and
migrating again must change nothing.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from semops.store.db import Database, sqlite_url
from semops.store.migrate import SERVICES, upgrade
from tests.databases import BACKENDS, postgres_or_skip


def _differences(service: str, connection: Connection) -> list[Any]:
    tables = importlib.import_module(f"semops.store.{service}")
    return list(compare_metadata(MigrationContext.configure(connection), tables.metadata))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("service", SERVICES)
def test_migrations_at_head_match_the_declared_tables(
    service: str, backend: str, tmp_path: Path
) -> None:
    databases = postgres_or_skip() if backend == "postgresql" else None
    url = databases.make([service])[service] if databases else sqlite_url(tmp_path / "m.db")

    async def check() -> list[Any]:
        database = Database(url)
        try:
            await upgrade(database, service)
            await upgrade(database, service)  # checked, not re-run
            async with database.engine.connect() as connection:
                return await connection.run_sync(lambda sync: _differences(service, sync))
        finally:
            await database.dispose()

    try:
        assert asyncio.run(check()) == []
    finally:
        if databases is not None:
            databases.drop()
