"""Fresh PostgreSQL databases for a local network or a test run (one per service).

`semops up --postgres URL` and the PostgreSQL end-to-end tests create one database per
service on the given server, named after the run, and drop them when asked.
"""

from __future__ import annotations

import re
from typing import Final

import asyncpg
from sqlalchemy.engine import make_url

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
CONNECT_TIMEOUT_S: Final = 10


def _server_dsn(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def service_url(base_url: str, database: str) -> str:
    parsed = make_url(base_url).set(drivername="postgresql+asyncpg", database=database)
    return parsed.render_as_string(hide_password=False)


async def create_databases(base_url: str, names: list[str]) -> dict[str, str]:
    """CREATE DATABASE for each name (dropping a leftover of the same name first)."""
    for name in names:
        if not _NAME_RE.match(name):
            raise ValueError(f"not a safe database name: {name!r}")
    connection = await asyncpg.connect(_server_dsn(base_url), timeout=CONNECT_TIMEOUT_S)
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return {name: service_url(base_url, name) for name in names}


async def drop_databases(base_url: str, names: list[str]) -> None:
    connection = await asyncpg.connect(_server_dsn(base_url), timeout=CONNECT_TIMEOUT_S)
    try:
        for name in names:
            if _NAME_RE.match(name):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def server_available(base_url: str) -> bool:
    try:
        connection = await asyncpg.connect(_server_dsn(base_url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True
