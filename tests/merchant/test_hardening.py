"""Issue 11 on the merchant backend, in process: a swapped processor key (H2), what needs
the API token (H3), one refund per Idempotency-Key (M1), neutral refund codes (M3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from semops.core.errors import E
from semops.crypto import KeyUse, derive_key, derive_private_key, read_unverified_claims
from semops.merchant.app import create_merchant_app
from semops.merchant.processor_api import ProcessorAnswer
from semops.merchant.service import KEYS_MAX_AGE_S, PUBLIC_ORDER_FIELDS, MerchantService
from semops.protocol import PaymentRequest, parse_claims, sign
from semops.store import merchant as store

from .fakes import API_KEY, MERCHANT, PROCESSOR, Entropy, SchemePki, seed
from .test_service import ORDER, Shop, scenario

TOKEN = "hardening-test-token-8d1e2f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ATTACKER = derive_key(PROCESSOR, KeyUse.SIGN, seed("on-path attacker"))


ATTACKER_ROOT = derive_private_key(seed("attacker's own root"))


def _attacker_keys(shop: Shop) -> Any:
    """The key document an attacker on the link serves: its key, a certificate from its
    own root made with the same name."""
    return SchemePki(shop.clock.now(), ATTACKER, ATTACKER_ROOT).keys_document()


# --- H2 -----------------------------------------------------------------------------------


def test_a_notice_under_a_swapped_key_changes_nothing_and_the_trusted_key_stays(
    tmp_path: Path,
) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()  # the genuine key is fetched and trusted here
        shop.processor.keys_document = _attacker_keys(shop)
        shop.clock.advance(60)
        forged = shop.processor.notice(view["request_id"], key=ATTACKER)
        answer = await shop.notify(forged)
        assert answer.status_code == 401
        assert answer.json()["code"] == E.CERTIFICATE_INVALID.code
        assert (await shop.get(view["order_id"]))["state"] == "open"
        assert await shop.table(store.notices) == []
        # The genuine processor's notice still pays it: the trusted key was kept.
        genuine = await shop.notify(shop.processor.notice(view["request_id"]))
        assert genuine.status_code == 200
        assert (await shop.get(view["order_id"]))["state"] == "paid"

    scenario(tmp_path, body)


def test_a_key_the_router_revokes_stops_marking_orders_paid(tmp_path: Path) -> None:
    """The trusted key is checked against a fresh directory every KEYS_MAX_AGE_S: once the
    router lists it as revoked (its holder lost it), a notice signed with it pays nothing."""

    async def body(shop: Shop) -> None:
        view = await shop.order()  # the genuine key is fetched and trusted here
        shop.processor.keys_document = shop.processor.pki.keys_document(key_status="revoked")
        shop.clock.advance(KEYS_MAX_AGE_S)
        stolen = shop.processor.notice(view["request_id"])
        answer = await shop.notify(stolen)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == E.KEY_REVOKED.code
        assert (await shop.get(view["order_id"]))["state"] == "open"
        assert await shop.table(store.notices) == []

    scenario(tmp_path, body)


def test_a_backend_that_never_saw_a_trusted_key_opens_no_order(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        shop.processor.keys_document = _attacker_keys(shop)
        answer = await shop.client.post("/v1/orders", json=ORDER)
        assert answer.status_code == 401
        assert answer.json()["code"] == E.CERTIFICATE_INVALID.code
        (row,) = await shop.table(store.orders)
        assert row["state"] == "creating" and row["token"] is None

    scenario(tmp_path, body)


class _SwappedRequests:
    """A link on which the processor's signed request is replaced by the attacker's."""

    def __init__(self, inner: Any, payee_id: str = MERCHANT, key: Any = ATTACKER) -> None:
        self.inner, self.payee_id, self.key = inner, payee_id, key

    async def request(self, method: str, path: str, **options: Any) -> ProcessorAnswer:
        answer: ProcessorAnswer = await self.inner.request(method, path, **options)
        if (method, path) != ("POST", "/v1/merchant/requests") or not answer.ok:
            return answer
        document = json.loads(answer.body)
        request = parse_claims(read_unverified_claims(document["token"]), PaymentRequest)
        document["token"] = sign(request.model_copy(update={"payee_id": self.payee_id}), self.key)
        return ProcessorAnswer(answer.status, answer.content_type, json.dumps(document).encode())

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("payee_id", "key_name", "code"),
    [(MERCHANT, "attacker", "key_unknown"), ("attacker-shop", "processor", "order_mismatch")],
)
def test_a_swapped_payment_request_is_not_shown_to_customers(
    tmp_path: Path, payee_id: str, key_name: str, code: str
) -> None:
    from .fakes import SIGN_KEY

    async def body(shop: Shop) -> None:
        key = ATTACKER if key_name == "attacker" else SIGN_KEY
        shop.service.transport = _SwappedRequests(shop.processor, payee_id, key)
        answer = await shop.client.post("/v1/orders", json=ORDER)
        assert answer.status_code in (401, 422), answer.text
        assert answer.json()["code"] == code
        (row,) = await shop.table(store.orders)
        assert row["token"] is None  # nothing a customer could be sent to pay

    scenario(tmp_path, body)


# --- H3 -----------------------------------------------------------------------------------


def test_without_a_token_the_app_is_only_made_for_development(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        with pytest.raises(ValueError, match="API token"):
            create_merchant_app(shop.service, None)

    scenario(tmp_path, body)


def test_an_order_id_alone_shows_the_checkout_view_and_moves_nothing(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order(**AUTH)
        await shop.notify(shop.processor.notice(view["request_id"]))
        public = (await shop.client.get(f"/v1/orders/{view['order_id']}")).json()
        assert set(public) == set(PUBLIC_ORDER_FIELDS)
        assert public["state"] == "paid" and public["notice"]
        full = (await shop.client.get(f"/v1/orders/{view['order_id']}", headers=AUTH)).json()
        assert "refunds" in full and "idempotency_key" in full
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refund = await shop.refund(view["order_id"], {"amount": "6.00"}, **headers)
            assert refund.status_code == 401
            listing = await shop.client.get("/v1/orders", headers=headers)
            assert listing.status_code == 401
        assert await shop.table(store.refunds) == []
        assert shop.processor.refunds == {}

    scenario(tmp_path, body, api_token=TOKEN)


# --- M1 -----------------------------------------------------------------------------------


async def _paid(shop: Shop) -> dict[str, Any]:
    view = await shop.order()
    assert (await shop.notify(shop.processor.notice(view["request_id"]))).status_code == 200
    return view


def _refunds_sent(shop: Shop) -> list[Any]:
    return [body for method, path, body in shop.processor.bodies if path.endswith("/refunds")]


def test_the_same_key_and_body_refund_once_even_after_a_restart(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        answers = [
            await shop.refund(view["order_id"], {"amount": "1.00"}, key="ik_same-key-0001")
            for _ in range(4)
        ]
        assert {a.status_code for a in answers} == {200}
        assert len({a.json()["refund"]["refund_id"] for a in answers}) == 1
        assert len(shop.processor.refunds) == 1
        assert len(await shop.table(store.refunds)) == 1
        # A new process on the same database: the key is stored, so is its refund.
        restarted = MerchantService(
            shop.settings,
            shop.database,
            shop.processor,
            API_KEY,
            shop.clock,
            Entropy("restarted"),
            trust=shop.processor.trust,
        )
        again = await restarted.refund(view["order_id"], {"amount": "1.00"}, "ik_same-key-0001")
        assert again["refund"]["refund_id"] == answers[0].json()["refund"]["refund_id"]
        assert len(shop.processor.refunds) == 1 and len(await shop.table(store.refunds)) == 1

    scenario(tmp_path, body)


def test_another_body_under_a_key_or_no_key_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        first = await shop.refund(view["order_id"], {"amount": "1.00"}, key="ik_other-body-01")
        assert first.status_code == 200
        rows = await shop.table(store.refunds)
        for changed in ({"amount": "2.00"}, {"amount": "1.00", "reason": "another"}, {}):
            other = await shop.refund(view["order_id"], changed, key="ik_other-body-01")
            assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
        paid_elsewhere = await _paid(shop)
        elsewhere = await shop.refund(
            paid_elsewhere["order_id"], {"amount": "1.00"}, key="ik_other-body-01"
        )
        assert elsewhere.status_code == 409  # a key names one refund of one order
        keyless = await shop.client.post(
            f"/v1/orders/{view['order_id']}/refunds", json={"amount": "1.00"}
        )
        assert (keyless.status_code, keyless.json()["code"]) == (400, "idempotency_key_required")
        bad = await shop.refund(view["order_id"], {"amount": "1.00"}, key="../../etc")
        assert bad.status_code == 422
        assert await shop.table(store.refunds) == rows
        assert len(_refunds_sent(shop)) == 1

    scenario(tmp_path, body)


def test_concurrent_retries_with_one_key_make_one_refund(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        answers = await asyncio.gather(
            *(
                shop.refund(view["order_id"], {"amount": "0.50"}, key="ik_racing-key-01")
                for _ in range(6)
            )
        )
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
        assert len(await shop.table(store.refunds)) == 1
        assert len(shop.processor.refunds) == 1

    scenario(tmp_path, body)


def test_a_retry_of_an_unanswered_refund_asks_with_the_same_refund_id(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        shop.processor.lose_replies = 1
        lost = await shop.refund(view["order_id"], {"amount": "2.00"}, key="ik_lost-reply-01")
        assert lost.json()["refund"]["state"] == "in_doubt"
        retried = await shop.refund(view["order_id"], {"amount": "2.00"}, key="ik_lost-reply-01")
        assert retried.json()["refund"]["state"] == "completed"
        ids = {body["refund_id"] for body in _refunds_sent(shop)}
        assert len(ids) == 1 and len(_refunds_sent(shop)) == 2
        assert (await shop.get(view["order_id"]))["refunded_minor"] == 200

    scenario(tmp_path, body)


# --- M3 -----------------------------------------------------------------------------------


class _Answers:
    """A processor that answers refunds as told (what an older or odd processor might)."""

    def __init__(self, inner: Any, answer: ProcessorAnswer) -> None:
        self.inner, self.answer = inner, answer

    async def request(self, method: str, path: str, **options: Any) -> ProcessorAnswer:
        if path.endswith("/refunds"):
            return self.answer
        answer: ProcessorAnswer = await self.inner.request(method, path, **options)
        return answer

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "answer",
    [
        ProcessorAnswer(
            200,
            "application/json",
            json.dumps({"state": "failed", "reason_code": "processor_suspended"}).encode(),
        ),
        ProcessorAnswer(
            403,
            "application/problem+json",
            json.dumps({"code": "processor_suspended", "status": 403, "title": "x"}).encode(),
        ),
        ProcessorAnswer(
            403,
            "application/problem+json",
            json.dumps({"code": "net_debit_cap_exceeded", "status": 403, "title": "x"}).encode(),
        ),
    ],
)
def test_a_refund_refused_for_the_payer_sides_state_names_no_cause(
    tmp_path: Path, answer: ProcessorAnswer
) -> None:
    async def body(shop: Shop) -> None:
        view = await _paid(shop)
        shop.service.transport = _Answers(shop.processor, answer)
        refused = await shop.refund(view["order_id"], {"amount": "1.00"})
        assert refused.json()["code"] == "refund_not_completed", refused.text
        order = await shop.get(view["order_id"])
        shown = json.dumps(order) + refused.text
        assert "suspended" not in shown and "net_debit" not in shown
        assert order["refunds"][0]["error_code"] == "refund_not_completed"

    scenario(tmp_path, body)


def test_the_webhook_answers_a_posted_notice_with_the_state_only(tmp_path: Path) -> None:
    """Found in review: anyone holding an order id reads its notice from the public view;
    posting that notice to the public webhook answered the merchant's full view of the
    order (refunds and their idempotency keys). Now it answers the order id and state."""

    async def body(shop: Shop) -> None:
        view = await shop.order()
        notice = shop.processor.notice(view["request_id"])
        assert (await shop.notify(notice)).status_code == 200
        refunded = await shop.refund(view["order_id"], {"amount": "1.00"}, "ik_secret_refund_1")
        assert refunded.status_code == 200, refunded.text
        again = await shop.notify(notice)  # what a customer with the order id can do
        assert again.status_code == 200
        assert again.json() == {"order_id": view["order_id"], "state": again.json()["state"]}
        assert "ik_secret_refund_1" not in again.text and "refunds" not in again.text

    scenario(tmp_path, body)
