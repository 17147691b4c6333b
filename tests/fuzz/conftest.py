"""One network per database backend for the whole fuzz package: the router, bank-a, mno-b
and a merchant backend as real processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semops.devnet.network import PROCESSORS, ROUTER_ID
from tests.databases import BACKENDS, postgres_or_skip

from .support import FuzzNetwork


@pytest.fixture(scope="package", params=BACKENDS)
def fuzz_net(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuzzNetwork]:
    databases = postgres_or_skip() if request.param == "postgresql" else None
    services = [ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS), "merchant"]
    db_urls = databases.make(services) if databases is not None else None
    net = FuzzNetwork(tmp_path_factory.mktemp(f"fuzz-{request.param}"), db_urls)
    try:
        net.start()
        yield net
    finally:
        net.stop()
        if databases is not None:
            databases.drop()
