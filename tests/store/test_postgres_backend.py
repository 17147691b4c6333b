"""The PostgreSQL backend: SQLAlchemy Core statements run through asyncpg directly.

What the store code relies on, on a real server: a write is one transaction, committed
when it returns and rolled back on any exception; a unique violation is SQLAlchemy's
IntegrityError (callers stay dialect-free); RETURNING, executemany, IN lists and literal
values in statements built per call give what SQLAlchemy's own engine gives; results and
rows answer like SQLAlchemy's; the statement and commit counters count what was sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    MetaData,
    String,
    Table,
    bindparam,
    cast,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, MultipleResultsFound, NoResultFound

from semops.store.db import Database, upsert
from tests.databases import postgres_or_skip

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("item_id", String(16), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("held", Boolean, nullable=False),
)
_BY_KEY = select(items).where(items.c.item_id == bindparam("b_key", type_=items.c.item_id.type))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    databases = postgres_or_skip()
    try:
        yield databases.make(["backend"])["backend"]
    finally:
        databases.drop()


def _run(url: str, check: Callable[[Database], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        database = Database(url)
        try:
            async with database.engine.begin() as connection:
                await connection.run_sync(metadata.drop_all)
                await connection.run_sync(metadata.create_all)
            return await check(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


async def _count(database: Database) -> int:
    async with database.read() as connection:
        return int((await connection.execute(select(func.count()).select_from(items))).scalar_one())


def test_a_write_is_committed_when_it_returns_and_rolled_back_on_any_exception(url: str) -> None:
    async def check(database: Database) -> None:
        async with database.write() as connection:
            await connection.execute(insert(items), {"item_id": "a", "amount_minor": 1, "held": 0})
        with pytest.raises(RuntimeError):
            async with database.write() as connection:
                await connection.execute(
                    insert(items), {"item_id": "b", "amount_minor": 2, "held": False}
                )
                raise RuntimeError("the action failed")
        assert await _count(database) == 1
        async with database.read() as connection:
            row = (await connection.execute(_BY_KEY, {"b_key": "a"})).one()
        assert row.held is False  # the Boolean bind processor made 0 a boolean

    _run(url, check)


def test_a_unique_violation_is_an_integrity_error_and_the_pool_carries_on(url: str) -> None:
    async def check(database: Database) -> None:
        row = {"item_id": "a", "amount_minor": 1, "held": False}
        async with database.write() as connection:
            await connection.execute(insert(items), row)
        with pytest.raises(IntegrityError) as raised:
            async with database.write() as connection:
                await connection.execute(insert(items), {**row, "item_id": "b"})
                await connection.execute(insert(items), row)
        assert isinstance(raised.value.orig, asyncpg.UniqueViolationError)
        assert await _count(database) == 1  # "b" went with its transaction
        # Every connection of the pool is fine afterwards (no transaction left open).
        await asyncio.gather(*(_count(database) for _ in range(20)))

    _run(url, check)


def test_returning_rowcount_executemany_and_in_lists(url: str) -> None:
    async def check(database: Database) -> None:
        rows = [{"item_id": f"i{n}", "amount_minor": n, "held": n % 2 == 0} for n in range(5)]
        async with database.write() as connection:
            await connection.execute(insert(items), rows)
            returned = await connection.execute(
                update(items)
                .where(items.c.amount_minor >= 3)
                .values(amount_minor=items.c.amount_minor + 10)
                .returning(items.c.item_id, items.c.amount_minor)
            )
            assert sorted(returned.all()) == [("i3", 13), ("i4", 14)]
            touched = await connection.execute(update(items).values(held=True))
            assert touched.rowcount == 5
            inserted = await connection.execute(
                insert(items).returning(items.c.item_id),
                {"item_id": "new", "amount_minor": 0, "held": False},
            )
            assert inserted.scalar_one() == "new"
            await connection.execute(
                upsert(connection, items, rows[0], ["item_id"], {"amount_minor": 99})
            )
        async with database.read() as connection:
            query = select(items.c.item_id).where(items.c.item_id.in_(["i0", "i1", "none"]))
            chosen = (await connection.execute(query.order_by(items.c.item_id))).scalars().all()
            assert chosen == ["i0", "i1"]
            upserted = (await connection.execute(_BY_KEY, {"b_key": "i0"})).mappings().one()
            assert upserted == {"item_id": "i0", "amount_minor": 99, "held": True}

    _run(url, check)


def test_statements_built_per_call_carry_their_own_values(url: str) -> None:
    """Compiled once per shape: the literal values of each new statement are its own."""

    async def check(database: Database) -> None:
        async with database.write() as connection:
            for n in range(3):
                await connection.execute(
                    insert(items).values(item_id=f"k{n}", amount_minor=n * 100, held=False)
                )
        async with database.read() as connection:
            for n in range(3):
                query = select(items.c.amount_minor).where(items.c.item_id == f"k{n}")
                assert (await connection.execute(query)).scalar_one() == n * 100
            result = await connection.execute(text("SELECT item_id, held FROM items"))
            assert result.keys() == ("item_id", "held")
            first = result.first()
            assert first is not None and first._mapping["held"] is False
            item_id, held = first
            assert (first.item_id, first[1]) == (item_id, held)
            assert (await connection.execute(_BY_KEY, {"b_key": "none"})).first() is None
            with pytest.raises(NoResultFound):
                (await connection.execute(_BY_KEY, {"b_key": "none"})).one()
            with pytest.raises(MultipleResultsFound):
                (await connection.execute(select(items))).one_or_none()

    _run(url, check)


def test_counters_count_statements_sent_and_transactions_committed(url: str) -> None:
    async def check(database: Database) -> None:
        before = (database.stats.statements, database.stats.writes, database.stats.commits)
        async with database.write() as connection:
            rows = [{"item_id": f"c{n}", "amount_minor": n, "held": False} for n in range(4)]
            await connection.execute(insert(items), rows)  # one executemany: one statement
            await connection.execute(_BY_KEY, {"b_key": "c0"})
        with pytest.raises(RuntimeError):
            async with database.write() as connection:
                await connection.execute(_BY_KEY, {"b_key": "c0"})
                raise RuntimeError("not committed")
        await _count(database)
        after = (database.stats.statements, database.stats.writes, database.stats.commits)
        assert tuple(b - a for a, b in zip(before, after, strict=True)) == (4, 2, 1)

    _run(url, check)


def test_a_type_converted_on_the_way_out_is_refused_not_returned_raw(url: str) -> None:
    """Only types asyncpg returns as SQLAlchemy would are allowed through (a new column type
    needing a result processor must be handled in the backend first)."""

    async def check(database: Database) -> None:
        async with database.read() as connection:
            with pytest.raises(NotImplementedError):
                await connection.execute(select(cast(items.c.amount_minor, Float)))

    _run(url, check)
