"""A small chaos run in `make test`, on SQLite and on PostgreSQL.

Sixteen payments between customers and merchants at both processors while the proxies
drop, duplicate, delay and reorder messages and two services are killed with SIGKILL and
restarted. The harness's own checks (tests/chaos/test_faults.py shows they catch each kind
of damage) must find every payment complete or absent on every side and the money
conserved. The large run is `semops chaos` (figures in the README).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from semops.devnet.chaos import SERVICES, ChaosSettings, run_chaos
from tests.databases import BACKENDS, postgres_or_skip

pytestmark = pytest.mark.timeout(420)


@pytest.mark.parametrize("backend", BACKENDS)
def test_payments_survive_faults_and_kills(backend: str, tmp_path: Path) -> None:
    databases = postgres_or_skip() if backend == "postgresql" else None
    db_urls = databases.make(list(SERVICES)) if databases is not None else None
    settings = ChaosSettings(payments=16, concurrency=4, faults=24, kills=2, seed=7)
    try:
        report = asyncio.run(run_chaos(tmp_path, settings, db_urls))
    finally:
        if databases is not None:
            databases.drop()
    print(report.summary())  # kept in the test output: what was injected, what was checked
    assert report.ok, report.summary()
    assert report.attempts == 16
    assert report.completed + report.failed + report.not_ordered == 16
    assert report.completed > 0
    assert len(report.kills) == 2
    assert sum(count for kind, count in report.faults.items() if ":" not in kind) > 0
    checked = sum(count for kind, count in report.checked.items() if kind != "ledgers")
    assert checked == 16
    assert report.checked["ledgers"] == 2
