"""Every service killed with -9 in the middle of a burst: what was acknowledged is there.

A receipt in a wallet is the end of a chain of acknowledgements: mno-b stored its
acceptance before it answered the router, the router stored the commit before it answered
bank-a, bank-a stored the committed order before it answered the wallet. Each of those
stores is a durable commit (SQLite WAL with synchronous=FULL, grouped; PostgreSQL's
commit), so killing all three at once must lose none of them: right after the kill, before
anything restarts, every receipt the wallets hold is found committed at bank-a and at the
router, and known at mno-b. After the restart every payment of the burst ends the same on
all three sides and the money adds up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from semops.protocol import OrderState
from semops.wallet.service import PaymentOutcome
from tests.recovery.harness import (
    DECIDED_WITHIN_S,
    PAYEE,
    PAYER,
    ROUTER,
    Scene,
    pay,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

BURST = 18
AMOUNT = 1_234


def test_no_acknowledged_payment_is_lost_when_every_service_dies_mid_burst(
    scene: Scene,
) -> None:
    people = scene.people
    before = scene.books()
    payers = [people.alice, people.carol, people.dave]
    created = [scene.request(people.cafe, AMOUNT) for _ in range(BURST)]
    pool = ThreadPoolExecutor(max_workers=len(payers) * 2, thread_name_prefix="burst")
    try:
        paying: list[Future[PaymentOutcome]] = [
            pool.submit(asyncio.run, pay(payers[index % len(payers)], request["token"]))
            for index, request in enumerate(created)
        ]
        wait_for("a few receipts", lambda: sum(f.done() for f in paying) >= 3 or None)
        for name in (PAYER, ROUTER, PAYEE):  # as good as at once: no one shuts down cleanly
            popen = scene.process(name).process
            assert popen is not None
            os.kill(popen.pid, signal.SIGKILL)
        for name in (PAYER, ROUTER, PAYEE):
            scene.kill(name)  # reaped
        outcomes = [future.result(timeout=60) for future in paying]
    finally:
        pool.shutdown(wait=True)

    acknowledged = [o for o in outcomes if o.state is OrderState.COMPLETED]
    assert acknowledged, "no payment completed before the kill"
    assert len(acknowledged) < BURST, "the kill came after the burst"
    for outcome in acknowledged:  # read from the files of the dead services
        assert outcome.receipt is not None
        transfer_id = outcome.receipt.transfer_id
        assert scene.payer_state(transfer_id) == "committed"
        assert scene.router_state(transfer_id) == "committed"
        assert scene.inbound_state(transfer_id) in ("accepted", "committed")

    for name in (ROUTER, PAYEE, PAYER):
        scene.start(name)
    orders = [scene.order(request["request_id"]) for request in created]
    started = [order for order in orders if order is not None]
    deadline = time.monotonic() + DECIDED_WITHIN_S
    for order in started:
        transfer_id = order["transfer_id"]
        try:
            wait_for(
                f"{transfer_id} decided on every side",
                lambda t=transfer_id: _decided(scene, t),
                max(1.0, deadline - time.monotonic()),
            )
        except AssertionError as timed_out:
            states = [f(transfer_id) for f in (scene.payer_state, scene.router_state)]
            raise AssertionError(f"{timed_out}: {states}, {scene.inbound(transfer_id)}") from None
        outcome = scene.payer_state(transfer_id)
        if scene.router_state(transfer_id) is not None:
            scene.assert_three_sides(transfer_id, outcome)
        else:  # the prepare never reached the router: the payer aborted it alone
            assert outcome == "aborted"
    paid = sum(scene.payer_state(order["transfer_id"]) == "committed" for order in started)
    assert paid >= len(acknowledged)
    after = scene.books()
    spent = sum(before.customers.values()) - sum(after.customers.values())
    received = after.merchants[people.cafe.merchant_id] - before.merchants[people.cafe.merchant_id]
    assert spent == received == paid * AMOUNT
    assert after.suspense == {PAYER: 0, PAYEE: 0}


def _decided(scene: Scene, transfer_id: str) -> bool:
    """The payer decided, and the others agree with it (or never saw the transfer)."""
    payer = scene.payer_state(transfer_id)
    router = scene.router_state(transfer_id)
    payee = scene.inbound_state(transfer_id)
    if payer == "committed":
        return router == "committed" and payee == "committed"
    if payer == "aborted":
        return router in ("aborted", None) and payee in ("aborted", "rejected", None)
    return False
