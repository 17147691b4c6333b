"""Alembic environment of the router database (see semops.store.migrate)."""

from semops.store.migrate import run_env_for

run_env_for("router")
