"""What every service's `/metrics` shows besides its own counters: what it asked of its
database (`semops.store.db.DatabaseStats`).

The counts live on the `Database` object, bumped by the store on every statement, write
transaction and commit; a collector reads them only when `/metrics` is scraped, so the
payment path pays nothing for them. Each service app has a registry of its own for them
(two apps in one test process never collide), rendered after the service's own registry.
`semops bench` reads them before and after its pay phase to report them per payment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

if TYPE_CHECKING:
    from semops.store.db import Database

# Metric names without the `_total` suffix the exposition format adds to counters.
DB_STATEMENTS: Final = "semops_db_statements"
DB_WRITE_TRANSACTIONS: Final = "semops_db_write_transactions"
DB_COMMITS: Final = "semops_db_commits"


class DatabaseCollector:
    """Prometheus counters over `database.stats`, read at scrape time."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        stats = self.database.stats  # read each time: the store may replace the object
        yield CounterMetricFamily(
            DB_STATEMENTS,
            "SQL statements executed (BEGIN and COMMIT not counted)",
            value=stats.statements,
        )
        yield CounterMetricFamily(
            DB_WRITE_TRANSACTIONS, "Write transactions begun", value=stats.writes
        )
        yield CounterMetricFamily(
            DB_COMMITS, "Commits that reached the database", value=stats.commits
        )


def database_registry(database: Database) -> CollectorRegistry:
    """A registry holding only the database counters of `database`."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseCollector(database))
    return registry


def render_metrics(*registries: CollectorRegistry) -> bytes:
    """The Prometheus text of several registries (their metric names must not overlap)."""
    return b"".join(generate_latest(registry) for registry in registries)


__all__ = [
    "DB_COMMITS",
    "DB_STATEMENTS",
    "DB_WRITE_TRANSACTIONS",
    "DatabaseCollector",
    "database_registry",
    "render_metrics",
]
