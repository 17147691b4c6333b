"""One recovery network per database backend, shared by every test in this package.

Starting a network costs seconds, so the tests share it; each test leaves it healthy
(nothing frozen, nothing held in the relay, every process running) whatever happened,
and each test measures money as a difference from what it found.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from semops.devnet.network import PROCESSORS, ROUTER_ID, new_layout
from tests.databases import BACKENDS, postgres_or_skip
from tests.recovery.harness import RecoveryNetwork, Scene, make_people
from tests.recovery.peek import Peek


@pytest.fixture(scope="package", params=BACKENDS)
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    databases = postgres_or_skip() if request.param == "postgresql" else None
    services = [ROUTER_ID, *(processor_id for processor_id, _, _ in PROCESSORS)]
    db_urls = databases.make(services) if databases is not None else None
    layout = new_layout(
        tmp_path_factory.mktemp(f"recovery-{request.param}"), fixed_ports=False, db_urls=db_urls
    )
    network = RecoveryNetwork(layout)
    peek = Peek(layout.root, layout.db_urls)
    current: Scene | None = None
    try:
        network.start()
        current = Scene(network, peek, make_people(network))
        yield current
    finally:
        if current is not None:
            current.heal()
            current.close()
            current.people.webhook.stop()
        network.stop()
        network.line.close()
        peek.close()
        if databases is not None:
            databases.drop()


@pytest.fixture(autouse=True)
def healed(scene: Scene) -> Iterator[None]:
    try:
        yield
    finally:
        scene.heal()
