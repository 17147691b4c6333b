"""End to end over real processes: request -> pay -> notice -> receipt, across processors
both ways and on-us, with money and positions checked to the minor unit.

Each service is its own OS process with its own database (SQLite, then PostgreSQL) and
keys; processors talk to the router over mutual TLS. The wallet is the real wallet code
over HTTP; the merchant uses its processor's API with its API key.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from semops.crypto import condition_for
from semops.devnet.actors import (
    Customer,
    Merchant,
    balance,
    create_customer,
    create_merchant,
    enrol,
    merchant_call,
    request_payment,
)
from semops.devnet.network import Network
from semops.protocol import OrderState, PaymentNotice, PaymentRequest, open_signed
from semops.wallet.core import verify_config

pytestmark = pytest.mark.timeout(300)

PIN = "4821"


def _people(network: Network) -> dict[str, Any]:
    """Customers at both processors and a merchant at each (made once per network)."""
    cached = getattr(network, "_people", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    people: dict[str, Any] = {}
    for key, processor, name, phone in (
        ("alice", "bank-a", "Alice Example", "+4915112345678"),
        ("bob", "mno-b", "Bob Example", "+4917698765432"),
        ("carol", "bank-a", "Carol Example", "+4915155555555"),
    ):
        customer, code = create_customer(network, processor, name, phone, 50_000, PIN)
        asyncio.run(enrol(network, customer, code))
        people[key] = customer
    people["cafe"] = create_merchant(network, "mno-b", "corner-cafe", "Corner Café")
    people["books"] = create_merchant(network, "bank-a", "book-shop", "Book Shop")
    network._people = people  # type: ignore[attr-defined]
    return people


async def _pay(customer: Customer, token: str) -> Any:
    wallet = customer.wallet()
    try:
        verified = await wallet.verify(token)
        return await wallet.pay(verified, customer.pin)
    finally:
        await wallet.close()
        wallet.store.close()


def _positions(network: Network) -> dict[str, int]:
    result = network.router_admin("GET", "/v1/admin/positions")
    return {
        row["participant_id"]: row["net_minor"]
        for row in result["positions"]
        if row["currency"] == "EUR"
    }


def _notice(network: Network, merchant: Merchant, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        status = merchant_call(network, merchant, "GET", f"/v1/merchant/requests/{request_id}")
        if status.get("notice") or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        time.sleep(0.2)


def _trusted(network: Network, processor_id: str) -> Any:
    import json
    import urllib.request

    with urllib.request.urlopen(
        network.layout.processor_url(processor_id) + "/v1/wallet/config", timeout=10
    ) as response:
        return verify_config(json.loads(response.read()), int(time.time()))


@pytest.mark.parametrize(
    ("payer", "merchant", "routed"),
    [("alice", "cafe", True), ("bob", "books", True), ("carol", "books", False)],
    ids=["bank-to-mno", "mno-to-bank", "on-us"],
)
def test_a_payment_moves_exactly_the_amount_and_the_merchant_learns_nothing_of_the_payer(
    network: Network, payer: str, merchant: str, routed: bool
) -> None:
    people = _people(network)
    customer: Customer = people[payer]
    shop: Merchant = people[merchant]
    amount = 1250
    payer_before = balance(network, customer.processor_id, customer.account_id)
    shop_before = balance(network, shop.processor_id, shop.account_id)
    positions_before = _positions(network)

    created = request_payment(network, shop, amount, reference=f"INV-{payer}")
    outcome = asyncio.run(_pay(customer, created["token"]))
    assert outcome.state is OrderState.COMPLETED, outcome.order

    receipt = outcome.receipt
    request = open_signed(
        created["token"],
        PaymentRequest,
        _trusted(network, customer.processor_id).ring,
        int(time.time()),
    ).message
    assert receipt.amount_minor == amount and receipt.payee_name == shop.display_name
    assert condition_for(receipt.fulfilment) == request.condition  # proof of payment

    assert balance(network, customer.processor_id, customer.account_id) == payer_before - amount
    status = _notice(network, shop, created["request_id"])
    assert status["state"] == "paid" and status["notice"]
    assert balance(network, shop.processor_id, shop.account_id) == shop_before + amount

    ring = _trusted(network, shop.processor_id).ring
    notice = open_signed(
        status["notice"], PaymentNotice, ring, int(time.time()), expected_signer=shop.processor_id
    ).message
    assert notice.amount_minor == amount and notice.request_id == created["request_id"]
    seen_by_merchant = status["notice"] + str(notice.to_claims()) + str(status)
    for payer_datum in (
        customer.name,
        customer.phone,
        customer.account_id,
        customer.processor_id if customer.processor_id != shop.processor_id else "\0",
    ):
        assert payer_datum not in seen_by_merchant

    positions = _positions(network)
    if routed:
        assert (
            positions.get(customer.processor_id, 0)
            == positions_before.get(customer.processor_id, 0) - amount
        )
        assert (
            positions.get(shop.processor_id, 0)
            == positions_before.get(shop.processor_id, 0) + amount
        )
    else:
        assert positions == positions_before
    assert sum(positions.values()) == 0


def test_a_paid_request_cannot_be_paid_again_by_anyone(network: Network) -> None:
    people = _people(network)
    created = request_payment(network, people["cafe"], 300)
    first = asyncio.run(_pay(people["alice"], created["token"]))
    assert first.state is OrderState.COMPLETED
    before = balance(network, "mno-b", people["bob"].account_id)
    second = asyncio.run(_pay(people["bob"], created["token"]))
    assert second.state is OrderState.FAILED
    assert second.order.error_code in ("request_already_paid", "request_not_payable")
    assert balance(network, "mno-b", people["bob"].account_id) == before


def test_a_wrong_pin_is_refused_and_nothing_moves(network: Network) -> None:
    people = _people(network)
    carol: Customer = people["carol"]
    created = request_payment(network, people["cafe"], 200)
    before = balance(network, "bank-a", carol.account_id)

    async def pay_with(pin: str) -> Any:
        wallet = carol.wallet()
        try:
            return await wallet.pay(await wallet.verify(created["token"]), pin)
        finally:
            await wallet.close()
            wallet.store.close()

    outcome = asyncio.run(pay_with("0000"))
    assert outcome.state is OrderState.FAILED and outcome.order.error_code == "pin_invalid"
    assert balance(network, "bank-a", carol.account_id) == before
