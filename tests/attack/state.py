"""Every row of every table of each service's database: the "nothing changed" check.

A snapshot is, per service, per table, the sorted list of rows, read from outside the
services (SQLite file or PostgreSQL database), exactly as an auditor would. Two snapshots
are compared table by table so a failure names what changed.

Two things are left out, and only these: audit-log *checkpoints* and the processors' replay
cache; a processor's ledger is compared as booked, and an audit log as its entries, chained
or still staged (the background chainer moves them from audit_pending to audit_log).
A service signs its quiet log tail in the background (semops.audit.log.SEAL_AFTER_S);
a checkpoint states no new fact, it signs the hash of entries already there, so it may
appear between two snapshots without anything having happened. Every audit *entry* is
compared. `signed_calls` holds the ids of device authorisations already spent: each call a
wallet makes adds one, whatever its outcome, and the background pass forgets them as they
expire (a minute), so rows come and go on their own; a replayed copy adds none (its insert
fails on the key). Tests that are about the cache read it directly (`spent_calls`).
A processor folds its system postings into their accounts' rows in the background
(`semops.processor.accounts.fold`): a fold states no new fact either, so accounts are read
with their booked balances (the row plus the postings not folded into it) and postings
without their `folded` flag.

`settled` waits until the services are quiet (two reads in a row agree), so the work a
service finishes in the background after answering (outbox deliveries, webhooks) is part
of "before" and is not mistaken for an effect of the attack.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Final

from sqlalchemy import inspect, text

from semops.audit.chain import CHECKPOINT_KIND
from semops.store.db import Database, sqlite_url
from tests.databases import select_as_booked

Snapshot = dict[str, dict[str, list[tuple[Any, ...]]]]

SETTLE_TIMEOUT_S: Final = 30.0
UNCOMPARED_TABLES: Final = frozenset({"signed_calls"})
_SETTLE_POLL_S: Final = 0.3


def database_url(data_dir: Path, db_urls: dict[str, str], service: str) -> str:
    if service in db_urls:
        return db_urls[service]
    folder = data_dir / service
    return sqlite_url(folder / f"{Path(service).name}.db")


async def _read(url: str) -> dict[str, list[tuple[Any, ...]]]:
    database = Database(url)
    try:
        async with database.engine.connect() as inspecting:  # inspection: not the store's API
            names = await inspecting.run_sync(lambda sync: inspect(sync).get_table_names())
        async with database.read() as connection:
            tables: dict[str, list[tuple[Any, ...]]] = {}
            for name in sorted(names):
                if name in UNCOMPARED_TABLES:
                    continue
                query = select_as_booked(name, names)
                rows = (await connection.execute(text(query))).all()
                kept = [
                    tuple(row)
                    for row in rows
                    if not (name == "audit_log" and row._mapping["kind"] == CHECKPOINT_KIND)
                ]
                tables[name] = sorted(kept, key=repr)
            return tables
    finally:
        await database.dispose()


def snapshot(urls: dict[str, str]) -> Snapshot:
    async def read_all() -> Snapshot:
        return {service: await _read(url) for service, url in urls.items()}

    return asyncio.run(read_all())


def _undelivered(state: Snapshot) -> int:
    """Outbox messages still waiting (a status push or a notice not yet acknowledged)."""
    waiting = 0
    for tables in state.values():
        rows = tables.get("outbox", [])
        # message_id, destination, path/request_id, body, attempts, next_attempt_at,
        # delivered_at, created_at: delivered_at is the second to last column in both.
        waiting += sum(1 for row in rows if row[-2] is None)
    return waiting


def settled(urls: dict[str, str], timeout_s: float = SETTLE_TIMEOUT_S) -> Snapshot:
    """A snapshot taken once two consecutive reads agree and no outbox message is still
    waiting (the services are quiet: nothing they owe each other is on its way)."""
    deadline = time.monotonic() + timeout_s
    previous = snapshot(urls)
    while True:
        time.sleep(_SETTLE_POLL_S)
        current = snapshot(urls)
        if (current == previous and not _undelivered(current)) or time.monotonic() > deadline:
            return current
        previous = current


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """'service.table: +added -removed' for every table that differs."""
    found = []
    for service in sorted(set(before) | set(after)):
        old, new = before.get(service, {}), after.get(service, {})
        for table in sorted(set(old) | set(new)):
            old_rows, new_rows = set(old.get(table, [])), set(new.get(table, []))
            if old_rows != new_rows:
                added = sorted(new_rows - old_rows, key=repr)
                removed = sorted(old_rows - new_rows, key=repr)
                found.append(f"{service}.{table}: +{added} -{removed}")
    return found
