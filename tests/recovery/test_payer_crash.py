"""The payer processor killed with -9 after it sent the prepare, then started again.

Its order was stored with the reservation before the prepare left (DESIGN.md §3), so on
restart it finds an order whose outcome it does not know and asks the router: committed if
the payee's fulfil reached the router, aborted at expiry if the payee stayed out of reach.
The wallet, which lost its connection, re-sends the very same order: the processor answers
with the stored outcome, and the customer is debited once or not at all.
"""

from __future__ import annotations

import asyncio

import pytest

from semops.protocol import OrderState
from tests.recovery.harness import (
    DECIDED_WITHIN_S,
    PAYER,
    SOON_S,
    Scene,
    wait_for,
    wallet_resume,
)
from tests.recovery.line import TO_ROUTER

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize(
    ("fulfil", "outcome_at_router"),
    [("arrives", "committed"), ("is_lost", "aborted")],
)
def test_a_payer_killed_mid_payment_learns_the_outcome_from_the_router_and_debits_once(
    scene: Scene, fulfil: str, outcome_at_router: str
) -> None:
    carol, cafe = scene.people.carol, scene.people.cafe
    amount = 8_888
    before = scene.books()
    created = scene.request(cafe, amount)
    answered = scene.inbound_count()
    scene.line.hold_when(lambda: scene.inbound_count() > answered, TO_ROUTER)

    paying = scene.pay_in_background(carol, created["token"])
    order = scene.wait_order(created["request_id"])
    transfer_id = order["transfer_id"]
    wait_for("the fulfil to be caught", lambda: scene.line.held() > 0)
    assert scene.router_state(transfer_id) == "reserved"  # the prepare reached the router

    scene.kill(PAYER)
    outcome = paying.result(timeout=SOON_S)
    assert outcome.state is OrderState.PENDING, outcome.order  # the wallet lost its answer
    if fulfil == "arrives":
        scene.line.open()  # the router commits; its reply to the payer finds no one
    else:
        # The fulfil is lost and the payee stays out of reach: the router's resends find no
        # one, so it expires the transfer.
        scene.line.block()
    wait_for(
        "the router to decide",
        lambda: scene.router_state(transfer_id) != "reserved",
        DECIDED_WITHIN_S,
    )
    scene.line.open()  # the payee can be told now
    assert scene.router_state(transfer_id) == outcome_at_router
    # What the dead payer had stored: its reservation, and perhaps the router's word that it
    # recorded the transfer, which can reach the payer before the kill. Either way, no outcome.
    assert scene.payer_state(transfer_id) in {"reserved", "prepared"}

    scene.start(PAYER)
    wait_for(
        "the payer to ask the router",
        lambda: scene.payer_state(transfer_id) == outcome_at_router,
    )
    wait_for(
        "the payee to be told",
        lambda: scene.inbound_state(transfer_id) == outcome_at_router,
    )
    retried = asyncio.run(wallet_resume(carol, outcome.order.order_id))
    stored = scene.order(created["request_id"])
    assert stored is not None
    if outcome_at_router == "committed":
        assert retried.state is OrderState.COMPLETED, retried.order
        assert retried.receipt is not None
        assert (retried.receipt.order_id, retried.receipt.transfer_id) == (
            outcome.order.order_id,
            transfer_id,
        )
        assert stored["receipt"] == retried.order.receipt
    else:
        assert retried.state is OrderState.FAILED, retried.order
        assert retried.order.error_code == stored["reason_code"] == "transfer_expired"

    scene.assert_three_sides(transfer_id, outcome_at_router)
    paid = outcome_at_router == "committed"
    assert scene.request_view(cafe, created["request_id"])["state"] == ("paid" if paid else "open")
    scene.assert_moved(before, payer=carol, payee=cafe, amount_minor=amount if paid else 0)
