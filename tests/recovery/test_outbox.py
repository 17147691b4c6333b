"""Durable outboxes: a message for a party that is down waits and is delivered when it returns.

Two outboxes (DESIGN.md §3): the router's, carrying each decided transfer's status to the
processors, and a payee processor's, carrying the signed PaymentNotice to the merchant's
webhook. Both live in the sender's database, so they survive the sender's restart too.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from semops.protocol import OrderState, PaymentNotice, open_signed
from tests.recovery.harness import (
    DECIDED_WITHIN_S,
    PAYEE,
    Scene,
    paid_transfer,
    pay,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)


def test_a_status_push_to_a_payee_killed_after_it_fulfilled_is_delivered_when_it_returns(
    scene: Scene,
) -> None:
    alice, cafe = scene.people.alice, scene.people.cafe
    amount = 6_666
    before = scene.books()
    created = scene.request(cafe, amount)
    answered = scene.inbound_count()
    scene.line.hold_when(lambda: scene.inbound_count() > answered)

    outcome = asyncio.run(pay(alice, created["token"]))
    assert outcome.state is OrderState.COMPLETED, outcome.order
    transfer_id = paid_transfer(outcome)
    wait_for("the status push to be caught", lambda: scene.line.held() > 0)
    scene.kill(PAYEE)  # it fulfilled; the commit's news has not reached it
    scene.line.cut_held()

    assert scene.router_state(transfer_id) == "committed"
    wait_for(
        "the router to fail a delivery to the dead payee",
        lambda: scene.router_status_pushes(PAYEE, transfer_id)[0]["attempts"] > 0,
    )
    assert scene.inbound_state(transfer_id) == "accepted"  # its database, as it died

    scene.start(PAYEE)
    wait_for(
        "the outbox to deliver",
        lambda: scene.inbound_state(transfer_id) == "committed",
        DECIDED_WITHIN_S,
    )
    wait_for(
        "the router to record the delivery",
        lambda: scene.router_status_pushes(PAYEE, transfer_id)[0]["delivered_at"],
    )
    (push,) = scene.router_status_pushes(PAYEE, transfer_id)
    assert push["attempts"] > 0  # it waited: tried while the payee was down, then delivered
    scene.assert_three_sides(transfer_id, "committed")
    view = scene.request_view(cafe, created["request_id"])
    assert view["state"] == "paid" and view["notice"]
    scene.assert_moved(before, payer=alice, payee=cafe, amount_minor=amount)


def test_a_notice_for_a_webhook_that_is_down_is_delivered_once_when_it_returns(
    scene: Scene,
) -> None:
    dave, kiosk, webhook = scene.people.dave, scene.people.kiosk, scene.people.webhook
    amount = 7_777
    before = scene.books()
    created = scene.request(kiosk, amount)
    request_id = created["request_id"]

    outcome = asyncio.run(pay(dave, created["token"]))  # the webhook is not listening
    assert outcome.state is OrderState.COMPLETED, outcome.order
    transfer_id = paid_transfer(outcome)
    wait_for(
        "a failed delivery attempt",
        lambda: any(row["attempts"] > 0 for row in scene.notice_deliveries(request_id)),
    )
    scene.kill(PAYEE)  # the processor goes down too, and comes back, before the webhook
    scene.start(PAYEE)
    (delivery,) = scene.notice_deliveries(request_id)
    assert delivery["delivered_at"] is None
    assert webhook.notices_for(request_id) == []

    webhook.start()
    try:
        wait_for(
            "the notice to be delivered",
            lambda: scene.notice_deliveries(request_id)[0]["delivered_at"],
            DECIDED_WITHIN_S,
        )
        # A later notice is delivered after it: by then a duplicate of the first would be in.
        later = scene.request(kiosk, 100)
        assert asyncio.run(pay(dave, later["token"])).state is OrderState.COMPLETED
        wait_for(
            "the later notice to be delivered",
            lambda: webhook.notices_for(later["request_id"]),
            DECIDED_WITHIN_S,
        )
    finally:
        webhook.stop()

    ring = scene.trusted(PAYEE).ring
    notices = [
        open_signed(body, PaymentNotice, ring, int(time.time()), expected_signer=PAYEE).message
        for body in webhook.received
    ]
    mine = [notice for notice in notices if notice.request_id == request_id]
    assert len(mine) == 1, "the notice must arrive exactly once"
    (notice,) = mine
    assert (notice.request_id, notice.transfer_id) == (request_id, transfer_id)
    assert (notice.amount_minor, notice.guarantee) == (amount, "irrevocable")
    scene.assert_three_sides(transfer_id, "committed")
    scene.assert_moved(before, payer=dave, payee=kiosk, amount_minor=amount + 100)
