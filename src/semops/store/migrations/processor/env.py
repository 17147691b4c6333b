"""Alembic environment of the processor database (see semops.store.migrate)."""

from semops.store.processor import metadata

from semops.store.migrate import run_env

run_env(metadata)
