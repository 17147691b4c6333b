"""The store functions built on prebuilt statements behave as statements built per call:
on SQLite and PostgreSQL, the same rows, NULL comparisons, state guards, upserts and
errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import CompileError, IntegrityError

from semops.store import audit
from semops.store import merchant as m
from semops.store import processor as p
from semops.store import router as r
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade
from tests.databases import BACKENDS, postgres_or_skip


def _order(order_id: str, transfer_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "account_id": "acc1",
        "device_kid": "kid1",
        "content_digest": "d" * 43,
        "transfer_id": transfer_id,
        "on_us": False,
        "request_id": "r1",
        "payee_processor": "bank-b",
        "payee_id": "m1",
        "payee_name": "Shop",
        "reference": None,
        "amount_minor": 100,
        "currency": "EUR",
        "condition": "c" * 43,
        "state": "reserved",
        "expires_at": 10**9,
        "created_at": 1,
        **changes,
    }


def _transfer(transfer_id: str) -> dict[str, Any]:
    return {
        "transfer_id": transfer_id,
        "kind": "payment",
        "payer_processor": "bank-a",
        "payee_processor": "bank-b",
        "amount_minor": 100,
        "currency": "EUR",
        "condition": "c" * 43,
        "expires_at": 10**9,
        "state": "reserved",
        "content_digest": "d" * 43,
        "created_at": 1,
    }


async def _processor_checks(database: Database) -> None:
    async with database.write() as c:
        await p.insert_row(
            c,
            p.accounts,
            {
                "account_id": "acc1",
                "kind": "customer",
                "currency": "EUR",
                "balance_minor": 0,
                "overdraft_minor": 0,
                "status": "open",
                "created_at": 1,
            },
        )
        await p.insert_row(c, p.orders, _order("o1", "t1"))
        await p.insert_row(c, p.orders, _order("o2", "t2", reference="ref"))
        with pytest.raises(CompileError):
            await p.insert_row(c, p.orders, _order("o3", "t3", no_such_column=1))
    async with database.write() as c:
        row = await p.get_row(c, p.orders, "o1", for_update=True)
        assert row is not None and row["reference"] is None and row["on_us"] is False
        assert row["fulfilment"] is None  # a column left out is NULL
        assert await p.get_row(c, p.orders, "missing") is None
        found = await p.find_row(c, p.orders, for_update=True, transfer_id="t2")
        assert found is not None and found["order_id"] == "o2"
        # `column == None` is IS NULL, as with statements built per call
        nulls = await p.find_row(c, p.orders, reference=None, transfer_id="t1")
        assert nulls is not None and nulls["order_id"] == "o1"
        assert await p.find_row(c, p.orders, reference=None, transfer_id="t2") is None
        assert (
            await p.update_row(c, p.orders, "o1", {"state": "prepared"}, expected_state="x")
            is False
        )
        assert await p.update_row(
            c, p.orders, "o1", {"state": "prepared", "decided_at": 5}, expected_state="reserved"
        )
        assert await p.update_row(c, p.orders, "o2", {"reference": None})
        assert await p.update_row(c, p.orders, "missing", {"state": "prepared"}) is False
        with pytest.raises(CompileError):
            await p.update_row(c, p.orders, "o1", {"no_such_column": 1})
        assert await p.insert_entry_if_new(c, "t1:reserve", "reserve", "t1", "EUR", 7)
        assert not await p.insert_entry_if_new(c, "t1:reserve", "reserve", "t1", "EUR", 7)
        moved = await p.move_balance(c, "acc1", -100, 10**17)
        assert moved is not None and moved["balance_minor"] == -100
        assert await p.move_balance(c, "acc1", -(10**17), 10**17) is None  # out of range
        await p.insert_postings(c, "t1:reserve", [("acc1", -100, True)], 7)
        await p.enqueue(c, "https://shop", "r1", "{}", 3)
        await audit.insert_entry(
            c,
            p.audit_log,
            {
                "seq": 1,
                "at": 1,
                "kind": "k",
                "actor": "a",
                "data": "{}",
                "prev_hash": "h0",
                "hash": "h1",
            },
        )
    async with database.read() as c:
        row = await p.get_row(c, p.orders, "o1")
        assert row is not None and (row["state"], row["decided_at"]) == ("prepared", 5)
        row = await p.get_row(c, p.orders, "o2")
        assert row is not None and row["reference"] is None
        account = await p.get_row(c, p.accounts, "acc1")
        assert account is not None and account["balance_minor"] == -100
        assert await p.entry_postings(c, "t1:reserve") == [("acc1", -100)]
        (message,) = await p.due_messages(c, 3, 10)
        assert message["attempts"] == 0 and message["delivered_at"] is None
        assert await p.due_messages(c, 2, 10) == []
        assert await audit.last_entry(c, p.audit_log) == (1, "h1", "k")
    async with database.write() as c:
        await p.mark_attempt(c, message["message_id"], 1, 9)
        assert await p.due_messages(c, 8, 10) == []
        await p.mark_delivered(c, [message["message_id"]], 10)
        assert await p.due_messages(c, 10**9, 10) == []


async def _router_checks(database: Database) -> None:
    async with database.write() as c:
        assert await r.insert_transfer(c, _transfer("t1")) is None  # no such sender, no cap
        await r.create_window(c, 1, 5)
        await r.adjust_position(c, "bank-a", "EUR", -100)
        await r.adjust_position(c, "bank-a", "EUR", -50)
        await r.adjust_window_position(c, 1, "bank-a", "EUR", sent_minor=100)
        await r.adjust_window_position(c, 1, "bank-a", "EUR", sent_minor=20)
        await r.adjust_window_position(c, 1, "bank-a", "EUR", received_minor=7)
        await r.enqueue(c, "bank-b", "/transfers", "{}", 3)
    with pytest.raises(IntegrityError):
        async with database.write() as c:
            await r.insert_transfer(c, _transfer("t1"))
    async with database.write() as c:
        window = await r.open_window(c, lock="share")
        assert window is not None and window["window_id"] == 1
        assert await r.open_window(c, lock="update") == window == await r.open_window(c)
        assert await r.cap_exposure(c, "bank-a", "EUR") == (-113, 100)
        assert await r.cap_exposure(c, "bank-b", "EUR") == (0, 0)
        row = await r.get_transfer(c, "t1", for_update=True)
        assert row is not None and row["state"] == "reserved" and row["routed"] is None
        decided = await r.decide_transfer(
            c, "t1", state="committed", decided_at=9, fulfilment="f" * 43, in_window=True
        )
        assert decided == {
            **row,
            "state": "committed",
            "decided_at": 9,
            "fulfilment": "f" * 43,
            "window_id": 1,
            "folded": False,
        }
        assert await r.decide_transfer(c, "t1", state="aborted", decided_at=10) is None
        assert await r.revoked_among(c, "kid", ["a", "b", "a"]) == set()
    async with database.read() as c:
        row = await r.get_transfer(c, "t1")
        assert row is not None
        assert (row["state"], row["decided_at"], row["window_id"]) == ("committed", 9, 1)
        assert row["reason_code"] is None
        assert len(await r.due_messages(c, 3, 10)) == 1
    # t1 (100 from bank-a to bank-b) is booked before it is folded and after, once.
    for fold in (False, True):
        if fold:
            async with database.write() as c:
                assert await r.fold_positions(c, 10) == 1
                assert await r.fold_positions(c, 10) == 0
        async with database.read() as c:
            assert await r.list_positions(c) == [
                {"participant_id": "bank-a", "currency": "EUR", "net_minor": -250},
                {"participant_id": "bank-b", "currency": "EUR", "net_minor": 100},
            ]
            sent, received = await r.window_positions_of(c, 1)
            assert sent == {
                "window_id": 1,
                "participant_id": "bank-a",
                "currency": "EUR",
                "net_minor": -213,
                "sent_minor": 220,
                "received_minor": 7,
                "sent_count": 3,
                "received_count": 1,
            }
            assert await r.window_positions_of(c, 1, "bank-b") == [received]
            assert (received["net_minor"], received["received_count"]) == (100, 1)
            assert await r.window_transfer_count(c, 1) == 3
            assert await r.cap_exposure(c, "bank-a", "EUR") == (-213, 0)


async def _merchant_checks(database: Database) -> None:
    async with database.read() as c:
        assert await m.get_order(c, "missing") is None
        assert await m.get_order_by_key(c, "missing") is None
        assert await m.get_order_by_request(c, "missing") is None
        assert await m.get_notice(c, "missing") is None
        assert await m.get_session(c, "missing") is None
    async with database.write() as c:
        assert await m.update_order(c, "missing", "creating", {"state": "paid"}) is False


@pytest.mark.parametrize("backend", BACKENDS)
def test_prebuilt_statements_behave_as_built_per_call(backend: str, tmp_path: Path) -> None:
    databases = postgres_or_skip() if backend == "postgresql" else None
    try:
        urls = (
            databases.make(["processor", "router", "merchant"])
            if databases
            else {
                name: sqlite_url(tmp_path / f"{name}.db")
                for name in ("processor", "router", "merchant")
            }
        )

        async def run() -> None:
            for service, checks in (
                ("processor", _processor_checks),
                ("router", _router_checks),
                ("merchant", _merchant_checks),
            ):
                database = Database(urls[service])
                try:
                    await upgrade(database, service)
                    await checks(database)
                finally:
                    await database.dispose()

        asyncio.run(run())
    finally:
        if databases:
            databases.drop()
