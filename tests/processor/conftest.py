"""Fixtures of the processor tests: an in-memory scheme, on SQLite and on PostgreSQL.

`network` runs on SQLite; tests marked `@on_both` (tests/processor/network.py) run on
PostgreSQL as well: the ones whose outcome depends on locking and transactions. PostgreSQL
is reached at SEMOPS_TEST_POSTGRES_URL (see tests/databases.py); when it is not reachable
those cases are skipped, unless SEMOPS_REQUIRE_POSTGRES=1 makes that a failure.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from semops.devnet.postgres import server_available
from tests.databases import BACKENDS, POSTGRES_URL, require_postgres
from tests.processor.network import Network


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def network(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Network]:
    backend = getattr(request, "param", "sqlite")
    assert backend in BACKENDS, backend
    postgres_url = None
    if backend == "postgresql":
        if not await server_available(POSTGRES_URL):
            message = f"PostgreSQL is not reachable at {POSTGRES_URL}"
            if require_postgres():
                pytest.fail(message)
            pytest.skip(message)
        postgres_url = POSTGRES_URL
    net = Network(tmp_path, postgres_url)
    try:
        yield net
    finally:
        await net.close()
