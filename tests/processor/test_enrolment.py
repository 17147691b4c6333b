"""Enrolment: activation codes, device keys, the PIN set, device authorisation, revocation."""

from __future__ import annotations

import pytest

from semops.crypto import make_kid, public_jwk
from semops.service.app import JOSE
from tests.processor.network import (
    Network,
    Wallet,
    customer,
    database_text,
    device_key,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


@on_both
async def test_enrolment_registers_the_device_under_the_documented_kid(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank, name="Grace Hopper")
    wallet = Wallet(bank, device_key())
    response = await wallet.enrol(created["activation_code"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "account_id": created["account_id"],
        "device_kid": make_kid("device", public_jwk(wallet.key.key)),
        "customer_name": "Grace Hopper",
        "currency": "EUR",
    }
    devices = await rows(bank, "devices")
    assert [device["kid"] for device in devices] == [body["device_kid"]]


@on_both
async def test_the_activation_code_is_stored_only_as_a_digest_and_works_once(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    code = created["activation_code"]
    assert code not in await database_text(bank)
    first = Wallet(bank, device_key())
    assert (await first.enrol(code)).status_code == 200
    second = Wallet(bank, device_key())
    response = await second.enrol(code)
    assert response.status_code == 403
    assert response.json()["code"] == "activation_invalid"
    assert len(await rows(bank, "devices")) == 1


async def test_an_expired_or_unknown_activation_code_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    unknown = await Wallet(bank, device_key()).enrol("AAAA-BBBB-CCCC")
    assert unknown.json()["code"] == "activation_invalid"
    network.clock.advance(24 * 60 * 60)
    expired = await Wallet(bank, device_key()).enrol(created["activation_code"])
    assert expired.status_code == 403
    assert expired.json()["code"] == "activation_invalid"
    assert await rows(bank, "devices") == []
    assert await rows(bank, "credentials") == []


async def test_the_pin_is_kept_only_as_a_keyed_verification_value(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    (credential,) = await rows(bank, "credentials")
    assert credential["account_id"] == wallet.account_id
    assert credential["failures"] == 0 and not credential["locked"]
    assert wallet.pin not in credential["pin_value"]
    assert len(credential["pin_value"]) == 43  # base64url of an HMAC-SHA-256


async def test_the_header_kid_must_be_the_device_kid_of_the_registered_key(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    # A key whose kid is made with another owner: the header no longer names the key
    # under the convention, so the enrolment is refused before anything is stored.
    from semops.crypto import KeyUse, derive_key
    from tests.processor.network import seed

    odd = Wallet(bank, derive_key("someone", KeyUse.SIGN, seed("odd device")))
    response = await odd.enrol(created["activation_code"])
    assert response.status_code == 401
    assert response.json()["code"] == "signature_invalid"
    assert await rows(bank, "devices") == []


async def test_an_enrolment_signed_by_another_key_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    wallet = Wallet(bank, device_key())
    token = wallet.enrolment(created["activation_code"])
    header, payload, _ = token.split(".")
    forged = Wallet(bank, device_key()).enrolment(created["activation_code"]).split(".")[2]
    response = await bank.public.post(
        "/v1/wallet/enrol",
        content=f"{header}.{payload}.{forged}",
        headers={"Content-Type": JOSE},
    )
    assert response.json()["code"] == "signature_invalid"
    # The code was not used up by the refused attempt.
    assert (await wallet.enrol(created["activation_code"])).status_code == 200


async def test_a_pin_block_bound_to_another_enrolment_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    wallet = Wallet(bank, device_key())
    other = wallet.enrolment(created["activation_code"], name="Other phone")
    token = wallet.enrolment(created["activation_code"])
    # Lift the PIN block from the other enrolment into this one and re-sign.
    from semops.crypto import read_unverified_claims
    from semops.protocol import Enrolment, parse_claims, sign

    mine = parse_claims(read_unverified_claims(token), Enrolment)
    theirs = parse_claims(read_unverified_claims(other), Enrolment)
    spliced = sign(mine.model_copy(update={"pin_block": theirs.pin_block}), wallet.key)
    response = await bank.public.post(
        "/v1/wallet/enrol", content=spliced, headers={"Content-Type": JOSE}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "pin_block_mismatch"


async def test_a_malformed_pin_is_refused_at_enrolment(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    wallet = Wallet(bank, device_key())
    from semops.crypto import seal_for
    from semops.protocol import Enrolment, sign

    now = network.clock.now()
    draft = Enrolment(
        activation_code=created["activation_code"],
        device_jwk=public_jwk(wallet.key.key),
        device_name="Phone",
        created_at=now,
        expires_at=now + 60,
        pin_block="eyJhbGciOiJFQ0RILUVTIn0.a2V5.aXY.Y2lwaGVy.dGFn",
    )
    claims = {"v": 1, "pin": "12", "order_digest": draft.enrolment_digest()}
    block = seal_for(claims, wallet.enc_record())
    token = sign(draft.model_copy(update={"pin_block": block}), wallet.key)
    response = await bank.public.post(
        "/v1/wallet/enrol", content=token, headers={"Content-Type": JOSE}
    )
    assert response.json()["code"] == "pin_format"
    assert await rows(bank, "credentials") == []


async def test_one_device_key_cannot_be_enrolled_twice(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    again = await customer(bank, name="Someone Else")
    response = await wallet.enrol(again["activation_code"])
    assert response.status_code == 422
    assert len(await rows(bank, "devices")) == 1


async def test_devices_are_listed_and_a_revoked_device_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    listed = await bank.admin("GET", f"/v1/admin/accounts/{wallet.account_id}/devices")
    (device,) = listed.json()["devices"]
    assert device["status"] == "active" and device["device_name"] == "Phone"
    assert (await wallet.get("/v1/wallet/balance")).status_code == 200
    revoked = await bank.admin("POST", f"/v1/admin/devices/{device['kid']}/revoke")
    assert revoked.json()["status"] == "revoked"
    response = await wallet.get("/v1/wallet/balance")
    assert response.status_code == 403
    assert response.json()["code"] == "device_revoked"


async def test_an_unknown_device_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    stranger = Wallet(bank, device_key(), account_id=wallet.account_id)
    response = await stranger.get("/v1/wallet/balance")
    assert response.status_code == 403
    assert response.json()["code"] == "device_unknown"


async def test_device_authorisation_binds_method_path_account_and_time(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    other = await enrolled_wallet(bank, name="Other Person")
    path = "/v1/wallet/balance"
    ok = await bank.public.get(path, headers=wallet.auth("GET", path))
    assert ok.status_code == 200
    assert ok.json()["account_id"] == wallet.account_id
    for headers in (
        wallet.auth("GET", "/v1/wallet/history"),  # another path
        wallet.auth("POST", path),  # another method
        wallet.auth("GET", path, account_id=other.account_id),  # another account
        wallet.auth("GET", path, b"{}"),  # a body that was not sent
        {"Authorization": "Bearer nope"},
        {},
    ):
        response = await bank.public.get(path, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["code"] == "unauthenticated"
    stale = wallet.auth("GET", path)
    network.clock.advance(61)
    response = await bank.public.get(path, headers=stale)
    assert response.json()["code"] == "message_expired"


async def test_admin_endpoints_need_the_operator_token(network: Network) -> None:
    bank = await network.add("bank-a")
    body = {"name": "Eve", "phone": "+15550100", "currency": "EUR"}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = await bank.public.post("/v1/admin/customers", json=body, headers=headers)
        assert response.status_code == 401
    assert await rows(bank, "customers") == []


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "phone": "+15550100", "currency": "EUR"},
        {"name": "Eve\nAdmin", "phone": "+15550100", "currency": "EUR"},
        {"name": "Eve", "phone": "call me", "currency": "EUR"},
        {"name": "Eve", "phone": "+15550100", "currency": "XXX"},
        {"name": "Eve", "phone": "+15550100", "currency": "EUR", "deposit_minor": 12.5},
        {"name": "Eve", "phone": "+15550100", "currency": "EUR", "deposit_minor": 0},
        {"name": "Eve", "phone": "+15550100", "currency": "EUR", "extra": 1},
    ],
)
async def test_bad_customer_input_is_refused_and_changes_nothing(
    network: Network, body: dict[str, object]
) -> None:
    bank = await network.add("bank-a")
    response = await bank.admin("POST", "/v1/admin/customers", body)
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == "application/problem+json"
    assert await rows(bank, "customers") == []


async def test_deposits_are_idempotent_on_their_reference(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank, deposit_minor=None)
    path = f"/v1/admin/accounts/{wallet.account_id}/deposits"
    first = await bank.admin("POST", path, {"amount_minor": 500, "reference": "cash-in 1"})
    again = await bank.admin("POST", path, {"amount_minor": 500, "reference": "cash-in 1"})
    assert first.status_code == again.status_code == 200
    assert again.json()["available_minor"] == 500
    conflict = await bank.admin("POST", path, {"amount_minor": 600, "reference": "cash-in 1"})
    assert conflict.status_code == 409
    assert conflict.json()["code"] == "idempotency_conflict"
    unknown = await bank.admin(
        "POST", "/v1/admin/accounts/ac_nope/deposits", {"amount_minor": 1, "reference": "x"}
    )
    assert unknown.json()["code"] == "account_unknown"
    assert await wallet.balance() == 500


async def test_an_enrolment_retried_after_a_lost_answer_gets_the_same_answer(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    wallet = Wallet(bank, device_key())
    first = await wallet.enrol(created["activation_code"])
    # The answer was lost; the wallet sends the enrolment again (a new signature, and even
    # another PIN typed by mistake): the enrolment stands as it was.
    retry = await bank.public.post(
        "/v1/wallet/enrol",
        content=wallet.enrolment(created["activation_code"], pin="1111"),
        headers={"Content-Type": JOSE},
    )
    assert retry.status_code == 200 and retry.json() == first.json()
    assert len(await rows(bank, "devices")) == 1
    shop_request = await (await merchant(bank)).request(100)
    assert (await wallet.pay(shop_request["token"])).status_code == 200  # the first PIN
    # After revocation a retry no longer succeeds.
    await bank.admin("POST", f"/v1/admin/devices/{first.json()['device_kid']}/revoke")
    again = await wallet.enrol(created["activation_code"])
    assert again.json()["code"] == "device_revoked"


async def test_wallet_history_is_bounded(network: Network) -> None:
    from semops.core.limits import WALLET_HISTORY_MAX

    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank, deposit_minor=None)
    path = f"/v1/admin/accounts/{wallet.account_id}/deposits"
    for number in range(WALLET_HISTORY_MAX + 5):
        body = {"amount_minor": 1 + number, "reference": f"cash-in {number}"}
        assert (await bank.admin("POST", path, body)).status_code == 200
    entries = (await wallet.get("/v1/wallet/history")).json()["entries"]
    assert len(entries) == WALLET_HISTORY_MAX
    assert entries[0]["amount_minor"] == WALLET_HISTORY_MAX + 5  # newest first
