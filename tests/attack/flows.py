"""The captured flows the attack tests start from: a routed payment and its refund, with
every message as the wiretap saw it."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from semops.core.errors import SemopsError
from semops.devnet.actors import merchant_call, request_payment
from semops.protocol import OrderState
from tests.attack.attacker import claims_of, pay, stored_order_token

# How long a captured payment waits for the router's status push to reach mno-b.
PUSH_WAIT_S: Final = 20.0

if TYPE_CHECKING:
    from tests.attack.conftest import Scene


@dataclass(frozen=True)
class Routed:
    """One routed payment (alice at bank-a -> corner-cafe at mno-b), as it was captured."""

    request: dict[str, Any]
    order_id: str
    order: str
    receipt: str
    transfer_id: str
    prepare: str  # bank-a -> router
    status_reply: str  # router -> bank-a, the answer to the prepare
    routed: str  # router -> mno-b
    fulfil: str  # mno-b -> router, the answer to the routed prepare
    status_push: str  # router -> mno-b, through its outbox


def _transfer_of(body: str) -> str | None:
    """The transfer id a captured body names (None for a body that is no signed message,
    e.g. a connection cut before its body was through)."""
    try:
        return str(claims_of(body).get("transfer_id"))
    except (ValueError, IndexError, TypeError, AssertionError, SemopsError):
        return None


def _found(exchanges: list[Any], transfer_id: str, *, answer: bool = True) -> list[Any]:
    return [
        x
        for x in exchanges
        if _transfer_of(x.request_body) == transfer_id and (not answer or 200 <= x.status < 300)
    ]


def _one(exchanges: list[Any], transfer_id: str, *, answer: bool = False) -> Any:
    found = _found(exchanges, transfer_id, answer=answer)
    assert len(found) == 1, f"{len(found)} captures of {transfer_id}"
    return found[0]


def routed_payment(scene: Scene, amount_minor: int, **request: Any) -> Routed:
    network, tap = scene.network, scene.tap
    created = request_payment(network, scene.shops["cafe"], amount_minor, **request)
    outcome = pay(scene.people["alice"], created["token"])
    assert outcome.state is OrderState.COMPLETED, outcome.order
    assert outcome.receipt is not None
    transfer_id = outcome.receipt.transfer_id
    scene.quiet()  # the status push to mno-b goes through the router's outbox
    prepare = _one(tap.captured("bank-a>router", "/v1/transfers"), transfer_id)
    routed = _one(tap.captured("router>mno-b", "/v1/scheme/transfers"), transfer_id)
    # The push may still be waiting for its next outbox attempt on a loaded machine.
    deadline = time.monotonic() + PUSH_WAIT_S
    while not _found(tap.captured("router>mno-b", "/v1/scheme/status"), transfer_id):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    push = _one(tap.captured("router>mno-b", "/v1/scheme/status"), transfer_id, answer=True)
    return Routed(
        request=created,
        order_id=outcome.order.order_id,
        order=stored_order_token(scene.people["alice"], outcome.order.order_id),
        receipt=str(outcome.order.receipt),
        transfer_id=transfer_id,
        prepare=prepare.request_body,
        status_reply=prepare.response_body,
        routed=routed.request_body,
        fulfil=routed.response_body,
        status_push=push.request_body,
    )


def refund_of(scene: Scene, payment: Routed, amount_minor: int) -> str:
    """A partial refund of a routed payment, as captured on its way to the router."""
    answer = merchant_call(
        scene.network,
        scene.shops["cafe"],
        "POST",
        f"/v1/merchant/requests/{payment.request['request_id']}/refunds",
        {"refund_id": "rf_" + secrets.token_hex(8), "amount_minor": amount_minor},
    )
    assert answer["state"] == "completed", answer
    (sent,) = [
        x.request_body
        for x in scene.tap.captured("mno-b>router", "/v1/refunds")
        if claims_of(x.request_body)["transfer_id"] == payment.transfer_id
    ]
    return sent
