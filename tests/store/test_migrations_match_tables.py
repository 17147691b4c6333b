"""Each service's migrations build exactly the tables its store module declares: what a
fresh database gets from `semops … serve` is what the code queries (no column, index or
constraint only one of them knows)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from semops.store.migrate import SERVICES, alembic_config


@pytest.mark.parametrize("service", SERVICES)
def test_the_migrations_build_the_declared_tables(service: str, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    metadata = importlib.import_module(f"semops.store.{service}").metadata
    with engine.begin() as connection:
        config = alembic_config(service)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        context = MigrationContext.configure(connection)
        differences: list[Any] = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == [], differences
