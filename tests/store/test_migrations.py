"""The migrations of each service build exactly the tables its code declares.

A column or index added to a table in semops.store.<service> without a revision (or a
revision that differs from the table) would work in tests that create tables from the
code and fail on a real database migrated from an older release. Alembic's own comparison
(the one `semops.store.revision` autogenerates from) must find nothing to do at head.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from semops.store.migrate import SERVICES, _upgrade


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_at_head_match_the_declared_tables(service: str, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'scratch.db'}")
    try:
        with engine.begin() as connection:
            _upgrade(connection, service)
            tables = importlib.import_module(f"semops.store.{service}")
            context = MigrationContext.configure(connection)
            assert compare_metadata(context, tables.metadata) == []
    finally:
        engine.dispose()
