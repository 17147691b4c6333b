"""Alembic environment of the merchant database (see semops.store.migrate)."""

from semops.store.migrate import run_env_for

run_env_for("merchant")
