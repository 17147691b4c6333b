"""The processor's queries (semops.store.processor), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from semops.core.money import Money
from semops.ledger import AccountKind, Reservation
from semops.processor import accounts
from semops.store import processor as store
from tests.processor.network import Network, Node, on_both

pytestmark = pytest.mark.anyio


def order_row(
    order_id: str, state: str, *, on_us: bool = False, expires_at: int = 100
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "account_id": "ac_store-0001",
        "device_kid": "device:x",
        "content_digest": "D" * 43,
        "transfer_id": "tr_" + order_id[3:],
        "on_us": on_us,
        "request_id": "rq_store-0001",
        "payee_processor": "mno-b",
        "payee_id": "kiosk",
        "payee_name": "Kiosk",
        "reference": None,
        "amount_minor": 10,
        "currency": "EUR",
        "condition": "C" * 43,
        "state": state,
        "expires_at": expires_at,
        "fulfilment": None,
        "reason_code": None,
        "receipt": None,
        "created_at": 1,
        "decided_at": None,
    }


async def write(node: Node, operation: Any) -> Any:
    async with node.processor.context.database.write() as connection:
        return await operation(connection)


@on_both
async def test_rows_are_read_found_and_updated_conditionally(network: Network) -> None:
    node = await network.add("bank-a")
    await write(
        node, lambda c: store.insert_row(c, store.orders, order_row("or_store-0001", "reserved"))
    )
    async with node.processor.context.database.read() as connection:
        assert (await store.get_row(connection, store.orders, "or_store-0001"))[
            "state"
        ] == "reserved"
        assert await store.get_row(connection, store.orders, "or_missing-01") is None
        found = await store.find_row(connection, store.orders, transfer_id="tr_store-0001")
        assert found is not None and found["order_id"] == "or_store-0001"
        assert await store.find_row(connection, store.orders, transfer_id="tr_none") is None
    moved = await write(
        node,
        lambda c: store.update_row(
            c, store.orders, "or_store-0001", {"state": "in_doubt"}, expected_state="reserved"
        ),
    )
    stale = await write(
        node,
        lambda c: store.update_row(
            c, store.orders, "or_store-0001", {"state": "aborted"}, expected_state="reserved"
        ),
    )
    assert (moved, stale) == (True, False)


@on_both
async def test_only_undecided_routed_orders_are_asked_about(network: Network) -> None:
    node = await network.add("bank-a")
    for number, (state, on_us) in enumerate(
        [
            ("reserved", False),
            ("prepared", False),
            ("in_doubt", False),
            ("committed", False),
            ("aborted", False),
            ("reserved", True),
        ]
    ):
        row = order_row(f"or_store-000{number}", state, on_us=on_us, expires_at=100 - number)
        await write(node, lambda c, row=row: store.insert_row(c, store.orders, row))
    async with node.processor.context.database.read() as connection:
        pending = await store.unresolved_orders(connection, 10)
        limited = await store.unresolved_orders(connection, 2)
    assert [row["state"] for row in pending] == ["in_doubt", "prepared", "reserved"]  # by expiry
    assert len(limited) == 2


@on_both
async def test_money_held_counts_only_open_reservations(network: Network) -> None:
    node = await network.add("bank-a")
    now = network.clock.now()

    async def setup(connection: Any) -> None:
        await accounts.open_account(connection, "ac_store-0001", AccountKind.CUSTOMER, "EUR", now)
        await accounts.deposit(connection, "ac_store-0001", Money(100, "EUR"), "dp_store-0001", now)
        for ref, amount in (("tr_open-000001", 10), ("tr_post-000001", 20), ("tr_void-000001", 30)):
            await accounts.reserve(connection, "ac_store-0001", Money(amount, "EUR"), ref, now)
        await accounts.post_to_settlement(
            connection, Reservation("tr_post-000001", "ac_store-0001", Money(20, "EUR")), now
        )
        await accounts.void(
            connection, Reservation("tr_void-000001", "ac_store-0001", Money(30, "EUR")), now
        )

    await write(node, setup)
    async with node.processor.context.database.read() as connection:
        assert await store.held_minor(connection, "ac_store-0001") == 10
        assert await store.postings_total(connection, "ac_store-0001") == 70
        history = await store.account_history(connection, "ac_store-0001", 3)
    assert [(row["kind"], row["amount_minor"]) for row in history] == [
        ("void", 30),
        ("reserve", -30),
        ("reserve", -20),
    ]


@on_both
async def test_the_outbox_hands_out_due_messages_in_order(network: Network) -> None:
    node = await network.add("bank-a")
    await write(node, lambda c: store.enqueue(c, "https://m.test/a", "rq_store-0001", "a.b.c", 10))
    await write(node, lambda c: store.enqueue(c, "https://m.test/b", "rq_store-0002", "d.e.f", 10))
    async with node.processor.context.database.read() as connection:
        due = await store.due_messages(connection, 10, 10)
    assert [message["body"] for message in due] == ["a.b.c", "d.e.f"]
    await write(node, lambda c: store.mark_attempt(c, due[0]["message_id"], 1, 20))
    await write(node, lambda c: store.mark_delivered(c, [due[1]["message_id"]], 11))
    async with node.processor.context.database.read() as connection:
        assert await store.due_messages(connection, 15, 10) == []
        assert [m["body"] for m in await store.due_messages(connection, 20, 10)] == ["a.b.c"]
        assert await store.undelivered_count(connection) == 1
