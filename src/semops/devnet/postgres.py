"""Fresh PostgreSQL databases for a local network or a test run (one per service).

`semops chaos --postgres URL`, `semops bench --postgres URL` and the PostgreSQL end-to-end
tests create one database per service on the given server, named after the run, and drop
them when asked. A URL that is not PostgreSQL's, or a server that cannot be reached or
refuses, raises `ServerUnavailable` with a message for a person.
"""

from __future__ import annotations

import re
from typing import Any, Final

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
CONNECT_TIMEOUT_S: Final = 10


class ServerUnavailable(Exception):
    """The PostgreSQL URL is not one, or its server cannot be reached or refuses us."""


def _server_dsn(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ServerUnavailable("not a database URL (postgresql://USER@HOST:PORT/DB)") from None
    if parsed.get_backend_name() != "postgresql":
        raise ServerUnavailable(f"not a PostgreSQL URL: {parsed.get_backend_name()!r}")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a URL)"


async def _connect(base_url: str) -> Any:  # an asyncpg.Connection (asyncpg is untyped)
    dsn = _server_dsn(base_url)
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = str(error) or type(error).__name__
        raise ServerUnavailable(
            f"cannot reach PostgreSQL at {shown_url(base_url)}: {reason}"
        ) from None


def service_url(base_url: str, database: str) -> str:
    parsed = make_url(base_url).set(drivername="postgresql+asyncpg", database=database)
    return parsed.render_as_string(hide_password=False)


async def create_databases(base_url: str, names: list[str]) -> dict[str, str]:
    """CREATE DATABASE for each name (dropping a leftover of the same name first)."""
    for name in names:
        if not _NAME_RE.match(name):
            raise ValueError(f"not a safe database name: {name!r}")
    connection = await _connect(base_url)
    try:
        for name in names:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as error:  # e.g. a role without CREATEDB
        raise ServerUnavailable(
            f"cannot create databases at {shown_url(base_url)}: {error}"
        ) from None
    finally:
        await connection.close()
    return {name: service_url(base_url, name) for name in names}


async def drop_databases(base_url: str, names: list[str]) -> None:
    connection = await _connect(base_url)
    try:
        for name in names:
            if _NAME_RE.match(name):
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def server_available(base_url: str) -> bool:
    try:
        connection = await asyncpg.connect(_server_dsn(base_url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError, ServerUnavailable):
        return False
    await connection.close()
    return True
