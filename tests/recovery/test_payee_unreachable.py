"""A payee processor that is slow (frozen with SIGSTOP) or down (kill -9) during a payment.

DESIGN.md §3: the router is the commit point; the payer processor reserves, and voids an
expired reservation only after the router confirms the transfer is not committed; the
payee processor credits only on the router's COMMITTED. So whatever the payee processor
does, the three sides end the same way, and money held meanwhile is exactly the amount.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from semops.protocol import OrderState
from tests.recovery.harness import (
    DECIDED_WITHIN_S,
    PAYEE,
    PAYER,
    SOON_S,
    Scene,
    paid_transfer,
    pay,
    wait_for,
    wallet_status,
)

pytestmark = pytest.mark.timeout(180)

_PENDING = ("reserved", "prepared", "in_doubt")


def _payer_waits_for_the_router(scene: Scene, transfer_id: str) -> str:
    """Until the router decides, watch that the payer processor never decides first.

    The payer's state is read before the router's, so a payer that follows the router can
    never be seen ahead of it; a void without the router's word would be."""
    deadline = time.monotonic() + DECIDED_WITHIN_S
    while time.monotonic() < deadline:
        payer = scene.payer_state(transfer_id)
        router = scene.router_state(transfer_id)
        assert router is not None
        if payer not in _PENDING:
            assert router == payer, f"the payer decided {payer} while the router was {router}"
        if router != "reserved":
            return router
        time.sleep(0.1)
    raise AssertionError("the router never decided the transfer")


def test_a_frozen_payee_that_answers_in_time_completes_the_payment_on_every_side(
    scene: Scene,
) -> None:
    alice, cafe = scene.people.alice, scene.people.cafe
    amount = 1_111
    before = scene.books()
    created = scene.request(cafe, amount)

    with scene.frozen(PAYEE):
        paying = scene.pay_in_background(alice, created["token"])
        order = scene.wait_order(created["request_id"])
        transfer_id = order["transfer_id"]
        wait_for("the router to record the transfer", lambda: scene.router_state(transfer_id))
        # The router waits on the frozen payee: money is held, nothing is decided anywhere.
        assert scene.router_state(transfer_id) == "reserved"
        assert scene.payer_state(transfer_id) in _PENDING
        assert scene.available(alice) == before.customers[alice.name] - amount
        assert scene.suspense(PAYER) == amount
        assert not paying.done()

    outcome = paying.result(timeout=SOON_S)
    assert outcome.state is OrderState.COMPLETED, outcome.order
    assert outcome.receipt is not None and paid_transfer(outcome) == transfer_id
    wait_for("the payee to be told", lambda: scene.inbound_state(transfer_id) == "committed")
    scene.assert_three_sides(transfer_id, "committed")
    view = scene.request_view(cafe, created["request_id"])
    assert view["state"] == "paid" and view["transfer_id"] == transfer_id
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=amount)


def test_a_payee_frozen_past_expiry_never_gets_the_money_and_the_payer_voids_on_the_routers_word(
    scene: Scene,
) -> None:
    alice, cafe = scene.people.alice, scene.people.cafe
    amount = 2_222
    before = scene.books()
    created = scene.request(cafe, amount)

    with scene.frozen(PAYEE):
        outcome = asyncio.run(pay(alice, created["token"]))
        # The router gave up waiting for the payee before the transfer's expiry: the
        # wallet is told "pending", the payer holds the money and asks the router.
        assert outcome.state is OrderState.PENDING, outcome.order
        order = scene.order(created["request_id"])
        assert order is not None
        transfer_id = order["transfer_id"]
        assert scene.payer_state(transfer_id) == "in_doubt"
        assert scene.router_state(transfer_id) == "reserved"
        assert scene.available(alice) == before.customers[alice.name] - amount
        asked = asyncio.run(wallet_status(alice, outcome.order.order_id))
        assert asked.state is OrderState.PENDING  # asking the router changes nothing yet

        router = _payer_waits_for_the_router(scene, transfer_id)
        assert router == "aborted"
        decided = scene.router_transfer(transfer_id)
        assert decided is not None and decided["reason_code"] == "transfer_expired"
        wait_for("the payer to void", lambda: scene.payer_state(transfer_id) == "aborted")
        # Still frozen: the payee has not seen the prepare, let alone answered it.
        assert scene.inbound(transfer_id) is None

    # Thawed after the expiry, the payee finds the prepare in its socket: too late. It may
    # refuse it or never answer, but it must not take it, and it credits nothing.
    wait_for(
        "the router's abort to reach the payee",
        lambda: all(row["delivered_at"] for row in scene.router_status_pushes(PAYEE, transfer_id)),
        DECIDED_WITHIN_S,
    )
    scene.assert_three_sides(transfer_id, "aborted")
    assert scene.inbound_state(transfer_id) in (None, "rejected")
    assert scene.request_view(cafe, created["request_id"])["state"] == "open"
    failed = asyncio.run(wallet_status(alice, outcome.order.order_id))
    assert failed.state is OrderState.FAILED
    assert failed.order.error_code == "transfer_expired"
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=0)

    # The request was never taken: paying it again now goes through, once.
    again = asyncio.run(pay(alice, created["token"]))
    assert again.state is OrderState.COMPLETED, again.order
    wait_for(
        "the second transfer to reach the payee",
        lambda: scene.inbound_state(paid_transfer(again)) == "committed",
    )
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=amount)


def test_a_payee_killed_before_the_payment_gets_nothing_and_works_again_when_back(
    scene: Scene,
) -> None:
    carol, cafe = scene.people.carol, scene.people.cafe
    amount = 3_333
    before = scene.books()
    created = scene.request(cafe, amount)  # made while the payee processor is up

    scene.kill(PAYEE)
    outcome = asyncio.run(pay(carol, created["token"]))
    assert outcome.state is OrderState.PENDING, outcome.order
    order = scene.order(created["request_id"])
    assert order is not None
    transfer_id = order["transfer_id"]
    assert scene.payer_state(transfer_id) == "in_doubt"
    assert scene.available(carol) == before.customers[carol.name] - amount

    router = _payer_waits_for_the_router(scene, transfer_id)
    assert router == "aborted"
    wait_for("the payer to void", lambda: scene.payer_state(transfer_id) == "aborted")
    assert scene.available(carol) == before.customers[carol.name]

    scene.start(PAYEE)
    scene.assert_three_sides(transfer_id, "aborted")
    assert scene.inbound(transfer_id) is None  # it never saw the transfer
    assert scene.request_view(cafe, created["request_id"])["state"] == "open"
    failed = asyncio.run(wallet_status(carol, outcome.order.order_id))
    assert failed.state is OrderState.FAILED and failed.order.error_code == "transfer_expired"
    scene.assert_moved(before, payer=carol, payee=cafe, amount_minor=0)

    again = asyncio.run(pay(carol, created["token"]))
    assert again.state is OrderState.COMPLETED, again.order
    wait_for(
        "the new transfer to reach the payee",
        lambda: scene.inbound_state(paid_transfer(again)) == "committed",
    )
    scene.assert_three_sides(paid_transfer(again), "committed")
    scene.assert_moved(before, payer=carol, payee=cafe, amount_minor=amount)
