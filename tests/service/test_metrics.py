"""The database counters every service's /metrics shows: read from `Database.stats` only
when scraped, in a registry of each app's own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from semops.service.metrics import database_registry, render_metrics
from semops.store.db import Database, sqlite_url


def _samples(exposition: bytes) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def test_the_counters_follow_the_database_at_each_scrape(tmp_path: Path) -> None:
    async def main() -> None:
        database = Database(sqlite_url(tmp_path / "probe.db"))
        registry = database_registry(database)
        try:
            before = _samples(render_metrics(registry))
            assert before == {
                "semops_db_statements_total": 0.0,
                "semops_db_write_transactions_total": 0.0,
                "semops_db_commits_total": 0.0,
            }
            async with database.write() as connection:
                await connection.execute(text("CREATE TABLE probe (n INTEGER)"))
                await connection.execute(text("INSERT INTO probe VALUES (1)"))
            after = _samples(render_metrics(registry))
            stats = database.stats
            assert after["semops_db_statements_total"] == stats.statements >= 2
            assert after["semops_db_write_transactions_total"] == stats.writes == 1
            assert after["semops_db_commits_total"] == stats.commits >= 1
        finally:
            await database.dispose()

    asyncio.run(main())


def test_two_databases_in_one_process_have_registries_of_their_own(tmp_path: Path) -> None:
    async def main() -> None:
        first = Database(sqlite_url(tmp_path / "first.db"))
        second = Database(sqlite_url(tmp_path / "second.db"))
        try:
            first.stats.statements = 7
            assert (
                _samples(render_metrics(database_registry(first)))["semops_db_statements_total"]
                == 7.0
            )
            assert (
                _samples(render_metrics(database_registry(second)))["semops_db_statements_total"]
                == 0.0
            )
        finally:
            await first.dispose()
            await second.dispose()

    asyncio.run(main())


def test_the_service_registry_and_the_database_counters_render_as_one_text(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        database = Database(sqlite_url(tmp_path / "probe.db"))
        own = CollectorRegistry()
        Counter("semops_probe_things", "Things", registry=own).inc(3)
        try:
            samples = _samples(render_metrics(own, database_registry(database)))
            assert samples["semops_probe_things_total"] == 3.0
            assert samples["semops_db_commits_total"] == 0.0
        finally:
            await database.dispose()

    asyncio.run(main())
