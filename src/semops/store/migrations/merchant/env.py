"""Alembic environment of the merchant database (see semops.store.migrate)."""

from semops.store.merchant import metadata

from semops.store.migrate import run_env

run_env(metadata)
