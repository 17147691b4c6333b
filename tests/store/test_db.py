"""The SQLite write path: durable, grouped commits, savepoint isolation, no loop blocking.

Each write is a SAVEPOINT inside the open database transaction and one COMMIT makes every
write finished meanwhile durable; a `write()` returns only after its COMMIT. What is
checked here, on a real file: concurrent writes share commits, a failing write leaves the
others of its group alone and raises only once what it saw is committed, what was
acknowledged is on disk for another process, readers cannot write, and a write lock held by
another process is waited for without stopping the event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from semops.store.db import Database, sqlite_url

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _database(path: Path) -> Database:
    database = Database(sqlite_url(path))
    async with database.write() as connection:
        await connection.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"))
    return database


def _rows(path: Path) -> list[tuple[int, str]]:
    """What another connection (as after a restart) finds in the file."""
    with sqlite3.connect(path) as other:
        return sorted(other.execute("SELECT k, v FROM t").fetchall())


async def test_concurrent_writes_share_commits_and_each_is_durable_when_it_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "group.db"
    database = await _database(path)
    seen: list[int] = []

    async def one(key: int) -> None:
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (:k, 'x')"), {"k": key})
        # Acknowledged: another connection sees it now, without our process's help.
        with sqlite3.connect(path) as other:
            assert other.execute("SELECT 1 FROM t WHERE k = ?", (key,)).fetchone() == (1,)
        seen.append(key)

    before = database.stats.commits
    await asyncio.gather(*(one(key) for key in range(64)))
    assert sorted(seen) == list(range(64))
    commits = database.stats.commits - before
    assert 1 <= commits < 64  # grouped: fewer commits than writes
    assert database.stats.writes == 65
    await database.dispose()


async def test_a_failing_write_is_undone_alone_and_raises_after_its_group_commits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "undo.db"
    database = await _database(path)
    committed_when_raised: list[list[tuple[int, str]]] = []

    async def first() -> None:
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1, 'first')"))

    async def duplicate() -> None:
        try:
            async with database.write() as connection:
                await connection.execute(text("INSERT INTO t VALUES (2, 'kept?')"))
                await connection.execute(text("INSERT INTO t VALUES (1, 'again')"))
        except IntegrityError:
            # What made it fail (key 1, taken in its group) is durable by now.
            committed_when_raised.append(_rows(path))
            raise

    async def failing() -> None:
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (3, 'undone')"))
            raise RuntimeError("the action failed")

    async def last() -> None:
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (4, 'last')"))

    outcomes = await asyncio.gather(first(), duplicate(), failing(), last(), return_exceptions=True)
    assert [type(outcome).__name__ for outcome in outcomes] == [
        "NoneType",
        "IntegrityError",
        "RuntimeError",
        "NoneType",
    ]
    assert (1, "first") in committed_when_raised[0]
    assert _rows(path) == [(1, "first"), (4, "last")]
    # The connection is usable afterwards, alone too.
    with pytest.raises(RuntimeError):
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (5, 'alone')"))
            raise RuntimeError("undone")
    async with database.write() as connection:
        await connection.execute(text("INSERT INTO t VALUES (6, 'after')"))
    assert _rows(path) == [(1, "first"), (4, "last"), (6, "after")]
    await database.dispose()


async def test_commits_are_full_sync_in_wal_and_readers_cannot_write(tmp_path: Path) -> None:
    database = await _database(tmp_path / "pragmas.db")
    async with database.write() as connection:
        assert (await connection.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await connection.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
        assert (await connection.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    with pytest.raises(OperationalError, match="readonly"):
        async with database.read() as connection:
            await connection.execute(text("INSERT INTO t VALUES (1, 'through a read')"))
    async with database.read() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 0
    await database.dispose()


async def test_a_read_sees_one_snapshot_and_writes_acknowledged_before_it(
    tmp_path: Path,
) -> None:
    database = await _database(tmp_path / "snapshot.db")
    async with database.write() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1, 'a')"))
    async with database.read() as reading:
        assert (await reading.execute(text("SELECT count(*) FROM t"))).scalar() == 1
        async with database.write() as connection:
            await connection.execute(text("INSERT INTO t VALUES (2, 'b')"))
        assert (await reading.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    async with database.read() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 2
    await database.dispose()


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    database = await _database(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); print('held', flush=True)\n"
            "time.sleep(0.6); c.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    started = time.monotonic()
    async with database.write() as connection:
        await connection.execute(text("INSERT INTO t VALUES (1, 'after the other')"))
    waited = time.monotonic() - started
    ticker.cancel()
    holder.wait(10)
    assert waited >= 0.3  # it really waited for the other process
    assert ticks >= 10  # and the loop went on meanwhile
    assert _rows(path) == [(1, "after the other")]
    await database.dispose()
