"""Replay: every captured message sent again -- verbatim, after a restart, after expiry, to
another party -- is refused, or answered with the stored outcome and no second effect.

The messages are the ones the wiretap (a TLS terminator on every scheme link) recorded
while real payments and refunds went through, and the orders the wallet stored before it
sent them. "No effect" is checked on every row of every table of the router, both
processors and the merchant backend (state.py), and on the balances.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import pytest

from semops.devnet.actors import balance, request_payment
from semops.protocol import OrderState, TransferFulfil, TransferStatus
from tests.attack.attacker import (
    Answer,
    claims_of,
    forge_order,
    pay,
    post_jose,
    to_router,
    to_scheme_port,
    to_wallet_port,
    verified,
)
from tests.attack.conftest import PIN, SHOP_Y, SHOP_Y_AUTH, Scene
from tests.attack.flows import Routed, refund_of, routed_payment
from tests.attack.state import differences

pytestmark = pytest.mark.timeout(300)

# Both kinds of expiring message in this suite live TRANSFER_TTL_DEFAULT_S (30 s); a request
# lives at least REQUEST_TTL_MIN_S (30 s). The expiry test waits (with a deadline) until
# the ones captured at the start are this old.
EXPIRY_WAIT_S = 31 + 2


@pytest.fixture
def early(scene: Scene) -> Routed:
    """The payment captured when the network started (it expires while the suite runs)."""
    return scene.early


def _refused(answer: Answer, status: int, code: str) -> None:
    assert (answer.status, answer.code) == (status, code), answer.body


def _balances(scene: Scene) -> dict[str, int]:
    who = {**scene.people, **scene.shops}
    return {key: balance(scene.network, p.processor_id, p.account_id) for key, p in who.items()}


# --- orders -----------------------------------------------------------------------------


def test_a_captured_order_gets_its_stored_receipt_again_even_after_a_crash(
    scene: Scene, early: Routed
) -> None:
    network = scene.network
    payment = routed_payment(scene, 700)
    before = scene.quiet()
    balances = _balances(scene)

    again = to_wallet_port(network, "bank-a", payment.order)
    assert (again.status, again.body) == (200, payment.receipt)
    scene.assert_unchanged(before)

    network.restart("bank-a", hard=True)
    before = scene.quiet()  # a restart re-registers with the router (its updated_at)
    after_crash = to_wallet_port(network, "bank-a", payment.order)
    assert (after_crash.status, after_crash.body) == (200, payment.receipt)
    scene.assert_unchanged(before)
    assert _balances(scene) == balances


def test_an_order_for_bank_a_sent_to_mno_b_is_refused(scene: Scene, early: Routed) -> None:
    before = scene.quiet()
    _refused(to_wallet_port(scene.network, "mno-b", early.order), 403, "device_unknown")
    scene.assert_unchanged(before)


def test_a_paid_request_cannot_be_paid_by_a_new_order_of_the_same_customer(
    scene: Scene, early: Routed
) -> None:
    """The wallet refuses to pay a request twice; a hand-made second order (a new order id,
    the right PIN) is refused by the payee side, and no money moves."""
    alice = scene.people["alice"]
    balances = _balances(scene)
    second = forge_order(
        scene.network, alice, early.request["token"], pin=PIN, entropy=secrets.token_bytes(16)
    )
    answer = to_wallet_port(scene.network, "bank-a", second.token)
    _refused(answer, 409, "request_already_paid")
    scene.quiet()
    assert _balances(scene) == balances


def test_an_order_refused_for_lack_of_funds_does_not_pay_when_replayed_later(
    scene: Scene,
) -> None:
    network = scene.network
    poor = scene.customer("bank-a", deposit_minor=100)
    created = request_payment(network, scene.shops["books"], 500)
    order = forge_order(network, poor, created["token"], pin=PIN, entropy=secrets.token_bytes(16))
    _refused(to_wallet_port(network, "bank-a", order.token), 402, "insufficient_funds")
    network.admin(
        "bank-a",
        "POST",
        f"/v1/admin/accounts/{poor.account_id}/deposits",
        {"amount_minor": 1000, "reference": "salary"},
    )
    replayed = to_wallet_port(network, "bank-a", order.token)
    assert balance(network, "bank-a", poor.account_id) == 1100
    _refused(replayed, 402, "insufficient_funds")


# --- the scheme messages ----------------------------------------------------------------


def test_a_captured_prepare_gets_the_stored_status_and_moves_nothing(scene: Scene) -> None:
    # Captured now, not at the suite's start: it must be replayed within its short expiry
    # (TRANSFER_TTL_DEFAULT_S), whatever the tests before it took.
    fresh = routed_payment(scene, 133)
    network = scene.network
    before = scene.quiet()
    again = to_router(network, "/v1/transfers", fresh.prepare)
    assert again.status == 200, again.body
    status = verified(again.body, network, "bank-a", TransferStatus)
    assert (status.transfer_id, status.state) == (fresh.transfer_id, "committed")
    assert status == verified(fresh.status_reply, network, "bank-a", TransferStatus)
    # The same prepare from another participant's TLS identity is refused outright.
    answer = to_router(network, "/v1/transfers", fresh.prepare, as_party="mno-b")
    _refused(answer, 403, "tls_peer_mismatch")
    scene.assert_unchanged(before)


def test_a_prepare_sent_straight_to_the_payee_processor_is_refused(
    scene: Scene, early: Routed
) -> None:
    """Only the router's RoutedPrepare is accepted on a scheme port, so the payee side
    never acts on a prepare that skipped the router (the commit point)."""
    before = scene.quiet()
    answer = to_scheme_port(scene.network, "mno-b", "/v1/scheme/transfers", early.prepare)
    _refused(answer, 400, "message_type_unexpected")
    scene.assert_unchanged(before)


def test_a_captured_routed_prepare_gets_the_stored_fulfil(scene: Scene, early: Routed) -> None:
    network = scene.network
    before = scene.quiet()
    again = to_scheme_port(network, "mno-b", "/v1/scheme/transfers", early.routed)
    assert (again.status, again.body) == (200, early.fulfil)
    fulfil = verified(again.body, network, "bank-a", TransferFulfil)
    assert fulfil.transfer_id == early.transfer_id
    scene.assert_unchanged(before)


def test_a_routed_prepare_for_mno_b_sent_to_bank_a_is_refused(scene: Scene, early: Routed) -> None:
    before = scene.quiet()
    answer = to_scheme_port(scene.network, "bank-a", "/v1/scheme/transfers", early.routed)
    _refused(answer, 403, "forbidden")
    scene.assert_unchanged(before)


def test_a_captured_fulfil_is_accepted_nowhere(scene: Scene, early: Routed) -> None:
    """A fulfil is only ever an answer; posted as a request it is refused by type."""
    network = scene.network
    before = scene.quiet()
    _refused(
        to_router(network, "/v1/transfers", early.fulfil, as_party="mno-b"),
        400,
        "message_type_unexpected",
    )
    _refused(
        to_scheme_port(network, "bank-a", "/v1/scheme/status", early.fulfil),
        400,
        "message_type_unexpected",
    )
    scene.assert_unchanged(before)


def test_a_captured_status_changes_nothing_at_either_processor_even_after_a_crash(
    scene: Scene, early: Routed
) -> None:
    network = scene.network
    before = scene.quiet()
    for processor_id in ("mno-b", "bank-a"):  # the payee it was for; the payer
        for token in (early.status_push, early.status_reply):
            answer = to_scheme_port(network, processor_id, "/v1/scheme/status", token)
            assert answer.status == 204, answer.body
    scene.assert_unchanged(before)

    network.restart("mno-b", hard=True)
    before = scene.quiet()
    answer = to_scheme_port(network, "mno-b", "/v1/scheme/status", early.status_push)
    assert answer.status == 204, answer.body
    scene.assert_unchanged(before)


# --- notices ----------------------------------------------------------------------------


def _shop_y_url(scene: Scene) -> str:
    return f"http://127.0.0.1:{scene.layout.ports[SHOP_Y]}"


def _wait_for(predicate: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_a_notice_delivered_again_or_to_another_merchant_changes_nothing(
    scene: Scene, early: Routed
) -> None:
    tap = scene.tap
    y_url = _shop_y_url(scene)
    # shop-y's own order, paid by bob; its backend hears the notice by webhook.
    with_y = post_json(
        y_url + "/v1/orders", {"amount": "4.50", "currency": "EUR"}, headers=SHOP_Y_AUTH
    )
    outcome = pay(scene.people["bob"], with_y["token"])
    assert outcome.state is OrderState.COMPLETED
    order_url = f"{y_url}/v1/orders/{with_y['order_id']}"
    paid = _wait_for(lambda: (d := get_json(order_url))["state"] == "paid" and d)
    assert paid, get_json(order_url)
    cafe_notice = _wait_for(
        lambda: [
            x.request_body
            for x in tap.captured("webhook", "/notices")
            if claims_of(x.request_body)["request_id"] == early.request["request_id"]
        ]
    )
    assert cafe_notice, "corner-cafe's webhook never got its notice"
    before = scene.quiet()

    own = post_jose(y_url + "/v1/notices", str(paid["notice"]))
    assert own.status == 200 and json_of(own)["state"] == "paid"
    # corner-cafe's notice, signed by the same processor, delivered to shop-y's backend.
    _refused(post_jose(y_url + "/v1/notices", cafe_notice[0]), 403, "forbidden")
    scene.assert_unchanged(before)


# --- refunds ----------------------------------------------------------------------------


def test_a_captured_refund_gets_its_stored_outcome_and_credits_once(scene: Scene) -> None:
    network, tap = scene.network, scene.tap
    sent = refund_of(scene, routed_payment(scene, 900), 400)
    forwarded = [
        x for x in tap.captured("router>bank-a", "/v1/scheme/refunds") if x.request_body == sent
    ]
    assert len(forwarded) == 1  # the router forwards the refund verbatim
    before = scene.quiet()
    balances = _balances(scene)

    again = to_router(network, "/v1/refunds", sent, as_party="mno-b")
    assert again.status == 200
    status = verified(again.body, network, "mno-b", TransferStatus)
    assert (status.kind, status.state, status.amount_minor) == ("refund", "committed", 400)
    straight = to_scheme_port(network, "bank-a", "/v1/scheme/refunds", sent)
    assert (straight.status, straight.body) == (200, forwarded[0].response_body)
    scene.assert_unchanged(before)
    assert _balances(scene) == balances


def test_a_refund_sent_to_a_processor_that_was_never_paid_moves_no_money(
    scene: Scene,
) -> None:
    """mno-b itself sent the refund; as its receiver it has no such outbound payment. It
    answers a signed rejection and records that answer (so a retry gets the same), and
    nothing else changes."""
    network = scene.network
    fresh = refund_of(scene, routed_payment(scene, 90), 9)  # the early one may have expired
    before = scene.quiet()
    answer = to_scheme_port(network, "mno-b", "/v1/scheme/refunds", fresh)
    assert answer.status == 200
    result = claims_of(answer.body)
    assert (result["outcome"], result["reason_code"]) == ("rejected", "refund_not_allowed")
    after = scene.quiet()
    changed = differences(before, after)
    assert len(changed) == 1 and changed[0].startswith("mno-b.refunds_in: +"), changed
    assert "'rejected'" in changed[0] and "-[]" in changed[0]


# --- expiry -----------------------------------------------------------------------------


def test_expired_captures_are_refused_and_change_nothing(scene: Scene, early: Routed) -> None:
    """Runs last in this module: by now the early captures are past their expiry (the
    wait below is only as long as needed, usually nothing)."""
    network = scene.network
    refund, fresh = scene.early_refund, scene.short_request
    prepare_expiry = claims_of(early.prepare)["expires_at"]
    last_expiry = max(prepare_expiry, claims_of(refund)["expires_at"], fresh["expires_at"])
    deadline = time.monotonic() + EXPIRY_WAIT_S + 10
    while time.time() < last_expiry + 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    before = scene.quiet()

    _refused(to_router(network, "/v1/transfers", early.prepare), 410, "transfer_expired")
    _refused(to_router(network, "/v1/refunds", refund, as_party="mno-b"), 410, "message_expired")
    late = forge_order(
        network, scene.people["alice"], fresh["token"], pin=PIN, entropy=secrets.token_bytes(16)
    )
    _refused(to_wallet_port(network, "bank-a", late.token), 410, "request_expired")
    # The routed prepare is answered from storage whatever its age: the stored fulfil.
    again = to_scheme_port(network, "mno-b", "/v1/scheme/transfers", early.routed)
    assert (again.status, again.body) == (200, early.fulfil)
    scene.assert_unchanged(before, refused=("request_expired",))


# --- small HTTP helpers -------------------------------------------------------------------


def post_json(url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    response = httpx.post(url, json=body, headers=headers, timeout=30)
    assert response.status_code < 300, response.text
    return response.json()


def get_json(url: str) -> Any:
    return httpx.get(url, timeout=30).json()


def json_of(answer: Answer) -> Any:
    return json.loads(answer.body)
