"""Alembic environment of the router database (see semops.store.migrate)."""

from semops.store.migrate import run_env
from semops.store.router import metadata

run_env(metadata)
