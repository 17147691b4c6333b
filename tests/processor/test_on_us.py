"""On-us payments (payer and payee at the same processor), and every refusal of an order."""

from __future__ import annotations

import asyncio

import pytest

from semops.core.limits import REQUEST_TTL_MIN_S
from semops.crypto import KeyRing, check_fulfilment
from semops.protocol import PaymentNotice, Receipt, open_signed
from semops.service import outbox
from tests.processor.network import (
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


def ring_of(node: Node) -> KeyRing:
    return node.processor.directory.ring


@on_both
async def test_an_on_us_payment_end_to_end(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(1250, reference="INV-1")
    assert created["state"] == "open"
    assert created["link"] == "semops:pay?r=" + created["token"]

    response = await wallet.pay(created["token"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/jose"
    receipt = open_signed(
        response.text, Receipt, ring_of(bank), network.clock.now(), expected_signer="bank-a"
    ).message
    assert (receipt.amount_minor, receipt.payee_id, receipt.payee_name) == (
        1250,
        "corner-shop",
        "Corner Shop",
    )
    assert receipt.request_id == created["request_id"] and receipt.reference == "INV-1"
    check_fulfilment(receipt.fulfilment, receipt.condition)

    status = await shop.status(created["request_id"])
    assert status["state"] == "paid" and status["transfer_id"] == receipt.transfer_id
    notice = open_signed(
        status["notice"], PaymentNotice, ring_of(bank), network.clock.now()
    ).message
    assert notice.guarantee == "irrevocable" and notice.amount_minor == 1250

    assert await wallet.balance() == 5000 - 1250
    assert await account_balance(bank, shop.account_id) == 1250
    await check_ledger(bank)

    # The signed notice reaches the merchant's webhook through the outbox.
    assert await bank.processor.payees.deliver_outbox() == 1
    assert network.webhooks.received == [
        ("https://corner-shop.test/hooks/semops", status["notice"])
    ]
    assert await bank.processor.payees.deliver_outbox() == 0

    order = await wallet.get(f"/v1/wallet/orders/{receipt.order_id}")
    assert order.json() == {
        "order_id": receipt.order_id,
        "state": "completed",
        "receipt": response.text,
        "error": None,
    }


async def test_a_paid_request_wakes_the_webhook_outbox_once_committed(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notice goes out when the payment commits, not at the deliverer's next poll
    (here: an hour). The wake-up comes after the commit: before it, the deliverer could
    look, not see the notice yet, and sleep."""
    monkeypatch.setattr(outbox, "OUTBOX_POLL_INTERVAL_S", 3600)
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    stop = asyncio.Event()
    delivering = asyncio.create_task(bank.processor.payees.outbox.run(stop))
    try:
        await asyncio.sleep(0.1)  # it has looked once and sleeps
        created = await shop.request(100)
        assert (await wallet.pay(created["token"])).status_code == 200
        for _ in range(100):
            if network.webhooks.received:
                break
            await asyncio.sleep(0.02)
        assert len(network.webhooks.received) == 1
    finally:
        stop.set()
        await asyncio.wait_for(delivering, 5)


async def test_a_failing_webhook_is_retried_with_back_off_until_it_answers(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    assert (await wallet.pay(created["token"])).status_code == 200
    network.webhooks.failing = True
    assert await bank.processor.payees.deliver_outbox() == 0
    assert await bank.processor.payees.deliver_outbox() == 0  # not due yet: back-off
    (message,) = await rows(bank, "outbox")
    assert message["attempts"] == 1 and message["next_attempt_at"] > network.clock.now()
    network.webhooks.failing = False
    network.clock.advance(2)
    assert await bank.processor.payees.deliver_outbox() == 1
    assert len(network.webhooks.received) == 1


@on_both
async def test_a_retried_order_returns_the_same_receipt_and_pays_once(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(1000)
    _, order = wallet.order(created["token"])
    first = await wallet.send(order)
    second = await wallet.send(order)
    assert first.status_code == second.status_code == 200
    assert first.text == second.text
    assert await wallet.balance() == 4000
    assert len(await rows(bank, "orders")) == 1
    await check_ledger(bank)


@on_both
async def test_the_same_order_id_with_other_content_is_a_conflict(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    first = await shop.request(1000)
    other = await shop.request(700)
    order_id, order = wallet.order(first["token"])
    assert (await wallet.send(order)).status_code == 200
    _, conflicting = wallet.order(other["token"], order_id=order_id)
    response = await wallet.send(conflicting)
    assert response.status_code == 409
    assert response.json()["code"] == "idempotency_conflict"
    assert await wallet.balance() == 4000
    assert (await shop.status(other["request_id"]))["state"] == "open"


@on_both
async def test_insufficient_funds_change_nothing(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=999)
    created = await shop.request(1000)
    response = await wallet.pay(created["token"])
    assert response.status_code == 402
    assert response.json()["code"] == "insufficient_funds"
    assert await wallet.balance() == 999
    assert await account_balance(bank, shop.account_id) == 0
    assert await rows(bank, "orders") == []
    assert (await shop.status(created["request_id"]))["state"] == "open"
    assert [entry["kind"] for entry in await rows(bank, "entries")] == ["deposit"]
    await check_ledger(bank)


@on_both
async def test_three_wrong_pins_lock_the_credential_even_across_restarts(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    first = await wallet.pay(created["token"], pin="0000")
    assert first.status_code == 403
    assert first.json()["code"] == "pin_invalid"
    assert first.json()["attempts_remaining"] == 2
    second = await wallet.pay(created["token"], pin="0001")
    assert second.json()["attempts_remaining"] == 1
    third = await wallet.pay(created["token"], pin="0002")
    assert third.status_code == 423
    assert third.json()["code"] == "pin_locked"
    right_pin = await wallet.pay(created["token"])
    assert right_pin.json()["code"] == "pin_locked"

    # A new service instance on the same database: the lock survives.
    await bank.close()
    restarted = await network.add("bank-a")
    again = Wallet(restarted, wallet.key, wallet.account_id)
    assert (await again.pay(created["token"])).json()["code"] == "pin_locked"
    assert await again.balance() == 10_000
    assert await rows(restarted, "orders") == []

    # The back office unlocks; the right PIN pays.
    unlocked = await restarted.admin("POST", f"/v1/admin/credentials/{wallet.account_id}/unlock")
    assert unlocked.json()["pin_locked"] is False
    assert (await again.pay(created["token"])).status_code == 200


async def test_a_right_pin_resets_the_failure_count(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    for _ in range(2):
        assert (await wallet.pay((await shop.request(100))["token"], pin="9999")).status_code == 403
    assert (await wallet.pay((await shop.request(100))["token"])).status_code == 200
    (credential,) = await rows(bank, "credentials")
    assert credential["failures"] == 0
    response = await wallet.pay((await shop.request(100))["token"], pin="9999")
    assert response.json()["attempts_remaining"] == 2


async def test_an_expired_request_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100, ttl_s=REQUEST_TTL_MIN_S)
    network.clock.advance(REQUEST_TTL_MIN_S)
    response = await wallet.pay(created["token"])
    assert response.status_code == 410
    assert response.json()["code"] == "request_expired"
    assert await wallet.balance() == 10_000
    assert (await shop.status(created["request_id"]))["state"] == "expired"


@on_both
async def test_a_paid_request_cannot_be_paid_again(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    other = await enrolled_wallet(bank, name="Other Payer")
    created = await shop.request(100)
    assert (await wallet.pay(created["token"])).status_code == 200
    response = await other.pay(created["token"])
    assert response.status_code == 409
    assert response.json()["code"] == "request_already_paid"
    assert await other.balance() == 10_000


async def test_an_order_for_another_amount_than_the_request_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    response = await wallet.pay(created["token"], amount_minor=1)
    assert response.status_code == 422
    assert response.json()["code"] == "order_mismatch"


async def test_an_order_addressed_to_another_processor_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    response = await wallet.pay(created["token"], processor="mno-b")
    assert response.json()["code"] == "order_mismatch"


async def test_an_order_for_someone_elses_account_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    victim = await enrolled_wallet(bank, name="Victim")
    created = await shop.request(100)
    response = await wallet.pay(created["token"], account_id=victim.account_id)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert await victim.balance() == 10_000


async def test_a_pin_block_from_another_order_does_not_authorise_this_one(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    small, large = await shop.request(100), await shop.request(9000)
    from semops.crypto import read_unverified_claims
    from semops.protocol import PaymentOrder, parse_claims, sign

    _, small_order = wallet.order(small["token"])
    _, large_order = wallet.order(large["token"])
    stolen_block = parse_claims(read_unverified_claims(small_order), PaymentOrder).pin_block
    target = parse_claims(read_unverified_claims(large_order), PaymentOrder)
    spliced = sign(target.model_copy(update={"pin_block": stolen_block}), wallet.key)
    response = await wallet.send(spliced)
    assert response.status_code == 403
    assert response.json()["code"] == "pin_block_mismatch"
    assert await wallet.balance() == 10_000
    (credential,) = await rows(bank, "credentials")
    assert credential["failures"] == 0  # not a PIN attempt


async def test_a_tampered_order_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    _, order = wallet.order(created["token"])
    header, payload, signature = order.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    response = await wallet.send(f"{header}.{payload}.{flipped}")
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"


async def test_a_request_not_signed_by_its_processor_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    from semops.crypto import KeyUse, derive_key, read_unverified_claims
    from semops.protocol import PaymentRequest, parse_claims, sign
    from tests.processor.network import seed

    request = parse_claims(read_unverified_claims(created["token"]), PaymentRequest)
    impostor = derive_key("bank-a", KeyUse.SIGN, seed("not the bank's key"))
    forged = sign(request.model_copy(update={"amount_minor": 1}), impostor)
    response = await wallet.pay(forged, amount_minor=1)
    assert response.status_code == 401
    assert response.json()["code"] == "key_unknown"
    assert await wallet.balance() == 10_000


async def test_an_expired_order_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    _, order = wallet.order(created["token"])
    network.clock.advance(300)
    response = await wallet.send(order)
    assert response.status_code == 410
    assert await wallet.balance() == 10_000


async def test_history_and_balance_show_deposits_and_payments(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=2000)
    created = await shop.request(750)
    assert (await wallet.pay(created["token"])).status_code == 200
    balance = (await wallet.get("/v1/wallet/balance")).json()
    assert balance == {
        "account_id": wallet.account_id,
        "currency": "EUR",
        "balance_minor": 1250,
        "available_minor": 1250,
    }
    history = (await wallet.get("/v1/wallet/history")).json()["entries"]
    assert [(entry["kind"], entry["amount_minor"]) for entry in history] == [
        ("payment", -750),
        ("deposit", 2000),
    ]
    assert history[0]["payee_name"] == "Corner Shop"
    assert history[0]["state"] == "completed"


async def test_an_unknown_order_is_not_found_and_others_orders_are_hidden(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    other = await enrolled_wallet(bank, name="Other")
    created = await shop.request(100)
    order_id, order = wallet.order(created["token"])
    assert (await wallet.send(order)).status_code == 200
    assert (await other.get(f"/v1/wallet/orders/{order_id}")).status_code == 404
    assert (await wallet.get("/v1/wallet/orders/or_unknownunknown")).status_code == 404


async def test_metrics_count_payments_by_outcome(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=150)
    assert (await wallet.pay((await shop.request(100))["token"])).status_code == 200
    assert (await wallet.pay((await shop.request(100))["token"])).status_code == 402
    text = await bank.metrics()
    assert 'semops_processor_payments_total{outcome="completed"} 1.0' in text
    assert 'semops_processor_payments_total{outcome="refused"} 1.0' in text
    assert "semops_processor_payment_seconds_count 2.0" in text
    # What the payments asked of the database, read from `Database.stats` at scrape time.
    stats = bank.processor.context.database.stats
    assert stats.statements > 0 and stats.writes > 0 and stats.commits > 0
    assert f"semops_db_statements_total {float(stats.statements)}" in text
    assert f"semops_db_write_transactions_total {float(stats.writes)}" in text
    assert f"semops_db_commits_total {float(stats.commits)}" in text
