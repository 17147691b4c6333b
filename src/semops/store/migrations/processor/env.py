"""Alembic environment of the processor database (see semops.store.migrate)."""

from semops.store.migrate import run_env_for

run_env_for("processor")
