"""An order id is single-use even when the order was refused (DESIGN.md §6 "Replay").

A refused order sent again must get the same refusal: a captured wrong-PIN order replayed
must not count as more PIN attempts (three replays would lock the customer out), and an
order refused for lack of funds must not pay when replayed after a deposit (the customer
was told it failed). Other content under a refused order id is a conflict. Refusals are
forgotten once the order has expired, when the expiry check refuses it anyway.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from semops.core.encoding import b64url_encode
from semops.core.limits import CLOCK_SKEW_MAX_S, ORDER_TTL_S
from semops.crypto import read_unverified_claims, read_unverified_kid
from tests.processor.network import (
    Network,
    account_balance,
    check_ledger,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


@on_both
async def test_a_replayed_wrong_pin_order_is_not_another_attempt(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    _, token = wallet.order(created["token"], pin="0000")
    first = await wallet.send(token)
    assert (first.status_code, first.json()["code"]) == (403, "pin_invalid")
    for _ in range(3):
        again = await wallet.send(token)
        assert (again.status_code, again.json()["code"]) == (403, "pin_invalid")
    (credential,) = await rows(bank, "credentials")
    assert (credential["failures"], credential["locked"]) == (1, False)
    assert (await wallet.pay(created["token"])).status_code == 200  # not locked out


@on_both
async def test_concurrent_copies_of_a_wrong_pin_order_count_once(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    _, token = wallet.order((await shop.request(100))["token"], pin="0000")
    answers = await asyncio.gather(*(wallet.send(token) for _ in range(6)))
    assert {(a.status_code, a.json()["code"]) for a in answers} == {(403, "pin_invalid")}
    (credential,) = await rows(bank, "credentials")
    assert (credential["failures"], credential["locked"]) == (1, False)


@on_both
async def test_an_order_refused_for_funds_does_not_pay_when_replayed_later(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=400)
    created = await shop.request(500)
    _, token = wallet.order(created["token"])
    refused = await wallet.send(token)
    assert (refused.status_code, refused.json()["code"]) == (402, "insufficient_funds")
    deposit = await bank.admin(
        "POST",
        f"/v1/admin/accounts/{wallet.account_id}/deposits",
        {"amount_minor": 1000, "reference": "top-up"},
    )
    assert deposit.status_code == 200, deposit.text
    replayed = await wallet.send(token)
    assert (replayed.status_code, replayed.json()["code"]) == (402, "insufficient_funds")
    assert await wallet.balance() == 1400
    assert await account_balance(bank, shop.account_id) == 0
    assert await rows(bank, "orders") == []
    assert (await shop.status(created["request_id"]))["state"] == "open"
    await check_ledger(bank)
    # A new order (a new id, a new approval by the customer) pays.
    assert (await wallet.pay(created["token"])).status_code == 200


async def test_other_content_under_a_refused_order_id_is_a_conflict(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    order_id, token = wallet.order(created["token"], pin="0000")
    assert (await wallet.send(token)).json()["code"] == "pin_invalid"
    _, other = wallet.order(created["token"], order_id=order_id)
    conflict = await wallet.send(other)
    assert (conflict.status_code, conflict.json()["code"]) == (409, "idempotency_conflict")
    (credential,) = await rows(bank, "credentials")
    assert credential["failures"] == 1


async def test_refusals_are_forgotten_once_the_order_has_expired(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    _, token = wallet.order((await shop.request(100))["token"], pin="0000")
    assert (await wallet.send(token)).json()["code"] == "pin_invalid"
    assert len(await rows(bank, "order_refusals")) == 1
    assert await bank.processor.payer.prune_refusals() == 0  # still replayable: kept
    network.clock.advance(ORDER_TTL_S + CLOCK_SKEW_MAX_S + 1)
    assert await bank.processor.payer.prune_refusals() == 1
    assert await rows(bank, "order_refusals") == []
    expired = await wallet.send(token)
    assert expired.status_code in (400, 401, 410), expired.text
    assert expired.json()["code"] in ("message_expired",)


def _forged(header: dict[str, object], claims: dict[str, object]) -> str:
    """A compact JWS with these members and no valid signature (never sent by a wallet)."""

    def part(value: dict[str, object]) -> str:
        return b64url_encode(json.dumps(value).encode())

    return f"{part(header)}.{part(claims)}.{b64url_encode(b'not a signature' * 4)}"


@on_both
async def test_an_order_looked_up_before_it_is_verified_names_only_well_formed_keys(
    network: Network,
) -> None:
    """The payer reads the device and the order id from the token before verifying it, as
    lookup keys: a forged key id or order id (a NUL, which PostgreSQL refuses in text) is
    refused as usual, never a 500."""
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    _, token = wallet.order(created["token"])
    claims = {**read_unverified_claims(token), "order_id": "or_\u0000"}
    kid = read_unverified_kid(token)
    for header, code in (
        ({"alg": "ES256", "kid": "bank-a:\u0000"}, "device_unknown"),
        ({"alg": "ES256", "kid": kid}, "signature_invalid"),
    ):
        response = await wallet.send(_forged(header, claims))
        assert response.status_code < 500 and response.json()["code"] == code, response.text
    assert await rows(bank, "orders") == []
