"""P2P, the back office, configuration, health, concurrency and restarts."""

from __future__ import annotations

import asyncio
import json

import pytest

from semops.crypto import KeyRing
from semops.processor.directory import verify_directory_document
from semops.protocol import Directory, DirectoryKey, PaymentNotice, PaymentRequest, open_signed
from tests.processor.network import (
    Merchant,
    Network,
    Wallet,
    account_balance,
    check_ledger,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


@on_both
async def test_a_person_asks_to_be_paid_and_is_paid(network: Network) -> None:
    bank = await network.add("bank-a")
    payer = await enrolled_wallet(bank, deposit_minor=1000, name="Payer Person")
    payee = await enrolled_wallet(bank, deposit_minor=None, name="Payee Person")
    body = json.dumps({"amount_minor": 250, "currency": "EUR", "reference": "pizza"}).encode()
    path = "/v1/wallet/requests"
    response = await bank.public.post(path, content=body, headers=payee.auth("POST", path, body))
    assert response.status_code == 201, response.text
    request = open_signed(
        response.json()["token"], PaymentRequest, bank.processor.directory.ring, network.clock.now()
    ).message
    assert request.payee_name == "Payee Person" and request.payee_id.startswith("p-")
    assert (await payer.pay(response.json()["token"])).status_code == 200
    assert await payee.balance() == 250
    assert await payer.balance() == 750
    history = (await payee.get("/v1/wallet/history")).json()["entries"]
    assert (history[0]["kind"], history[0]["amount_minor"]) == ("payment_received", 250)
    # The same person asking again gets a new request under the same payee id.
    second = await bank.public.post(path, content=body, headers=payee.auth("POST", path, body))
    assert second.json()["request_id"] != response.json()["request_id"]
    await check_ledger(bank)


async def test_a_person_request_needs_a_body_bound_authorisation(network: Network) -> None:
    bank = await network.add("bank-a")
    payee = await enrolled_wallet(bank)
    body = json.dumps({"amount_minor": 250, "currency": "EUR"}).encode()
    other_body = json.dumps({"amount_minor": 9999, "currency": "EUR"}).encode()
    path = "/v1/wallet/requests"
    response = await bank.public.post(
        path, content=other_body, headers=payee.auth("POST", path, body)
    )
    assert response.status_code == 401
    bad = json.dumps({"amount_minor": 1.5, "currency": "EUR"}).encode()
    response = await bank.public.post(path, content=bad, headers=payee.auth("POST", path, bad))
    assert response.status_code == 422
    assert await rows(bank, "requests") == []


@on_both
async def test_merchant_requests_are_idempotent_on_their_key(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    body = {"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_checkout-0001"}
    first = await bank.public.post("/v1/merchant/requests", json=body, headers=shop.headers)
    again = await bank.public.post("/v1/merchant/requests", json=body, headers=shop.headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    conflict = await bank.public.post(
        "/v1/merchant/requests", json={**body, "amount_minor": 101}, headers=shop.headers
    )
    assert conflict.status_code == 409
    assert len(await rows(bank, "requests")) == 1
    # Another merchant may use the same key for its own request.
    other = await merchant(bank, "other-shop", display_name="Other Shop")
    theirs = await bank.public.post("/v1/merchant/requests", json=body, headers=other.headers)
    assert theirs.status_code == 201 and theirs.json()["request_id"] != first.json()["request_id"]


async def test_merchant_requests_are_signed_small_and_bounded(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    created = await shop.request(1999, reference="A" * 35, basket_digest="B" * 43)
    assert len(created["token"]) <= 600
    ring = bank.processor.directory.ring
    request = open_signed(created["token"], PaymentRequest, ring, network.clock.now()).message
    assert (request.amount_minor, request.reference, request.basket_digest) == (
        1999,
        "A" * 35,
        "B" * 43,
    )
    stored = (await rows(bank, "requests"))[0]
    assert stored["fulfilment"] not in created["token"]
    for bad in (
        {"amount_minor": 1, "currency": "USD"},  # not the merchant's currency
        {"amount_minor": 1, "currency": "EUR", "ttl_s": 5},
        {"amount_minor": 1, "currency": "EUR", "ttl_s": 10**9},
        {"amount_minor": 10**16, "currency": "EUR"},
        {"amount_minor": 1, "currency": "EUR", "reference": "x" * 36},
        {"amount_minor": 1, "currency": "EUR", "idempotency_key": "no spaces allowed"},
    ):
        body = {"idempotency_key": "ik_bounded-0001", **bad}
        response = await bank.public.post("/v1/merchant/requests", json=body, headers=shop.headers)
        assert response.status_code == 422, bad
    assert len(await rows(bank, "requests")) == 1


async def test_merchant_calls_need_a_valid_api_key(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    body = {"amount_minor": 1, "currency": "EUR", "idempotency_key": "ik_checkout-0001"}
    for headers in ({}, {"Authorization": "Bearer sk_wrong"}, {"Authorization": shop.api_key}):
        response = await bank.public.post("/v1/merchant/requests", json=body, headers=headers)
        assert response.status_code == 401
    (payee,) = await rows(bank, "payees")
    assert shop.api_key not in json.dumps(payee)


async def test_merchant_ids_are_unique(network: Network) -> None:
    bank = await network.add("bank-a")
    await merchant(bank)
    body = {"merchant_id": "corner-shop", "display_name": "Copy", "currency": "EUR"}
    response = await bank.admin("POST", "/v1/admin/merchants", body)
    assert response.status_code == 409
    assert len(await rows(bank, "payees")) == 1


async def test_the_merchant_can_verify_notices_with_the_published_key(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    assert (await wallet.pay(created["token"])).status_code == 200
    keys = (await bank.public.get("/v1/merchant/keys", headers=shop.headers)).json()
    record = DirectoryKey.model_validate(keys["signing_key"]).to_record(keys["processor_id"])
    notice = (await shop.status(created["request_id"]))["notice"]
    message = open_signed(notice, PaymentNotice, KeyRing([record]), network.clock.now()).message
    assert message.request_id == created["request_id"]


async def test_the_wallet_config_carries_what_a_wallet_needs(network: Network) -> None:
    bank = await network.add("bank-a")
    config = (await bank.public.get("/v1/wallet/config")).json()
    assert config["processor_id"] == "bank-a"
    key = DirectoryKey.model_validate(config["encryption_key"])
    assert key.use == "enc" and key.kid == bank.processor.context.keys.enc_key.kid
    snapshot = verify_directory_document(
        {"directory": config["directory"], "router_certificate": config["router_certificate"]},
        bank.processor.context.keys,
        network.clock.now(),
    )
    assert isinstance(snapshot.directory, Directory)
    assert config["root_certificate"].startswith("-----BEGIN CERTIFICATE-----")


async def test_health_is_unavailable_until_registered(network: Network) -> None:
    bank = await network.add("bank-a", register=False)
    response = await bank.public.get("/healthz")
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
    assert (await bank.scheme.get("/healthz")).status_code == 503
    stop = asyncio.Event()
    await bank.processor.register_until_answered(stop)
    healthy = await bank.public.get("/healthz")
    assert healthy.status_code == 200 and healthy.json()["processor_id"] == "bank-a"


async def test_registration_is_retried_until_the_router_answers(network: Network) -> None:
    bank = await network.add("bank-a", register=False)
    network.router.mode = "down"
    stop = asyncio.Event()
    task = asyncio.create_task(bank.processor.register_until_answered(stop))
    await asyncio.sleep(0.5)
    assert not task.done()
    network.router.mode = "normal"
    await asyncio.wait_for(task, 10)
    assert bank.processor.directory.is_listed()


async def test_a_directory_signed_by_a_non_router_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    document = network.router.document()
    # A processor's certificate in place of the router's: it chains to the root but is
    # not a router's, so its directory is refused.
    mno_certificate = (mno.data_dir / "mno-b.crt").read_text()
    from semops.core.errors import SemopsError

    with pytest.raises(SemopsError) as refused:
        verify_directory_document(
            {**document, "router_certificate": mno_certificate},
            bank.processor.context.keys,
            network.clock.now(),
        )
    assert refused.value.code == "directory_invalid"  # one recipe: semops.protocol.directory
    with pytest.raises(SemopsError):
        verify_directory_document({"directory": "x.y.z"}, bank.processor.context.keys, 0)


async def test_the_position_and_account_views(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=800)
    assert (await wallet.pay((await shop.request(300))["token"])).status_code == 200
    position = (await bank.admin("GET", "/v1/admin/position")).json()
    (eur,) = position["positions"]
    assert eur == {
        "currency": "EUR",
        "net_position_minor": 0,
        "settlement_minor": 0,
        "suspense_minor": 0,
        "funding_minor": -800,
        "customers_minor": 500,
        "merchants_minor": 300,
    }
    assert position["notices_undelivered"] == 1
    account = (await bank.admin("GET", f"/v1/admin/accounts/{wallet.account_id}")).json()
    assert account["kind"] == "customer" and account["name"] == "Ada Lovelace"
    assert account["available_minor"] == 500 and account["pin_locked"] is False
    assert len(account["devices"]) == 1
    merchant_view = (await bank.admin("GET", f"/v1/admin/accounts/{shop.account_id}")).json()
    assert merchant_view["kind"] == "merchant" and merchant_view["name"] == "Corner Shop"
    assert (await bank.admin("GET", "/v1/admin/accounts/ac_none")).status_code == 404


@on_both
async def test_concurrent_retries_of_one_order_pay_once(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(1000)
    _, order = wallet.order(created["token"])
    answers = await asyncio.gather(*(wallet.send(order) for _ in range(6)))
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.text for answer in answers}) == 1
    assert await wallet.balance() == 4000
    assert len(await rows(bank, "orders")) == 1
    await check_ledger(bank)


@on_both
async def test_concurrent_orders_cannot_overdraw(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=2500)
    tokens = [(await shop.request(1000))["token"] for _ in range(5)]
    answers = await asyncio.gather(*(wallet.pay(token) for token in tokens))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200, 200, 402, 402, 402]
    assert await wallet.balance() == 500
    assert await account_balance(bank, shop.account_id) == 2000
    await check_ledger(bank)


@on_both
async def test_a_restarted_processor_keeps_everything(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank)
    created = await shop.request(100)
    _, order = wallet.order(created["token"])
    first = await wallet.send(order)
    await bank.close()
    restarted = await network.add("bank-a")
    again = Wallet(restarted, wallet.key, wallet.account_id)
    second = await again.send(order)
    assert second.text == first.text
    assert await again.balance() == 9900
    # The secrets were made once and reused: the PIN still verifies.
    shop = Merchant(restarted, shop.merchant_id, shop.api_key, shop.account_id)
    assert (await again.pay((await shop.request(50))["token"])).status_code == 200
    for name in ("pin.key", "reference.key", "operator.token"):
        assert (restarted.data_dir / name).stat().st_mode & 0o077 == 0
