"""Schema migrations with Alembic, one migration history per service.

Each service (router, processor, merchant) has its own database and its own folder of
revisions under `semops/store/migrations/<service>/`. Services upgrade their database to
the newest revision when they start (`semops … serve` and `semops up`); operators can run
the same step alone with `semops db upgrade`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Final

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from semops.store.db import Database

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
SERVICES: Final = ("router", "processor", "merchant")


def alembic_config(service: str) -> Config:
    if service not in SERVICES:
        raise ValueError(f"no migrations for {service!r}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR / service))
    return config


def _upgrade(connection: Connection, service: str) -> None:
    config = alembic_config(service)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(database: Database, service: str) -> None:
    """Bring the service's database to the newest revision (idempotent)."""
    async with database.engine.begin() as connection:
        await connection.run_sync(_upgrade, service)


def run_env_for(service: str) -> None:
    """The body of every service's alembic env.py: its tables, migrated online."""
    tables = importlib.import_module(f"semops.store.{service}")
    run_env(tables.metadata)


def run_env(target_metadata: Any) -> None:
    """The body of every service's alembic env.py: online migrations on a given connection."""
    from alembic import context

    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("semops migrations run through semops.store.migrate.upgrade()")
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
