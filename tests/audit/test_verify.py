"""`semops audit verify` over real service databases, and the AuditLog that writes them.

A data folder laid out like a network's (DATA/pki, DATA/router, DATA/bank-a) gets real
scheme certificates and migrated databases; each service's AuditLog writes entries with
its own signing key. Then the stored rows are edited, deleted, inserted and reordered
with sqlite3 on the database file -- as someone with access to the file would, after
dropping the append-only triggers -- and `semops audit verify`, run as a subprocess,
must name the service and the first broken entry. PostgreSQL: concurrent appends from two
engines (two workers) still form one chain, and the verifier reads `db_urls`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semops.audit.chain import CHECKPOINT_EVERY, next_entry
from semops.audit.log import AuditLog
from semops.audit.verify import verify_data_dir
from semops.core.clock import FixedClock
from semops.crypto import KeyUse, private_key_for
from semops.devnet import ensure_pki
from semops.service.files import read_private_key
from semops.store import audit as store
from semops.store import processor as processor_store
from semops.store import router as router_store
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade
from tests.audit.runner import semops
from tests.databases import postgres_or_skip

START = 1_900_000_000  # a date for forged entries; real ones are dated after the PKI is made
SERVICES = {"router": "router", "bank-a": "processor"}


def _audit_log(data_dir: Path, service: str, database: Database, clock: FixedClock) -> AuditLog:
    folder = data_dir / service
    key = private_key_for(service, KeyUse.SIGN, read_private_key(folder / f"{service}.key"))
    store = router_store if service == "router" else processor_store
    return AuditLog(service, store.audit_log, store.audit_pending, database, key, clock)


async def _write_logs(data_dir: Path, entries: int) -> None:
    clock = FixedClock(int(time.time()))
    for service, kind in SERVICES.items():
        database = Database(sqlite_url(data_dir / service / f"{service}.db"))
        try:
            await upgrade(database, kind)
            audit = _audit_log(data_dir, service, database, clock)
            for index in range(entries):
                clock.advance(1)
                await audit.record(
                    "transfer_committed" if service == "router" else "order_committed",
                    service,
                    {"transfer_id": f"tr_{index:012d}", "amount_minor": 100 + index},
                )
            await audit.seal()
        finally:
            await database.dispose()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("audit") / "data"
    ensure_pki(data_dir, SERVICES)
    asyncio.run(_write_logs(data_dir, 60))  # one automatic checkpoint, one sealed tail
    return data_dir


@pytest.fixture
def data_dir(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(template, copy)
    return copy


def _tamper(data_dir: Path, service: str, *statements: str) -> None:
    with sqlite3.connect(data_dir / service / f"{service}.db") as db:
        db.execute("DROP TRIGGER audit_log_no_update")
        db.execute("DROP TRIGGER audit_log_no_delete")
        for statement in statements:
            db.execute(statement)


def _rows(data_dir: Path, service: str) -> list[sqlite3.Row]:
    with sqlite3.connect(data_dir / service / f"{service}.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM audit_log ORDER BY seq"))


def _broken(data_dir: Path) -> str:
    result = semops("audit", "verify", str(data_dir))
    assert result.returncode == 1, result.stdout
    return result.stderr


def test_clean_logs_verify(data_dir: Path) -> None:
    result = semops("audit", "verify", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "ok     router: 62 entries, 2 signed checkpoints, 0 after the last one" in result.stdout
    assert "ok     bank-a: 62 entries" in result.stdout


def test_an_edited_entry_is_named(data_dir: Path) -> None:
    _tamper(
        data_dir,
        "bank-a",
        "UPDATE audit_log SET data = replace(data, '\"amount_minor\":107', '\"amount_minor\":1') "
        "WHERE seq = 8",
    )
    assert "bank-a: entry 8: hash does not match the content (altered)" in _broken(data_dir)


def test_a_deleted_entry_is_named(data_dir: Path) -> None:
    _tamper(data_dir, "router", "DELETE FROM audit_log WHERE seq = 20")
    assert "router: entry 21: expected entry 20 here (removed or reordered)" in _broken(data_dir)


def test_an_inserted_entry_is_named_even_with_a_valid_hash(data_dir: Path) -> None:
    rows = _rows(data_dir, "router")
    forged = next_entry(
        (9, rows[8]["hash"]),
        at=START,
        kind="cap_changed",
        actor="operator",
        data={"participant_id": "bank-a", "cap_minor": 10**12},
    ).row()
    columns = ", ".join(forged)
    values = ", ".join(
        f"'{value}'" if isinstance(value, str) else str(value) for value in forged.values()
    )
    _tamper(
        data_dir,
        "router",
        # Make room at seq 10 (shift from the top down to keep seq unique), then insert.
        "UPDATE audit_log SET seq = -seq WHERE seq >= 10",
        "UPDATE audit_log SET seq = 1 - seq WHERE seq < 0",
        f"INSERT INTO audit_log ({columns}) VALUES ({values})",
    )
    expected = (
        "router: entry 11: prev_hash does not match the previous entry (inserted or reordered)"
    )
    assert expected in _broken(data_dir)


def test_reordered_entries_are_named(data_dir: Path) -> None:
    _tamper(
        data_dir,
        "bank-a",
        "UPDATE audit_log SET seq = -1 WHERE seq = 30",
        "UPDATE audit_log SET seq = 30 WHERE seq = 31",
        "UPDATE audit_log SET seq = 31 WHERE seq = -1",
    )
    expected = (
        "bank-a: entry 30: prev_hash does not match the previous entry (inserted or reordered)"
    )
    assert expected in _broken(data_dir)


def test_the_log_refuses_updates_and_deletes_at_the_database(data_dir: Path) -> None:
    with sqlite3.connect(data_dir / "router" / "router.db") as db:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit_log WHERE seq = 1")


def test_checkpoints_only_count_with_a_certificate_from_the_scheme_root(
    data_dir: Path, tmp_path: Path
) -> None:
    ensure_pki(tmp_path / "other", {"router": "router"})  # the same name, another root
    for name in ("router.crt", "router.key"):
        shutil.copy(tmp_path / "other" / "router" / name, data_dir / "router" / name)
    reports = {report.service: report for report in asyncio.run(verify_data_dir(data_dir))}
    broken = reports["router"].broken
    assert broken is not None and broken.seq == 51
    assert broken.problem == "checkpoint signature does not verify (key_unknown)"
    assert reports["bank-a"].ok


async def _entries_in_the_same_transaction_roll_back_with_it(url: str, data_dir: Path) -> int:
    database = Database(url)
    try:
        await upgrade(database, "processor")
        audit = _audit_log(data_dir, "bank-a", database, FixedClock(int(time.time())))
        with pytest.raises(RuntimeError):
            async with database.write() as connection:
                await audit.append(connection, "order_committed", "bank-a", {"amount_minor": 1})
                raise RuntimeError("the action failed")
        async with database.read() as connection:
            return len((await connection.execute(processor_store.audit_log.select())).all())
    finally:
        await database.dispose()


def test_an_entry_rolls_back_with_the_action_it_records(tmp_path: Path) -> None:
    ensure_pki(tmp_path, {"bank-a": "processor"})
    url = sqlite_url(tmp_path / "bank-a" / "bank-a.db")
    assert asyncio.run(_entries_in_the_same_transaction_roll_back_with_it(url, tmp_path)) == 0


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    databases = postgres_or_skip()
    try:
        yield databases.make(["bank-a"])["bank-a"]
    finally:
        databases.drop()


async def _concurrent_workers(url: str, data_dir: Path, per_worker: int) -> None:
    """Two workers on one database: each appends in place and stages entries, and both
    chain at the same time as they go."""
    workers = [Database(url), Database(url)]
    try:
        await upgrade(workers[0], "processor")
        logs = [_audit_log(data_dir, "bank-a", db, FixedClock(int(time.time()))) for db in workers]

        async def work(log: AuditLog, worker: int) -> None:
            for index in range(per_worker):
                data = {"amount_minor": worker * 1000 + index}
                if index % 2:
                    await log.record("order_committed", "bank-a", data)
                else:
                    async with log.database.write() as connection:
                        await log.stage(connection, "order_committed", "bank-a", data)
                    await log.chain_pending()

        await asyncio.gather(*(work(log, number) for number, log in enumerate(logs)))
        await logs[0].seal()
    finally:
        for database in workers:
            await database.dispose()


def test_postgresql_appends_from_two_workers_form_one_chain(
    postgres_url: str, tmp_path: Path
) -> None:
    ensure_pki(tmp_path, {"bank-a": "processor"})
    (tmp_path / "network.json").write_text(json.dumps({"db_urls": {"bank-a": postgres_url}}))
    asyncio.run(_concurrent_workers(postgres_url, tmp_path, CHECKPOINT_EVERY))
    (report,) = asyncio.run(verify_data_dir(tmp_path))
    # 100 entries, a checkpoint after each 50th of seq, and the final seal.
    assert report.ok, report.broken
    assert report.entries >= 2 * CHECKPOINT_EVERY + 2 and report.unsigned_tail == 0
    assert (
        asyncio.run(_entries_in_the_same_transaction_roll_back_with_it(postgres_url, tmp_path))
        == report.entries
    )


async def _twice_at_once(url: str, data_dir: Path) -> list[str]:
    database = Database(url)
    try:
        await upgrade(database, "processor")
        audit = _audit_log(data_dir, "bank-a", database, FixedClock(int(time.time())))
        failed = {"order_id": "or_000000000001", "reason_code": "transfer_rejected"}
        other = {"order_id": "or_000000000002", "reason_code": "transfer_rejected"}
        await asyncio.gather(
            *(
                audit.record_once("order_failed", "bank-a", failed, key="order_id")
                for _ in range(3)
            ),
            audit.record_once("order_failed", "bank-a", other, key="order_id"),
        )
        async with database.read() as connection:
            rows = await connection.execute(processor_store.audit_log.select())
            return [row.data for row in rows]
    finally:
        await database.dispose()


def test_an_outcome_reported_twice_at_once_is_audited_once(tmp_path: Path) -> None:
    ensure_pki(tmp_path, {"bank-a": "processor"})
    url = sqlite_url(tmp_path / "bank-a" / "bank-a.db")
    data = asyncio.run(_twice_at_once(url, tmp_path))
    assert sorted(json.loads(text)["order_id"] for text in data) == [
        "or_000000000001",
        "or_000000000002",
    ]


async def _staged_around_a_rollback(url: str, data_dir: Path) -> tuple[int, list[int]]:
    """Statements one staged entry took, and the amounts chained in order: the second of
    four is staged in a transaction that rolls back, the fourth goes in place (and so
    after every entry staged before it)."""
    database = Database(url)
    try:
        await upgrade(database, "processor")
        audit = _audit_log(data_dir, "bank-a", database, FixedClock(int(time.time())))
        async with database.write() as connection:
            before = database.stats.statements
            await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 1})
            taken = database.stats.statements - before
        with pytest.raises(RuntimeError):
            async with database.write() as connection:
                await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 2})
                raise RuntimeError("the action failed")
        async with database.write() as connection:
            await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 3})
        async with database.read() as connection:
            assert await store.count_pending(connection, processor_store.audit_pending) == 2
            assert not (await connection.execute(processor_store.audit_log.select())).all()
        await audit.record("order_committed", "bank-a", {"amount_minor": 4})
        assert await audit.chain_pending() == 0  # the in-place append chained them
        await audit.seal()
        async with database.read() as connection:
            assert await store.count_pending(connection, processor_store.audit_pending) == 0
            rows = await connection.execute(
                processor_store.audit_log.select().order_by(processor_store.audit_log.c.seq)
            )
            amounts = [
                json.loads(row.data)["amount_minor"] for row in rows if row.kind != "checkpoint"
            ]
        return taken, amounts
    finally:
        await database.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_staged_entry_is_one_statement_rolls_back_with_its_action_and_chains_in_order(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ensure_pki(tmp_path, {"bank-a": "processor"})
    if backend == "sqlite":
        url = sqlite_url(tmp_path / "bank-a" / "bank-a.db")
    else:
        url = request.getfixturevalue("postgres_url")
        (tmp_path / "network.json").write_text(json.dumps({"db_urls": {"bank-a": url}}))
    taken, amounts = asyncio.run(_staged_around_a_rollback(url, tmp_path))
    assert taken == 1  # one INSERT: no lock, no read of the head
    assert amounts == [1, 3, 4]
    (report,) = asyncio.run(verify_data_dir(tmp_path))
    assert report.ok, report.broken
    assert report.entries == 4 and report.unsigned_tail == 0


async def _a_staged_row_that_is_no_entry(url: str, data_dir: Path) -> list[str]:
    database = Database(url)
    try:
        await upgrade(database, "processor")
        audit = _audit_log(data_dir, "bank-a", database, FixedClock(int(time.time())))
        async with database.write() as connection:
            await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 1})
            # Written around the service (a database writer, an older allowlist).
            await store.stage(
                connection, processor_store.audit_pending, 1, "order_committed", "bank-a",
                '{"phone":"+4915112345678"}',
            )  # fmt: skip
            await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 2})
        assert await audit.chain_pending() == 3
        await audit.record("credential_unlocked", "operator", {"account_id": "ac_000000000001"})
        await audit.seal()
        async with database.read() as connection:
            rows = await connection.execute(
                processor_store.audit_log.select().order_by(processor_store.audit_log.c.seq)
            )
            return [f"{row.kind} {row.data}" for row in rows]
    finally:
        await database.dispose()


def test_a_staged_row_that_is_no_entry_is_replaced_and_chaining_goes_on(tmp_path: Path) -> None:
    """One bad staged row must not stop the log: it is chained as `staged_entry_refused`
    (nothing of it kept), and the entries around it, and later appends, go in."""
    ensure_pki(tmp_path, {"bank-a": "processor"})
    url = sqlite_url(tmp_path / "bank-a" / "bank-a.db")
    kinds = asyncio.run(_a_staged_row_that_is_no_entry(url, tmp_path))
    assert kinds[:4] == [
        'order_committed {"amount_minor":1}',
        "staged_entry_refused {}",
        'order_committed {"amount_minor":2}',
        'credential_unlocked {"account_id":"ac_000000000001"}',
    ]
    assert kinds[4].startswith("checkpoint") and len(kinds) == 5
    (report,) = asyncio.run(verify_data_dir(tmp_path))
    assert report.ok, report.broken


async def _stage_one(url: str, data_dir: Path) -> None:
    database = Database(url)
    try:
        audit = _audit_log(data_dir, "bank-a", database, FixedClock(int(time.time())))
        async with database.write() as connection:
            await audit.stage(connection, "order_committed", "bank-a", {"amount_minor": 7})
    finally:
        await database.dispose()


def test_the_verifier_reports_entries_staged_and_not_chained_yet(data_dir: Path) -> None:
    """A service that stopped between staging and chaining (a crash) leaves entries the
    chain does not cover yet: the auditor is told how many."""
    asyncio.run(_stage_one(sqlite_url(data_dir / "bank-a" / "bank-a.db"), data_dir))
    reports = {report.service: report for report in asyncio.run(verify_data_dir(data_dir))}
    assert reports["bank-a"].ok and reports["bank-a"].staged == 1
    assert reports["router"].staged == 0
    result = semops("audit", "verify", str(data_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 staged, not chained yet" in result.stdout
