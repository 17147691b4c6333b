"""The same Idempotency-Key sent twice at the same moment, on PostgreSQL (found in review):
the second call gets the first one's answer, never a second effect, a 500 or a refusal.

SQLite serialises writers, so these races exist only with several connections writing at
once; they run on PostgreSQL (skipped without it, a failure in CI)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from semops.store import merchant as store
from tests.databases import postgres_or_skip

from .test_hardening import AUTH, TOKEN
from .test_service import ORDER, Shop


@pytest.fixture
def database_url() -> Iterator[str]:
    databases = postgres_or_skip()
    try:
        yield databases.make(["merchant"])["merchant"]
    finally:
        databases.drop()


def _run(tmp_path: Path, database_url: str, body: object) -> None:
    async def main() -> None:
        shop = Shop(tmp_path, api_token=TOKEN, database_url=database_url)
        await shop.start()
        try:
            await body(shop)  # type: ignore[operator]
        finally:
            await shop.stop()

    asyncio.run(main())


def test_one_order_for_one_key_sent_twice_at_once(tmp_path: Path, database_url: str) -> None:
    async def body(shop: Shop) -> None:
        headers = {**AUTH, "Idempotency-Key": "ik_same_order_0001"}
        answers = await asyncio.gather(
            *(shop.client.post("/v1/orders", json=ORDER, headers=headers) for _ in range(2))
        )
        assert [answer.status_code for answer in answers] == [201, 201], answers[1].text
        assert answers[0].json()["order_id"] == answers[1].json()["order_id"]
        assert len(await shop.table(store.orders)) == 1

    _run(tmp_path, database_url, body)


def test_one_refund_for_one_key_sent_twice_at_once(tmp_path: Path, database_url: str) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order(**AUTH)
        await shop.notify(shop.processor.notice(view["request_id"]))
        answers = await asyncio.gather(
            *(shop.refund(view["order_id"], {}, "ik_same_refund_01", **AUTH) for _ in range(2))
        )
        assert [answer.status_code for answer in answers] == [200, 200], answers[1].text
        assert {answer.json()["refund"]["state"] for answer in answers} == {"completed"}
        (refund,) = await shop.table(store.refunds)
        (order,) = await shop.table(store.orders)
        assert order["refunded_minor"] == refund["amount_minor"] == order["amount_minor"]

    _run(tmp_path, database_url, body)


def test_two_refunds_of_one_order_completing_at_once_add_up(
    tmp_path: Path, database_url: str
) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order(**AUTH)
        await shop.notify(shop.processor.notice(view["request_id"]))
        answers = await asyncio.gather(
            shop.refund(view["order_id"], {"amount": "1.00"}, "ik_part_refund_a", **AUTH),
            shop.refund(view["order_id"], {"amount": "2.00"}, "ik_part_refund_b", **AUTH),
        )
        assert [answer.status_code for answer in answers] == [200, 200], answers[1].text
        (order,) = await shop.table(store.orders)
        assert order["refunded_minor"] == 300

    _run(tmp_path, database_url, body)
