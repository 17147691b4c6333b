"""A whole network (router, bank-a, mno-b) as real processes, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semops.devnet.network import PROCESSORS, ROUTER_ID, Network, new_layout
from tests.databases import BACKENDS, postgres_or_skip


@pytest.fixture(scope="module", params=BACKENDS)
def network(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Network]:
    databases = postgres_or_skip() if request.param == "postgresql" else None
    services = [ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS)]
    db_urls = databases.make(services) if databases is not None else None
    layout = new_layout(
        tmp_path_factory.mktemp(f"net-{request.param}"), fixed_ports=False, db_urls=db_urls
    )
    net = Network(layout)
    try:
        net.start()
        yield net
    finally:
        net.stop()
        if databases is not None:
            databases.drop()
