"""How outcomes reach a processor late, twice or in a surprising order, and what it does.

The router's word is final: duplicates change nothing, late "still reserved" news changes
nothing, and a contradiction (committed after aborted) is refused, never applied.
"""

from __future__ import annotations

import secrets

import pytest

from semops.core.errors import SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import CLOCK_SKEW_MAX_S
from semops.processor.payer import Payer, answer_of
from semops.protocol import (
    PAYER_TRANSFER,
    PayerTransferEvent,
    PayerTransferState,
    RefundResult,
    RefundTransfer,
    TransferStatus,
    open_signed,
    sign,
)
from semops.service.app import JOSE
from tests.processor.network import (
    Network,
    Node,
    account_balance,
    check_ledger,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("state", list(PayerTransferState))
@pytest.mark.parametrize("event", list(PayerTransferEvent))
def test_every_state_and_event_is_either_applied_ignored_or_refused(
    state: PayerTransferState, event: PayerTransferEvent
) -> None:
    """Walk every pair: an applied event is one the table allows; an ignored one is a
    duplicate or late news; anything else raises before a single row is written."""
    try:
        applies = Payer._applies(state, event)
    except SemopsError as error:
        assert error.code == "state_transition_invalid"
        assert (state, event) not in PAYER_TRANSFER.transitions
        return
    if applies:
        assert (state, event) in PAYER_TRANSFER.transitions
        assert not PAYER_TRANSFER.is_terminal(state)
    else:
        duplicate = PAYER_TRANSFER.transitions.get((state, event)) is state
        late = event in (PayerTransferEvent.TIMED_OUT, PayerTransferEvent.ROUTER_ACCEPTED)
        assert duplicate or late


def test_an_order_answer_follows_the_transfer_state() -> None:
    base = {"order_id": "or_answer-000001", "receipt": "r.e.c", "reason_code": None}
    assert answer_of({**base, "state": "committed"}).state == "completed"
    assert (
        answer_of({**base, "state": "aborted", "reason_code": "insufficient_funds"}).state
        == "failed"
    )
    assert answer_of({**base, "state": "aborted"}).error is not None
    for pending in ("reserved", "prepared", "in_doubt"):
        assert answer_of({**base, "state": pending}).state == "pending"


async def routed(network: Network) -> tuple[Node, Node]:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    return bank, mno


async def post_status(node: Node, network: Network, status: TransferStatus) -> int:
    response = await node.scheme.post(
        "/v1/scheme/status",
        content=sign(status, network.router.key),
        headers={"Content-Type": JOSE},
    )
    return response.status_code


def payment_status(
    transfer_id: str, state: str, amount_minor: int, **fields: object
) -> TransferStatus:
    return TransferStatus.model_validate(
        {
            "transfer_id": transfer_id,
            "kind": "payment",
            "state": state,
            "amount_minor": amount_minor,
            "currency": "EUR",
            "decided_at": 1_900_000_000,
            **fields,
        }
    )


@on_both
async def test_committed_after_aborted_is_refused_and_nothing_moves(network: Network) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    network.router.mode = "pending"
    await wallet.pay(request["token"])
    (order,) = await rows(bank, "orders")
    aborted = payment_status(order["transfer_id"], "aborted", 300, reason_code="transfer_expired")
    assert await post_status(bank, network, aborted) == 204
    fulfilment = (await rows(mno, "requests"))[0]["fulfilment"]
    committed = payment_status(order["transfer_id"], "committed", 300, fulfilment=fulfilment)
    assert await post_status(bank, network, committed) == 409
    assert await wallet.balance() == 10_000
    assert (await rows(bank, "orders"))[0]["state"] == "aborted"
    await check_ledger(bank)


async def test_a_committed_status_with_a_wrong_fulfilment_is_refused(network: Network) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    network.router.mode = "pending"
    await wallet.pay(request["token"])
    (order,) = await rows(bank, "orders")
    wrong = payment_status(order["transfer_id"], "committed", 300, fulfilment="A" * 43)
    assert await post_status(bank, network, wrong) == 422
    assert (await rows(bank, "orders"))[0]["state"] == "in_doubt"
    assert await wallet.balance() == 9700


async def test_a_late_reserved_status_changes_nothing(network: Network) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    assert (await wallet.pay(request["token"])).status_code == 200
    (order,) = await rows(bank, "orders")
    late = payment_status(order["transfer_id"], "reserved", 300)
    assert await post_status(bank, network, late) == 204
    assert await post_status(mno, network, late) == 204
    assert (await rows(bank, "orders"))[0]["state"] == "committed"
    assert (await shop.status(request["request_id"]))["state"] == "paid"


async def test_the_payee_side_asks_the_router_when_the_outcome_never_arrives(
    network: Network,
) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    network.router.push_status = False  # the router's outbox is stuck
    assert (await wallet.pay(request["token"])).status_code == 200
    assert (await shop.status(request["request_id"]))["state"] == "reserved"
    assert await mno.processor.payee.resolve_stale() == 0  # not yet past the expiry
    network.clock.advance(30 + CLOCK_SKEW_MAX_S)
    assert await mno.processor.payee.resolve_stale() == 1
    assert (await shop.status(request["request_id"]))["state"] == "paid"
    assert await account_balance(mno, shop.account_id) == 300
    assert await mno.processor.payee.resolve_stale() == 0
    await check_ledger(mno)


async def test_a_failed_routed_payment_shows_in_the_history(network: Network) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank, deposit_minor=1000)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    network.router.mode = "pending"
    await wallet.pay(request["token"])
    (order,) = await rows(bank, "orders")
    await network.router.decide_later(order["transfer_id"], "aborted", "request_expired")
    history = (await wallet.get("/v1/wallet/history")).json()["entries"]
    assert [(e["kind"], e["amount_minor"], e.get("state")) for e in history] == [
        ("payment_returned", 300, "failed"),
        ("payment", -300, "failed"),
        ("deposit", 1000, None),
    ]
    assert history[1]["payee_name"] == "Corner Shop"


async def test_a_received_refund_that_the_router_aborts_is_never_credited(
    network: Network,
) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank, deposit_minor=1000)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    assert (await wallet.pay(request["token"])).status_code == 200
    (order,) = await rows(bank, "orders")
    now = network.clock.now()
    refund = RefundTransfer(
        refund_id=make_id(IdKind.REFUND, secrets.token_bytes(16)),
        transfer_id=order["transfer_id"],
        payee_processor="mno-b",
        amount_minor=100,
        currency="EUR",
        created_at=now,
        expires_at=now + 30,
    )
    token = sign(refund, mno.processor.context.keys.sign_key)
    answer = await bank.scheme.post(
        "/v1/scheme/refunds", content=token, headers={"Content-Type": JOSE}
    )
    assert answer.status_code == 200
    status = TransferStatus(
        transfer_id=refund.refund_id,
        kind="refund",
        state="aborted",
        amount_minor=100,
        currency="EUR",
        decided_at=now,
        reason_code="transfer_expired",
        original_transfer_id=order["transfer_id"],
    )
    for _ in range(2):
        assert await post_status(bank, network, status) == 204
    (received,) = await rows(bank, "refunds_in")
    assert received["state"] == "aborted"
    assert await wallet.balance() == 700
    # An aborted refund frees the amount again.
    again = RefundTransfer.model_validate(
        {
            **refund.to_claims(),
            "refund_id": make_id(IdKind.REFUND, secrets.token_bytes(16)),
            "amount_minor": 300,
        }
    )
    token = sign(again, mno.processor.context.keys.sign_key)
    answer = await bank.scheme.post(
        "/v1/scheme/refunds", content=token, headers={"Content-Type": JOSE}
    )
    result = open_signed(answer.text, RefundResult, bank.processor.directory.ring, now).message
    assert (result.outcome, result.refund_id) == ("accepted", again.refund_id)


@on_both
async def test_a_committed_refund_status_credits_once(network: Network) -> None:
    bank, mno = await routed(network)
    wallet = await enrolled_wallet(bank, deposit_minor=1000)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    assert (await wallet.pay(request["token"])).status_code == 200
    network.router.push_status = False
    assert (await shop.refund(request["request_id"], 120)).json()["state"] == "completed"
    (received,) = await rows(bank, "refunds_in")
    assert received["state"] == "pending" and await wallet.balance() == 700
    record = network.router.records[received["refund_id"]]
    status = network.router.status_token(record)
    for _ in range(3):
        response = await bank.scheme.post(
            "/v1/scheme/status", content=status, headers={"Content-Type": JOSE}
        )
        assert response.status_code == 204
    assert await wallet.balance() == 820
    assert (await rows(bank, "refunds_in"))[0]["state"] == "credited"
    await check_ledger(bank)
