"""The in-process router harness of test_windows.py as fixtures, for every module here
that drives the real `Router` over a real database on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from semops.devnet import ensure_pki
from semops.store.db import Database, sqlite_url
from tests.databases import BACKENDS, postgres_or_skip
from tests.router.test_windows import PARTIES, Scheme


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("router")
    ensure_pki(data_dir, PARTIES)
    return data_dir


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "router.db")
        return
    databases = postgres_or_skip()
    try:
        yield databases.make(["router"])["router"]
    finally:
        databases.drop()


@pytest.fixture
async def scheme(database_url: str, pki: Path) -> AsyncIterator[Scheme]:
    database = Database(database_url)
    made = Scheme(pki, database)
    try:
        await made.start()
        yield made
    finally:
        await database.dispose()
