"""Refunds: on-us and routed, full and partial, bounds, idempotency, both ends' records."""

from __future__ import annotations

import secrets

import pytest

from semops.core.ids import IdKind, make_id
from semops.core.limits import (
    CLOCK_SKEW_MAX_S,
    REFUND_RETRY_DELAY_MAX_S,
    REFUND_RETRY_WINDOW_S,
    TRANSFER_TTL_DEFAULT_S,
)
from semops.protocol import RefundResult, RefundTransfer, open_signed, sign
from semops.service.app import JOSE
from tests.processor.network import (
    Merchant,
    Network,
    Node,
    Wallet,
    account_balance,
    check_ledger,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


async def paid_on_us(
    network: Network, amount_minor: int = 1000
) -> tuple[Node, Wallet, Merchant, str]:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(amount_minor)
    assert (await wallet.pay(created["token"])).status_code == 200
    return bank, wallet, shop, created["request_id"]


@on_both
async def test_a_full_on_us_refund_credits_the_payer(network: Network) -> None:
    bank, wallet, shop, request_id = await paid_on_us(network)
    response = await shop.refund(request_id, 1000, refund_id="rf_return-0001", reason="Returned")
    assert response.status_code == 200, response.text
    assert response.json()["refund_id"] == "rf_return-0001"
    assert response.json()["state"] == "completed"
    assert await wallet.balance() == 5000
    assert await account_balance(bank, shop.account_id) == 0
    status = await shop.status(request_id)
    assert status["state"] == "refunded" and status["refunded_minor"] == 1000
    history = (await wallet.get("/v1/wallet/history")).json()["entries"]
    assert (history[0]["kind"], history[0]["amount_minor"]) == ("refund", 1000)
    assert history[0]["payee_name"] == "Corner Shop"
    await check_ledger(bank)


@on_both
async def test_partial_refunds_never_exceed_the_paid_amount(network: Network) -> None:
    bank, wallet, shop, request_id = await paid_on_us(network)
    first = await shop.refund(request_id, 300)
    assert first.json()["state"] == "completed"
    assert (await shop.status(request_id))["state"] == "partially_refunded"
    too_much = await shop.refund(request_id, 701)
    assert too_much.status_code == 422
    assert too_much.json()["code"] == "refund_exceeds_paid"
    rest = await shop.refund(request_id, 700)
    assert rest.json()["state"] == "completed"
    status = await shop.status(request_id)
    assert status["state"] == "refunded" and status["refunded_minor"] == 1000
    after = await shop.refund(request_id, 1)
    assert after.status_code == 409
    assert after.json()["code"] == "refund_not_allowed"
    assert await wallet.balance() == 5000
    await check_ledger(bank)


@on_both
async def test_a_refund_id_is_idempotent(network: Network) -> None:
    bank, wallet, shop, request_id = await paid_on_us(network)
    first = await shop.refund(request_id, 400, refund_id="rf_same-id-01")
    again = await shop.refund(request_id, 400, refund_id="rf_same-id-01")
    assert first.json() == again.json()
    assert await wallet.balance() == 4400
    conflict = await shop.refund(request_id, 500, refund_id="rf_same-id-01")
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"
    assert len(await rows(bank, "refunds_out")) == 1
    looked_up = await bank.public.get("/v1/merchant/refunds/rf_same-id-01", headers=shop.headers)
    assert looked_up.json()["state"] == "completed"


async def test_an_unpaid_request_cannot_be_refunded(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    created = await shop.request(100)
    response = await shop.refund(created["request_id"], 100)
    assert response.status_code == 409
    assert response.json()["code"] == "refund_not_allowed"


async def test_a_merchant_cannot_refund_another_merchants_request(network: Network) -> None:
    bank, _, _, request_id = await paid_on_us(network)
    other = await merchant(bank, "other-shop", display_name="Other Shop")
    response = await other.refund(request_id, 100)
    assert response.status_code == 404
    assert (
        await bank.public.get(f"/v1/merchant/requests/{request_id}", headers=other.headers)
    ).status_code == 404


async def test_a_refund_needs_the_money_on_the_merchant_account(network: Network) -> None:
    bank, wallet, shop, request_id = await paid_on_us(network)
    # The merchant's money left through another refund path (here: withdrawn by hand).
    async with bank.processor.context.database.write() as connection:
        from semops.core.money import Money
        from semops.processor import accounts

        await accounts.withdraw(
            connection, shop.account_id, Money(900, "EUR"), "wd_payout-0001", network.clock.now()
        )
    response = await shop.refund(request_id, 500)
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert await rows(bank, "refunds_out") == []
    assert await wallet.balance() == 4000


async def test_refund_input_is_bounded(network: Network) -> None:
    bank, _, shop, request_id = await paid_on_us(network)
    for body in (
        {"refund_id": "rf_x", "amount_minor": 1},
        {"refund_id": "rf_valid-0001", "amount_minor": 0},
        {"refund_id": "rf_valid-0001", "amount_minor": 1.5},
        {"refund_id": "rf_valid-0001", "amount_minor": 1, "reason": "x" * 201},
        {"refund_id": "rf_valid-0001", "amount_minor": 1, "surprise": True},
    ):
        response = await bank.public.post(
            f"/v1/merchant/requests/{request_id}/refunds", json=body, headers=shop.headers
        )
        assert response.status_code == 422, body
    assert await rows(bank, "refunds_out") == []


# --- routed refunds ---------------------------------------------------------------------


async def paid_routed(
    network: Network, amount_minor: int = 1000
) -> tuple[Node, Node, Wallet, Merchant, str]:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    shop = await merchant(mno, "kiosk")
    created = await shop.request(amount_minor)
    assert (await wallet.pay(created["token"])).status_code == 200
    return bank, mno, wallet, shop, created["request_id"]


@on_both
async def test_a_routed_refund_reaches_the_original_payer(network: Network) -> None:
    bank, mno, wallet, shop, request_id = await paid_routed(network)
    response = await shop.refund(request_id, 400, reason="Damaged")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "completed"
    assert await wallet.balance() == 4000 + 400
    assert await account_balance(mno, shop.account_id) == 600
    (received,) = await rows(bank, "refunds_in")
    assert received["state"] == "credited" and received["account_id"] == wallet.account_id
    history = (await wallet.get("/v1/wallet/history")).json()["entries"]
    assert (history[0]["kind"], history[0]["amount_minor"]) == ("refund", 400)
    assert history[0]["payee_name"] == "Corner Shop"
    status = await shop.status(request_id)
    assert status["state"] == "partially_refunded" and status["refunded_minor"] == 400
    # The refunding side never learnt who paid.
    (sent,) = await rows(mno, "refunds_out")
    assert wallet.account_id not in str(sent) and "bank-a" not in str(sent)
    await check_ledger(bank)
    await check_ledger(mno)


# How long until an attempt that was never recorded can no longer be: then it is dead.
DEAD_AFTER_S = TRANSFER_TTL_DEFAULT_S + CLOCK_SKEW_MAX_S


@on_both
async def test_a_refund_the_router_cannot_take_now_names_no_cause_and_is_tried_again(
    network: Network,
) -> None:
    """DESIGN.md §5: the payee side learns nothing of the payer's side, not even that a
    processor or a cap cannot take the refund now. It stays pending, and is tried again."""
    _, mno, wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "refuse"  # net_debit_cap_exceeded, before anything is recorded
    response = await shop.refund(request_id, 400, refund_id="rf_kiosk-0001")
    answer = response.json()
    assert (answer["state"], answer["reason_code"]) == ("in_doubt", None), answer
    assert "net_debit_cap" not in response.text
    assert await account_balance(mno, shop.account_id) == 600  # held for the refund
    (first,) = await rows(mno, "refunds_out")
    # The router may have recorded it (it does so before looking at the receiver): wait.
    assert await mno.processor.refunds.resolve_in_doubt() == 0
    assert (await rows(mno, "refunds_out"))[0]["refund_id"] == first["refund_id"]
    network.clock.advance(DEAD_AFTER_S)
    assert await mno.processor.refunds.resolve_in_doubt() == 0  # dead: a new attempt waits
    (waiting,) = await rows(mno, "refunds_out")
    assert waiting["state"] == "requested" and waiting["refund_id"] != first["refund_id"]
    assert waiting["merchant_refund_id"] == "rf_kiosk-0001" and waiting["reason_code"] is None
    assert await account_balance(mno, shop.account_id) == 600  # still held, under the new id
    assert await mno.processor.refunds.resolve_in_doubt() == 0  # not before its wait
    looked_up = await mno.public.get("/v1/merchant/refunds/rf_kiosk-0001", headers=shop.headers)
    assert (looked_up.json()["state"], looked_up.json()["reason_code"]) == ("requested", None)
    network.router.mode = "normal"
    network.clock.advance(REFUND_RETRY_DELAY_MAX_S)
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    (done,) = await rows(mno, "refunds_out")
    assert (done["state"], done["refund_id"]) == ("completed", waiting["refund_id"])
    assert await wallet.balance() == 4000 + 400
    assert await account_balance(mno, shop.account_id) == 600
    again = await shop.refund(request_id, 400, refund_id="rf_kiosk-0001")
    assert again.json()["state"] == "completed"  # the merchant's id still finds it
    await check_ledger(mno)


async def test_a_refund_is_given_up_when_its_retry_window_ends(network: Network) -> None:
    _, mno, wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "refuse"
    assert (await shop.refund(request_id, 400)).json()["state"] == "in_doubt"
    network.clock.advance(DEAD_AFTER_S)
    await mno.processor.refunds.resolve_in_doubt()  # a new attempt waits
    network.clock.advance(REFUND_RETRY_WINDOW_S)
    await mno.processor.refunds.resolve_in_doubt()  # sent, refused again: in doubt
    assert (await rows(mno, "refunds_out"))[0]["state"] == "in_doubt"
    network.clock.advance(DEAD_AFTER_S)
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    (failed,) = await rows(mno, "refunds_out")
    assert (failed["state"], failed["reason_code"]) == ("failed", "refund_not_completed")
    assert await account_balance(mno, shop.account_id) == 1000  # the money is released
    assert await wallet.balance() == 4000
    # A failed refund does not count against the paid amount.
    network.router.mode = "normal"
    assert (await shop.refund(request_id, 1000)).json()["state"] == "completed"
    await check_ledger(mno)


@on_both
async def test_an_unanswered_refund_stays_in_doubt_until_the_router_decides(
    network: Network,
) -> None:
    _bank, mno, wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "timeout"
    response = await shop.refund(request_id, 400)
    assert response.json()["state"] == "in_doubt"
    assert await account_balance(mno, shop.account_id) == 600  # held
    # Still in flight: it counts against the paid amount.
    assert (await shop.refund(request_id, 601)).json()["code"] == "refund_exceeds_paid"
    network.router.mode = "normal"
    assert await mno.processor.refunds.resolve_in_doubt() == 0  # the router: still reserved
    (sent,) = await rows(mno, "refunds_out")
    record = network.router.records[sent["refund_id"]]
    record.state, record.reason_code = "aborted", "transfer_expired"
    # Aborted for a reason about no one but the moment: tried again, not failed.
    assert await mno.processor.refunds.resolve_in_doubt() == 0
    assert (await rows(mno, "refunds_out"))[0]["state"] == "requested"
    network.clock.advance(REFUND_RETRY_DELAY_MAX_S)
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    assert (await rows(mno, "refunds_out"))[0]["state"] == "completed"
    assert await wallet.balance() == 4000 + 400
    await check_ledger(mno)


async def test_a_refund_aborted_for_a_reason_about_the_payment_fails_with_it(
    network: Network,
) -> None:
    _bank, mno, _wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "timeout"
    assert (await shop.refund(request_id, 400, refund_id="rf_kiosk-0002")).status_code == 200
    network.router.mode = "normal"
    (sent,) = await rows(mno, "refunds_out")
    record = network.router.records[sent["refund_id"]]
    record.state, record.reason_code = "aborted", "refund_exceeds_paid"
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    looked_up = await mno.public.get("/v1/merchant/refunds/rf_kiosk-0002", headers=shop.headers)
    assert (looked_up.json()["state"], looked_up.json()["reason_code"]) == (
        "failed",
        "refund_exceeds_paid",
    )
    assert await account_balance(mno, shop.account_id) == 1000


async def test_a_refund_never_recorded_is_sent_again_while_it_is_valid(network: Network) -> None:
    _, mno, wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "down"
    assert (await shop.refund(request_id, 400)).json()["state"] == "in_doubt"
    network.router.mode = "normal"
    # The router has no record of it and it has not expired: the same attempt goes again.
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    assert await wallet.balance() == 4000 + 400
    await check_ledger(mno)


async def test_a_refund_never_recorded_is_tried_again_after_its_expiry(network: Network) -> None:
    _, mno, wallet, shop, request_id = await paid_routed(network)
    network.router.mode = "down"
    assert (await shop.refund(request_id, 400)).json()["state"] == "in_doubt"
    network.clock.advance(DEAD_AFTER_S)
    network.router.mode = "normal"
    assert await mno.processor.refunds.resolve_in_doubt() == 0
    assert await account_balance(mno, shop.account_id) == 600
    network.clock.advance(REFUND_RETRY_DELAY_MAX_S)
    assert await mno.processor.refunds.resolve_in_doubt() == 1
    assert await wallet.balance() == 4000 + 400
    await check_ledger(mno)


def refund_message(
    network: Network, payee: Node, transfer_id: str, amount_minor: int
) -> RefundTransfer:
    now = network.clock.now()
    return RefundTransfer(
        refund_id=make_id(IdKind.REFUND, secrets.token_bytes(16)),
        transfer_id=transfer_id,
        payee_processor=payee.id,
        amount_minor=amount_minor,
        currency="EUR",
        created_at=now,
        expires_at=now + 30,
    )


async def receive(bank: Node, network: Network, token: str) -> RefundResult:
    response = await bank.scheme.post(
        "/v1/scheme/refunds", content=token, headers={"Content-Type": JOSE}
    )
    assert response.status_code == 200, response.text
    return open_signed(
        response.text, RefundResult, bank.processor.directory.ring, network.clock.now()
    ).message


@on_both
async def test_the_payer_processor_bounds_and_deduplicates_refunds(network: Network) -> None:
    bank, mno, wallet, _, _ = await paid_routed(network)
    (order,) = await rows(bank, "orders")
    mno_key = mno.processor.context.keys.sign_key
    first = refund_message(network, mno, order["transfer_id"], 800)
    token = sign(first, mno_key)
    result = await receive(bank, network, token)
    assert (result.outcome, result.refund_id) == ("accepted", first.refund_id)
    again = await bank.scheme.post(
        "/v1/scheme/refunds", content=token, headers={"Content-Type": JOSE}
    )
    assert (
        open_signed(
            again.text, RefundResult, bank.processor.directory.ring, network.clock.now()
        ).message
        == result
    )
    # 800 pending + 201 > 1000 paid.
    over = await receive(
        bank, network, sign(refund_message(network, mno, order["transfer_id"], 201), mno_key)
    )
    assert (over.outcome, over.reason_code) == ("rejected", "refund_exceeds_paid")
    unknown = await receive(
        bank, network, sign(refund_message(network, mno, "tr_" + "U" * 22, 1), mno_key)
    )
    assert (unknown.outcome, unknown.reason_code) == ("rejected", "refund_not_allowed")
    # Nothing is credited before the router's committed status.
    assert await wallet.balance() == 4000


async def test_only_the_processor_that_was_paid_may_refund(network: Network) -> None:
    bank, _, wallet, _, _ = await paid_routed(network)
    stranger = await network.add("bank-c")
    await network.refresh_all()
    (order,) = await rows(bank, "orders")
    token = sign(
        refund_message(network, stranger, order["transfer_id"], 100),
        stranger.processor.context.keys.sign_key,
    )
    result = await receive(bank, network, token)
    assert (result.outcome, result.reason_code) == ("rejected", "refund_not_allowed")
    assert await wallet.balance() == 4000
