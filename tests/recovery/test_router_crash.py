"""The router killed with -9 in the middle of a payment, then started again.

The router's database is the commit point (DESIGN.md §3): what it recorded before the
crash decides the transfer after it. Killed between prepare and fulfil (the payee
processor has accepted, its fulfil is on the wire), the transfer is still RESERVED when the
router comes back: it sends the stored routed prepare again, the payee answers its stored
fulfil and the payment commits on every side; if the payee stays out of reach until the
expiry instead, every side aborts, the payee processor too, which hands the request back.
Killed right after the commit, the payer already has its receipt, and the payee processor
is told through the router's durable outbox.
"""

from __future__ import annotations

import asyncio

import pytest

from semops.protocol import OrderState
from tests.recovery.harness import (
    DECIDED_WITHIN_S,
    PAYEE,
    ROUTER,
    SOON_S,
    Scene,
    paid_transfer,
    pay,
    wait_for,
    wallet_status,
)
from tests.recovery.line import TO_ROUTER

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("payee", ["answers_again", "stays_unreachable"])
def test_a_router_killed_between_prepare_and_fulfil_ends_the_same_on_every_side(
    scene: Scene, payee: str
) -> None:
    alice, cafe = scene.people.alice, scene.people.cafe
    amount = 4_444
    before = scene.books()
    created = scene.request(cafe, amount)

    answered = scene.inbound_count()
    # The payee processor's answer -- its fulfil -- is caught on its way back to the router.
    scene.line.hold_when(lambda: scene.inbound_count() > answered, TO_ROUTER)
    paying = scene.pay_in_background(alice, created["token"])
    transfer_id = scene.wait_order(created["request_id"])["transfer_id"]
    wait_for("the fulfil to be caught", lambda: scene.line.held() > 0)
    assert scene.inbound_state(transfer_id) == "accepted"
    assert scene.request_view(cafe, created["request_id"])["state"] == "reserved"
    assert scene.router_state(transfer_id) == "reserved"
    assert scene.payer_state(transfer_id) in ("reserved", "prepared")
    assert scene.available(alice) == before.customers[alice.name] - amount

    scene.kill(ROUTER)
    scene.line.cut_held()  # the fulfil dies with the router's connection
    outcome = paying.result(timeout=SOON_S)
    assert outcome.state is OrderState.PENDING, outcome.order
    assert scene.payer_state(transfer_id) == "in_doubt"
    assert scene.router_state(transfer_id) == "reserved"  # what the dead router recorded
    assert scene.inbound_state(transfer_id) == "accepted"

    if payee == "answers_again":
        scene.start(ROUTER)  # it resends the routed prepare; the payee answers from storage
        wait_for(
            "the router to commit",
            lambda: scene.router_state(transfer_id) == "committed",
            DECIDED_WITHIN_S,
        )
        wait_for("the payer to learn", lambda: scene.payer_state(transfer_id) == "committed")
        wait_for("the payee to be told", lambda: scene.inbound_state(transfer_id) == "committed")
        scene.assert_three_sides(transfer_id, "committed")
        view = scene.request_view(cafe, created["request_id"])
        assert view["state"] == "paid" and view["transfer_id"] == transfer_id
        done = asyncio.run(wallet_status(alice, outcome.order.order_id))
        assert done.state is OrderState.COMPLETED, done.order
        scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=amount)
        return

    scene.line.block()  # the payee is out of reach for the router's resends
    scene.start(ROUTER)
    wait_for(
        "the router to expire the transfer",
        lambda: scene.router_state(transfer_id) == "aborted",
        DECIDED_WITHIN_S,
    )
    scene.line.open()  # the payee can be told now
    wait_for("the payer to void", lambda: scene.payer_state(transfer_id) == "aborted")
    wait_for("the payee to let go", lambda: scene.inbound_state(transfer_id) == "aborted")
    scene.assert_three_sides(transfer_id, "aborted")
    assert scene.request_view(cafe, created["request_id"])["state"] == "open"
    failed = asyncio.run(wallet_status(alice, outcome.order.order_id))
    assert failed.state is OrderState.FAILED and failed.order.error_code == "transfer_expired"
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=0)

    again = asyncio.run(pay(alice, created["token"]))  # handed back: payable again, once
    assert again.state is OrderState.COMPLETED, again.order
    wait_for(
        "the new transfer to reach the payee",
        lambda: scene.inbound_state(paid_transfer(again)) == "committed",
    )
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=amount)


def test_a_router_killed_after_the_commit_still_tells_the_payee_from_its_outbox(
    scene: Scene,
) -> None:
    carol, cafe = scene.people.carol, scene.people.cafe
    amount = 5_555
    before = scene.books()
    created = scene.request(cafe, amount)
    answered = scene.inbound_count()
    # Whatever the router sends the payee once it has answered -- the status push -- waits.
    scene.line.hold_when(lambda: scene.inbound_count() > answered)

    outcome = asyncio.run(pay(carol, created["token"]))
    assert outcome.state is OrderState.COMPLETED, outcome.order
    transfer_id = paid_transfer(outcome)
    wait_for("the status push to be caught", lambda: scene.line.held() > 0)
    assert scene.router_state(transfer_id) == "committed"
    (push,) = scene.router_status_pushes(PAYEE, transfer_id)
    assert push["delivered_at"] is None
    assert scene.inbound_state(transfer_id) == "accepted"
    assert scene.request_view(cafe, created["request_id"])["state"] == "reserved"

    scene.kill(ROUTER)
    scene.line.cut_held()
    assert scene.inbound_state(transfer_id) == "accepted"  # the payee does not know yet
    assert scene.balance(cafe) == before.merchants[cafe.merchant_id]

    scene.start(ROUTER)
    wait_for("the payee to be told", lambda: scene.inbound_state(transfer_id) == "committed")
    wait_for(  # the outbox survived the crash: the restarted router delivered it
        "the router to record the delivery",
        lambda: scene.router_status_pushes(PAYEE, transfer_id)[0]["delivered_at"],
    )
    scene.assert_three_sides(transfer_id, "committed")
    view = scene.request_view(cafe, created["request_id"])
    assert view["state"] == "paid" and view["transfer_id"] == transfer_id and view["notice"]
    scene.assert_moved(before, payer=carol, payee=cafe, amount_minor=amount)
