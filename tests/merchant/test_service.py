"""The merchant backend in-process (httpx ASGITransport) against a real SQLite database in
tmp_path and an in-memory processor that signs real requests and notices."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from semops.core.clock import FixedClock
from semops.core.errors import E
from semops.crypto import KeyUse, derive_key, read_unverified_claims, sign_message
from semops.merchant.app import create_merchant_app
from semops.merchant.core import BasketLine, basket_digest_of
from semops.merchant.service import MerchantService, MerchantSettings
from semops.protocol import PaymentRequest, parse_claims
from semops.store import merchant as store
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade

from .fakes import API_KEY, MERCHANT, PROCESSOR, ROGUE_KEY, Entropy, FakeMerchantProcessor, seed

NOW = 1_800_000_000
ORDER = {"amount": "12.50", "currency": "EUR", "reference": "INV-1"}


class Shop:
    def __init__(
        self, tmp_path: Path, api_token: str | None = None, database_url: str | None = None
    ) -> None:
        self.clock = FixedClock(NOW)
        self.processor = FakeMerchantProcessor(self.clock)
        self.settings = MerchantSettings(
            merchant_id=MERCHANT,
            data_dir=tmp_path,
            processor_url="http://processor.test",
            public_url="https://shop.example",
        )
        self.database = Database(database_url or sqlite_url(tmp_path / "merchant.db"))
        self.service = MerchantService(
            self.settings,
            self.database,
            self.processor,
            API_KEY,
            self.clock,
            Entropy(),
            trust=self.processor.trust,
        )
        self.app = create_merchant_app(self.service, api_token, development=api_token is None)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://merchant.test"
        )
        self.refund_keys = 0

    async def start(self) -> None:
        await upgrade(self.database, "merchant")

    async def stop(self) -> None:
        await self.client.aclose()
        await self.database.dispose()

    async def order(self, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
        response = await self.client.post("/v1/orders", json=body or ORDER, headers=headers)
        assert response.status_code == 201, response.text
        result = response.json()
        assert isinstance(result, dict)
        return result

    async def get(self, order_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        result = response.json()
        assert isinstance(result, dict)
        return result

    async def refund(
        self, order_id: str, body: dict[str, Any], key: str | None = None, **headers: str
    ) -> httpx.Response:
        """A refund call with its Idempotency-Key (a fresh one unless given)."""
        self.refund_keys += 1
        headers["Idempotency-Key"] = key or f"ik_test_refund_{self.refund_keys:04d}"
        return await self.client.post(f"/v1/orders/{order_id}/refunds", json=body, headers=headers)

    async def notify(self, token: str) -> httpx.Response:
        return await self.client.post(
            "/v1/notices", content=token, headers={"Content-Type": "application/jose"}
        )

    async def table(self, table: Any) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            result = await connection.execute(table.select())
            return [dict(row) for row in result.mappings()]


def scenario(tmp_path: Path, body: Callable[[Shop], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        shop = Shop(tmp_path, **options)
        await shop.start()
        try:
            await body(shop)
        finally:
            await shop.stop()

    asyncio.run(main())


def _request(view: dict[str, Any]) -> PaymentRequest:
    return parse_claims(read_unverified_claims(view["token"]), PaymentRequest)


# --- creating orders ----------------------------------------------------------------------


def test_an_order_becomes_a_signed_request_with_link_and_qr(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        assert view["state"] == "open"
        assert (view["amount"], view["amount_minor"], view["currency"]) == ("12.50", 1250, "EUR")
        request = _request(view)
        assert (request.amount_minor, request.reference, request.payee_id) == (
            1250,
            "INV-1",
            MERCHANT,
        )
        assert view["request_id"] == request.request_id
        assert view["link"] == f"semops:pay?r={view['token']}"
        assert view["qr_svg"] == f"/v1/orders/{view['order_id']}/qr.svg"
        assert view["qr_png"] == f"/v1/orders/{view['order_id']}/qr.png"
        assert view["checkout_url"] == f"https://shop.example/checkout/{view['order_id']}"
        assert view["expires_at"] == NOW + 600
        assert len(view["token"]) <= 600
        assert await shop.get(view["order_id"]) == view

    scenario(tmp_path, body)


def test_the_idempotency_key_is_stored_before_the_processor_is_asked(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        seen: list[tuple[str, str]] = []

        async def spy(request_body: dict[str, Any]) -> None:
            rows = await shop.table(store.orders)
            assert len(rows) == 1
            seen.append((rows[0]["state"], rows[0]["idempotency_key"]))
            assert rows[0]["idempotency_key"] == request_body["idempotency_key"]

        shop.processor.before_create = spy
        view = await shop.order()
        assert seen == [("creating", view["idempotency_key"])]

    scenario(tmp_path, body)


def test_the_basket_stays_here_and_only_its_digest_goes_to_the_processor(
    tmp_path: Path,
) -> None:
    basket = [
        {"name": "Coffee", "quantity": 2, "unit_amount_minor": 350},
        {"name": "Croissant", "quantity": 1, "unit_amount_minor": 550},
    ]

    async def body(shop: Shop) -> None:
        view = await shop.order({"amount": "12.50", "currency": "EUR", "basket": basket})
        sent = next(b for m, p, b in shop.processor.bodies if p == "/v1/merchant/requests")
        assert "basket" not in sent
        expected = basket_digest_of("EUR", tuple(BasketLine(**line) for line in basket))
        assert sent["basket_digest"] == expected
        assert _request(view).basket_digest == expected
        assert view["basket"] == basket

    scenario(tmp_path, body)


@pytest.mark.parametrize(
    ("document", "status", "code"),
    [
        ({"amount": "12.5001", "currency": "EUR"}, 422, E.AMOUNT_INVALID.code),
        ({"amount": "-1", "currency": "EUR"}, 422, E.AMOUNT_INVALID.code),
        ({"amount": "0", "currency": "EUR"}, 422, E.AMOUNT_OUT_OF_RANGE.code),
        ({"amount": "12.50", "currency": "XXX"}, 422, E.CURRENCY_UNKNOWN.code),
        ({"amount": 12.5, "currency": "EUR"}, 400, E.MALFORMED.code),
        ({"amount": 1250, "currency": "EUR"}, 422, E.VALIDATION_FAILED.code),
        ({"currency": "EUR"}, 422, E.VALIDATION_FAILED.code),
        ({"amount": "1", "currency": "EUR", "payer": "x"}, 422, E.VALIDATION_FAILED.code),
        ({"amount": "1", "currency": "EUR", "reference": "a\nb"}, 422, E.VALIDATION_FAILED.code),
        ({"amount": "1", "currency": "EUR", "ttl_s": 5}, 422, E.VALIDATION_FAILED.code),
        (
            {
                "amount": "1.00",
                "currency": "EUR",
                "basket": [{"name": "x", "quantity": 1, "unit_amount_minor": 99}],
            },
            422,
            E.AMOUNT_INVALID.code,
        ),
        (
            {
                "amount": "1.00",
                "currency": "EUR",
                "basket": [{"name": "x", "quantity": 1, "unit_amount_minor": 1}] * 101,
            },
            422,
            E.VALIDATION_FAILED.code,
        ),
        ({"amount": "1.00", "currency": "EUR", "basket": []}, 422, E.VALIDATION_FAILED.code),
    ],
)
def test_bad_orders_are_refused_with_a_code_and_change_nothing(
    tmp_path: Path, document: Any, status: int, code: str
) -> None:
    async def body(shop: Shop) -> None:
        response = await shop.client.post(
            "/v1/orders", content=json.dumps(document), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert await shop.table(store.orders) == []
        assert shop.processor.bodies == []

    scenario(tmp_path, body)


def test_orders_arriving_with_the_first_share_its_key_fetch(tmp_path: Path) -> None:
    """Right after start, orders that arrive while the processor's keys are on their way
    wait for that one fetch instead of finding no key (they were refused `key_unknown`)."""

    async def body(shop: Shop) -> None:
        shop.processor.keys_delay_s = 0.05
        views = await asyncio.gather(*(shop.order() for _ in range(6)))
        assert len({view["order_id"] for view in views}) == 6
        assert shop.processor.key_fetches == 1

    scenario(tmp_path, body)


def test_the_same_idempotency_key_gives_the_same_order(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        first = await shop.order(**{"Idempotency-Key": "ik_till-7-sale-1"})
        second = await shop.order(**{"Idempotency-Key": "ik_till-7-sale-1"})
        assert first == second
        assert shop.processor.counter == 1
        response = await shop.client.post(
            "/v1/orders",
            json=dict(ORDER, amount="99.00"),
            headers={"Idempotency-Key": "ik_till-7-sale-1"},
        )
        assert response.status_code == 409
        assert response.json()["code"] == E.IDEMPOTENCY_CONFLICT.code

    scenario(tmp_path, body)


def test_a_lost_processor_answer_is_retried_with_the_same_key(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        shop.processor.lose_replies = 1
        response = await shop.client.post(
            "/v1/orders", json=ORDER, headers={"Idempotency-Key": "ik_retry-me-1"}
        )
        assert response.status_code == 503
        problem = response.json()
        assert problem["code"] == E.UNAVAILABLE.code
        order_id = problem["order_id"]
        assert (await shop.get(order_id))["state"] == "creating"
        view = await shop.order(**{"Idempotency-Key": "ik_retry-me-1"})
        assert view["order_id"] == order_id and view["state"] == "open"
        keys = [b["idempotency_key"] for m, p, b in shop.processor.bodies if m == "POST"]
        assert keys == ["ik_retry-me-1", "ik_retry-me-1"]
        assert shop.processor.counter == 1  # one request at the processor, not two

    scenario(tmp_path, body)


def test_the_poller_finishes_an_order_the_processor_did_not_answer(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        shop.processor.unavailable = True
        response = await shop.client.post("/v1/orders", json=ORDER)
        order_id = response.json()["order_id"]
        shop.processor.unavailable = False
        shop.clock.advance(10)
        assert await shop.service.poll_once() == 1
        assert (await shop.get(order_id))["state"] == "open"

    scenario(tmp_path, body)


def test_an_order_never_created_expires(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        shop.processor.unavailable = True
        response = await shop.client.post("/v1/orders", json=dict(ORDER, ttl_s=60))
        order_id = response.json()["order_id"]
        shop.clock.advance(61)
        await shop.service.poll_once()
        assert (await shop.get(order_id))["state"] == "expired"

    scenario(tmp_path, body)


def test_a_processor_refusal_is_answered_and_leaves_no_order(tmp_path: Path) -> None:
    from semops.core.errors import SemopsError

    async def body(shop: Shop) -> None:
        shop.processor.refuse = SemopsError(E.ACCOUNT_BLOCKED)
        response = await shop.client.post("/v1/orders", json=ORDER)
        assert response.status_code == 403
        assert response.json()["code"] == E.ACCOUNT_BLOCKED.code
        assert await shop.table(store.orders) == []
        # The same call again is asked again (nothing was kept), and refused again.
        again = await shop.client.post("/v1/orders", json=ORDER)
        assert again.json()["code"] == E.ACCOUNT_BLOCKED.code
        assert await shop.table(store.orders) == []

    scenario(tmp_path, body)


def test_a_refusal_found_by_a_later_retry_fails_the_known_order(tmp_path: Path) -> None:
    from semops.core.errors import SemopsError

    async def body(shop: Shop) -> None:
        shop.processor.unavailable = True  # no answer: the order stays creating
        headers = {"Idempotency-Key": "ik_refused-later"}
        first = await shop.client.post("/v1/orders", json=ORDER, headers=headers)
        assert first.status_code == 503
        shop.processor.unavailable = False
        shop.processor.refuse = SemopsError(E.ACCOUNT_BLOCKED)
        second = await shop.client.post("/v1/orders", json=ORDER, headers=headers)
        assert second.json()["code"] == E.ACCOUNT_BLOCKED.code
        rows = await shop.table(store.orders)
        assert [(row["state"], row["error_code"]) for row in rows] == [
            ("failed", E.ACCOUNT_BLOCKED.code)
        ]

    scenario(tmp_path, body)


def test_unknown_orders_are_404(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        for path in ("/v1/orders/mo_nothing_here", "/checkout/mo_nothing_here"):
            response = await shop.client.get(path)
            assert response.status_code == 404
            assert response.json()["code"] == E.NOT_FOUND.code
        response = await shop.client.get("/v1/orders/bad%20id")
        assert response.status_code in (404, 422)

    scenario(tmp_path, body)


# --- the webhook ----------------------------------------------------------------------------


def test_a_valid_notice_marks_the_order_paid(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        token = shop.processor.notice(view["request_id"])
        response = await shop.notify(token)
        assert response.status_code == 200, response.text
        paid = await shop.get(view["order_id"])
        assert paid["state"] == "paid"
        assert paid["notice"] == token and paid["paid_at"] == NOW
        assert paid["transfer_id"] == read_unverified_claims(token)["transfer_id"]
        notices = await shop.table(store.notices)
        assert [row["order_id"] for row in notices] == [view["order_id"]]

    scenario(tmp_path, body)


def test_a_notice_delivered_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        token = shop.processor.notice(view["request_id"])
        first = await shop.notify(token)
        shop.clock.advance(30)
        second = await shop.notify(token)
        assert first.status_code == second.status_code == 200
        assert first.json() == second.json()
        paid = await shop.get(view["order_id"])
        assert paid["paid_at"] == NOW
        assert len(await shop.table(store.notices)) == 1

    scenario(tmp_path, body)


def test_a_tampered_notice_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        header, payload, signature = shop.processor.notice(view["request_id"]).split(".")
        claims = json.loads(_b64decode(payload))
        claims["amount_minor"] = 1
        forged = f"{header}.{_b64encode(json.dumps(claims).encode())}.{signature}"
        response = await shop.notify(forged)
        assert response.status_code == 401
        assert response.json()["code"] == E.SIGNATURE_INVALID.code
        assert (await shop.get(view["order_id"]))["state"] == "open"
        assert await shop.table(store.notices) == []

    scenario(tmp_path, body)


def test_a_notice_from_another_signer_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        impostor = derive_key(PROCESSOR, KeyUse.SIGN, seed("impostor"))
        response = await shop.notify(shop.processor.notice(view["request_id"], key=impostor))
        assert response.status_code == 401
        assert response.json()["code"] == E.KEY_UNKNOWN.code
        other = shop.processor.notice(view["request_id"], key=ROGUE_KEY, payee_processor="bank-z")
        response = await shop.notify(other)
        assert response.status_code == 401
        assert (await shop.get(view["order_id"]))["state"] == "open"
        assert await shop.table(store.notices) == []
        # An unknown kid makes the service look for a rotated key, at most once in a while.
        assert shop.processor.key_fetches == 1
        shop.clock.advance(30)
        assert (await shop.notify(other)).status_code == 401
        assert shop.processor.key_fetches == 2

    scenario(tmp_path, body)


def test_a_notice_signed_by_our_processor_in_another_name_is_refused(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        claims = read_unverified_claims(shop.processor.notice(view["request_id"]))
        claims["payee_processor"] = "bank-z"
        from .fakes import SIGN_KEY

        response = await shop.notify(sign_message(claims, SIGN_KEY))
        assert response.status_code == 403
        assert response.json()["code"] == E.SIGNER_MISMATCH.code
        assert (await shop.get(view["order_id"]))["state"] == "open"

    scenario(tmp_path, body)


@pytest.mark.parametrize(
    "change",
    [{"amount_minor": 1}, {"currency": "USD"}, {"payee_id": "other-shop"}, {"reference": "X"}],
)
def test_a_notice_that_does_not_match_the_order_is_refused(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.notify(shop.processor.notice(view["request_id"], **change))
        assert response.status_code == 422
        assert response.json()["code"] == E.ORDER_MISMATCH.code
        assert (await shop.get(view["order_id"]))["state"] == "open"
        assert await shop.table(store.notices) == []

    scenario(tmp_path, body)


def test_a_second_transfer_for_a_paid_order_is_refused(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        assert (await shop.notify(shop.processor.notice(view["request_id"]))).status_code == 200
        again = await shop.notify(shop.processor.notice(view["request_id"], transfer="t2"))
        assert again.status_code == 409
        assert again.json()["code"] == E.REQUEST_ALREADY_PAID.code
        paid = await shop.get(view["order_id"])
        assert (
            paid["transfer_id"]
            == read_unverified_claims(shop.processor.notice(view["request_id"]))["transfer_id"]
        )

    scenario(tmp_path, body)


def test_a_notice_for_an_order_we_do_not_know_is_kept_unmatched(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        async with shop.database.write() as connection:
            await connection.execute(store.orders.delete())
        response = await shop.notify(shop.processor.notice(view["request_id"]))
        assert response.status_code == 202
        assert response.json()["state"] == "unmatched"
        rows = await shop.table(store.notices)
        assert [(row["request_id"], row["order_id"]) for row in rows] == [
            (view["request_id"], None)
        ]

    scenario(tmp_path, body)


def test_a_notice_after_local_expiry_still_pays(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order(dict(ORDER, ttl_s=60))
        shop.processor.unavailable = True
        shop.clock.advance(120)
        await shop.service.poll_once()
        assert (await shop.get(view["order_id"]))["state"] == "expired"
        shop.processor.unavailable = False
        response = await shop.notify(shop.processor.notice(view["request_id"]))
        assert response.status_code == 200
        assert (await shop.get(view["order_id"]))["state"] == "paid"

    scenario(tmp_path, body)


def test_garbage_on_the_webhook_is_refused(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        for content in (b"", b"not a token", "é".encode(), b"a.b.c"):
            response = await shop.notify(content.decode("utf-8", errors="replace"))
            assert response.status_code in (400, 401), response.text
            assert response.headers["content-type"] == "application/problem+json"
        big = await shop.client.post("/v1/notices", content=b"a" * 100_000)
        assert big.status_code == 413

    scenario(tmp_path, body)


# --- the poller -----------------------------------------------------------------------------


def test_without_a_webhook_the_poller_finds_the_payment(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        shop.processor.mark_paid(view["request_id"])
        shop.clock.advance(10)
        assert await shop.service.poll_once() == 1
        paid = await shop.get(view["order_id"])
        assert paid["state"] == "paid" and paid["notice"] is not None
        # Paid orders are not polled again.
        shop.clock.advance(10)
        assert await shop.service.poll_once() == 0

    scenario(tmp_path, body)


def test_the_poller_expires_what_the_processor_expired(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        shop.processor.by_id[view["request_id"]]["state"] = "expired"
        shop.clock.advance(10)
        await shop.service.poll_once()
        assert (await shop.get(view["order_id"]))["state"] == "expired"

    scenario(tmp_path, body)


def test_the_poller_looks_at_each_order_at_most_once_per_interval(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        for _ in range(3):
            await shop.order()
        shop.clock.advance(10)
        assert await shop.service.poll_once() == 3
        assert await shop.service.poll_once() == 0
        shop.clock.advance(10)
        assert await shop.service.poll_once() == 3

    scenario(tmp_path, body)


def test_the_background_loop_stops_when_asked(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(shop.service.run_background(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=2)

    scenario(tmp_path, body)


# --- refunds --------------------------------------------------------------------------------


async def _paid(shop: Shop) -> dict[str, Any]:
    view = await shop.order()
    assert (await shop.notify(shop.processor.notice(view["request_id"]))).status_code == 200
    return view


def test_a_full_refund_refunds_the_order(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        response = await shop.refund(view["order_id"], {})
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["refund"]["amount_minor"] == 1250
        assert result["refund"]["state"] == "completed"
        assert result["order"]["state"] == "refunded"
        assert result["order"]["refunded_minor"] == 1250
        sent = [b for m, p, b in shop.processor.bodies if p.endswith("/refunds")]
        assert sent == [{"refund_id": result["refund"]["refund_id"], "amount_minor": 1250}]

    scenario(tmp_path, body)


def test_partial_refunds_never_exceed_the_paid_amount(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        order_id = view["order_id"]
        first = await shop.refund(order_id, {"amount": "5.00", "reason": "one cup"})
        assert first.json()["order"]["state"] == "partially_refunded"
        too_much = await shop.refund(order_id, {"amount": "7.51"})
        assert too_much.status_code == 422
        assert too_much.json()["code"] == E.REFUND_EXCEEDS_PAID.code
        rest = await shop.refund(order_id, {"amount": "7.50"})
        assert rest.json()["order"]["state"] == "refunded"
        done = await shop.refund(order_id, {})
        assert done.status_code == 409
        assert done.json()["code"] == E.REFUND_NOT_ALLOWED.code

    scenario(tmp_path, body)


def test_an_unpaid_order_cannot_be_refunded(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.refund(view["order_id"], {})
        assert response.status_code == 409
        assert response.json()["code"] == E.REFUND_NOT_ALLOWED.code
        assert shop.processor.refunds == {}

    scenario(tmp_path, body)


def test_an_unanswered_refund_is_asked_again_and_counted_once(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        shop.processor.lose_replies = 1
        response = await shop.refund(view["order_id"], {"amount": "2.50"})
        assert response.status_code == 200
        refund = response.json()["refund"]
        assert refund["state"] == "in_doubt"
        # Nothing more may be refunded than what is paid minus what is in flight.
        too_much = await shop.refund(view["order_id"], {"amount": "10.01"})
        assert too_much.status_code == 422
        shop.clock.advance(10)
        await shop.service.poll_once()
        order = await shop.get(view["order_id"])
        assert order["refunded_minor"] == 250 and order["state"] == "partially_refunded"
        assert [r["state"] for r in order["refunds"]] == ["completed"]
        shop.clock.advance(10)
        await shop.service.poll_once()
        assert (await shop.get(view["order_id"]))["refunded_minor"] == 250
        ids = {b["refund_id"] for m, p, b in shop.processor.bodies if p.endswith("/refunds")}
        assert ids == {refund["refund_id"]}

    scenario(tmp_path, body)


def test_a_refused_refund_is_reported_with_its_code(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        shop.processor.refund_state = "failed"
        response = await shop.refund(view["order_id"], {})
        assert response.status_code == 409
        assert response.json()["code"] == E.REFUND_NOT_ALLOWED.code
        order = await shop.get(view["order_id"])
        assert order["state"] == "paid" and order["refunded_minor"] == 0
        assert [r["state"] for r in order["refunds"]] == ["failed"]

    scenario(tmp_path, body)


# --- API token ------------------------------------------------------------------------------


def test_with_an_api_token_the_post_routes_need_it(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        response = await shop.client.post("/v1/orders", json=ORDER)
        assert response.status_code == 401
        assert response.json()["code"] == E.UNAUTHENTICATED.code
        wrong = await shop.client.post(
            "/v1/orders", json=ORDER, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        view = await shop.order(Authorization="Bearer s3cret-token")
        refund = await shop.refund(view["order_id"], {})
        assert refund.status_code == 401
        # The public parts stay public.
        assert (await shop.client.get(f"/v1/orders/{view['order_id']}")).status_code == 200
        assert (await shop.client.get(f"/checkout/{view['order_id']}")).status_code == 200

    scenario(tmp_path, body, api_token="s3cret-token")


# --- health, metrics, migrations ------------------------------------------------------------


def test_health_is_public_and_metrics_need_the_api_credential(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        assert (await shop.client.get("/healthz")).json() == {"status": "ok"}
        assert (await shop.client.get("/metrics")).status_code == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert (await shop.client.get("/metrics", headers=wrong)).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        metrics = await shop.client.get("/metrics", headers=good)
        assert "semops_merchant_orders_total" in metrics.text
        for name in ("statements", "write_transactions", "commits"):
            assert f"semops_db_{name}_total " in metrics.text, name

    scenario(tmp_path, body, api_token="s3cret-token")


def test_metrics_are_closed_when_the_backend_runs_without_a_credential(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        assert (await shop.client.get("/metrics")).status_code == 401

    scenario(tmp_path, body)


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    async def main() -> None:
        database = Database(sqlite_url(tmp_path / "twice.db"))
        await upgrade(database, "merchant")
        await upgrade(database, "merchant")
        async with database.read() as connection:
            result = await connection.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            )
            names = [row[0] for row in result]
        await database.dispose()
        assert {"orders", "refunds", "notices", "alembic_version"} <= set(names)

    asyncio.run(main())


def _b64decode(text: str) -> bytes:
    from semops.core.encoding import b64url_decode

    return b64url_decode(text)


def _b64encode(data: bytes) -> str:
    from semops.core.encoding import b64url_encode

    return b64url_encode(data)


_ = io  # io is used by the checkout tests' helpers in another module
