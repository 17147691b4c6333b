"""The wallet API the web wallet pages added: request verification, QR reading, the
device list, revocation by the customer, and activation codes for another device.

Every call is made the way the page makes it (a DeviceAuth over the exact body), on
SQLite and PostgreSQL. Each refusal is checked for its stable code *and* for the state it
must leave alone.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
import segno
from PIL import Image

from semops.core.encoding import b64url_decode, b64url_encode, digest_of
from semops.crypto import make_pin_block
from semops.processor.wallet_web.router import CONTENT_SECURITY_POLICY, PAGES
from tests.processor.network import (
    Network,
    Wallet,
    device_key,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio

VERIFY = "/v1/wallet/verify"
QR = "/v1/wallet/qr"
DEVICES = "/v1/wallet/devices"
REVOKE = "/v1/wallet/devices/revoke"
CODES = "/v1/wallet/devices/activation-codes"


async def post(
    wallet: Wallet, path: str, document: Any = None, *, raw: bytes | None = None
) -> httpx.Response:
    body = raw if raw is not None else json.dumps(document).encode()
    headers = {
        **wallet.auth("POST", path, body),
        "Content-Type": "application/octet-stream" if raw is not None else "application/json",
    }
    return await wallet.node.public.post(path, content=body, headers=headers)


def new_device_claims(wallet: Wallet, pin: str, **changes: Any) -> dict[str, Any]:
    """What the page sends for a new activation code: claims and a PIN block bound to them."""
    now = wallet.clock.now()
    bound_to = changes.pop("bound_to", None)
    draft = {
        "purpose": "new_device",
        "account_id": wallet.account_id,
        "created_at": now,
        "expires_at": now + 60,
        **changes,
    }
    bound = bound_to or digest_of(draft)
    return {**draft, "pin_block": make_pin_block(pin, bound, wallet.enc_record())}


async def second_device(wallet: Wallet) -> Wallet:
    """Another device on the wallet's account, enrolled with a code the first one got."""
    response = await post(wallet, CODES, new_device_claims(wallet, wallet.pin))
    assert response.status_code == 201, response.text
    other = Wallet(wallet.node, device_key())
    enrolled = await other.enrol(response.json()["activation_code"])
    assert enrolled.status_code == 200, enrolled.text
    assert other.account_id == wallet.account_id
    return other


def png_of(text: str, *, scale: int = 4) -> bytes:
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="png", scale=scale, border=4)
    return buffer.getvalue()


# --- verification of a request --------------------------------------------------------------


@on_both
async def test_verify_returns_the_checked_request_and_the_key_that_signed_it(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "corner-cafe")
    created = await shop.request(1250, reference="Flat white")

    response = await post(wallet, VERIFY, {"token": created["token"]})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    request = body["request"]
    assert (request["payee_name"], request["amount_minor"], request["currency"]) == (
        "Corner Shop",
        1250,
        "EUR",
    )
    assert request["reference"] == "Flat white"
    assert request["payee_processor"] == "mno-b"
    assert request["request_id"] == created["request_id"]
    assert body["payee_processor_name"] == "MNO-B"
    signing = mno.processor.context.keys.sign_record()
    assert body["signer"] == {"kid": signing.kid, "jwk": signing.jwk}


async def test_verify_refuses_a_tampered_an_expired_and_a_malformed_token(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    shop = await merchant(bank)
    token = (await shop.request(1250))["token"]
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["amt"] = 1
    forged_payload = b64url_encode(json.dumps(claims).encode())
    forged = await post(wallet, VERIFY, {"token": f"{header}.{forged_payload}.{signature}"})
    assert (forged.status_code, forged.json()["code"]) == (401, "signature_invalid")

    malformed = await post(wallet, VERIFY, {"token": "semops:pay?r=nope"})
    assert (malformed.status_code, malformed.json()["code"]) == (400, "token_invalid")
    unauthenticated = await bank.public.post(VERIFY, json={"token": token})
    assert unauthenticated.json()["code"] == "unauthenticated"

    network.clock.advance(11 * 60)
    expired = await post(wallet, VERIFY, {"token": token})
    assert (expired.status_code, expired.json()["code"]) == (410, "request_expired")


# --- reading a QR picture --------------------------------------------------------------------


@on_both
async def test_the_qr_endpoint_reads_the_one_code_in_a_picture_and_refuses_the_rest(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    shop = await merchant(bank)
    link = "semops:pay?r=" + (await shop.request(1250))["token"]

    read = await post(wallet, QR, raw=png_of(link))
    assert read.status_code == 200, read.text
    assert read.json() == {"text": link}

    blank = io.BytesIO()
    Image.new("L", (80, 80), 255).save(blank, format="PNG")
    nothing = await post(wallet, QR, raw=blank.getvalue())
    assert (nothing.status_code, nothing.json()["code"]) == (400, "token_invalid")
    assert nothing.json()["detail"] == "no QR code was found in the image"

    two = Image.new("L", (900, 450), 255)
    two.paste(Image.open(io.BytesIO(png_of(link))), (0, 0))
    two.paste(Image.open(io.BytesIO(png_of("semops:pay?r=a.b.c"))), (450, 0))
    both = io.BytesIO()
    two.save(both, format="PNG")
    refused = await post(wallet, QR, raw=both.getvalue())
    assert refused.json()["detail"] == "the image holds more than one QR code"

    huge = io.BytesIO()
    Image.new("1", (5000, 5000), 1).save(huge, format="PNG")  # tiny file, huge canvas
    assert len(huge.getvalue()) < 16 * 1024
    bomb = await post(wallet, QR, raw=huge.getvalue())
    assert (bomb.status_code, bomb.json()["code"]) == (413, "too_large")

    too_big = await post(wallet, QR, raw=b"\x89PNG" + bytes(17 * 1024))
    assert (too_big.status_code, too_big.json()["code"]) == (413, "too_large")
    not_image = await post(wallet, QR, raw=b"GIF89a not really")
    assert not_image.json()["code"] == "token_invalid"
    anonymous = await bank.public.post(QR, content=png_of(link))
    assert anonymous.json()["code"] == "unauthenticated"


# --- devices: list, add, revoke ---------------------------------------------------------------


@on_both
async def test_a_device_lists_adds_and_revokes_devices_of_its_own_account(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    laptop = await enrolled_wallet(bank)
    tablet = await second_device(laptop)

    listed = await laptop.get(DEVICES)
    assert listed.status_code == 200, listed.text
    assert listed.headers["cache-control"] == "no-store"
    body = listed.json()
    assert body["this_device"] == laptop.key.kid
    assert {device["kid"] for device in body["devices"]} == {laptop.key.kid, tablet.key.kid}
    assert all(set(device) == {"kid", "device_name", "status", "created_at", "revoked_at"}
               for device in body["devices"])  # fmt: skip

    revoked = await post(laptop, REVOKE, {"kid": tablet.key.kid})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    refused = await tablet.get("/v1/wallet/balance")
    assert (refused.status_code, refused.json()["code"]) == (403, "device_revoked")
    again = await post(laptop, REVOKE, {"kid": tablet.key.kid})
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]  # a no-op

    audit = [row for row in await rows(bank, "audit_log") if row["kind"] == "device_revoked"]
    assert len(audit) == 1 and audit[0]["actor"] == "customer"
    assert json.loads(audit[0]["data"]) == {"kid": tablet.key.kid, "account_id": laptop.account_id}

    # A device may revoke itself: afterwards it is refused like any revoked one.
    itself = await post(laptop, REVOKE, {"kid": laptop.key.kid})
    assert itself.json()["status"] == "revoked"
    assert (await laptop.get(DEVICES)).json()["code"] == "device_revoked"


@on_both
async def test_a_device_of_another_account_is_not_found_and_stays_active(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    mallory = await enrolled_wallet(bank, name="Mallory", phone="+447700900666")
    victim = await enrolled_wallet(bank)
    response = await post(mallory, REVOKE, {"kid": victim.key.kid})
    assert (response.status_code, response.json()["code"]) == (404, "not_found")
    unknown = await post(mallory, REVOKE, {"kid": "device:doesnotexist0000"})
    assert unknown.json() == {**response.json(), "instance": unknown.json()["instance"]}
    statuses = {row["kid"]: row["status"] for row in await rows(bank, "devices")}
    assert statuses == {mallory.key.kid: "active", victim.key.kid: "active"}
    assert (await victim.get("/v1/wallet/balance")).status_code == 200
    assert [kid["kid"] for kid in (await mallory.get(DEVICES)).json()["devices"]] == [
        mallory.key.kid
    ]


@on_both
async def test_an_activation_code_needs_the_right_pin_bound_to_this_very_call(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    codes_before = len(await rows(bank, "activation_codes"))

    wrong = await post(wallet, CODES, new_device_claims(wallet, "0000"))
    assert (wrong.status_code, wrong.json()["code"]) == (403, "pin_invalid")
    assert wrong.json()["attempts_remaining"] == 2
    other_call = new_device_claims(wallet, wallet.pin, bound_to=digest_of({"other": 1}))
    mismatch = await post(wallet, CODES, other_call)
    assert mismatch.json()["code"] == "pin_block_mismatch"
    foreign = await post(wallet, CODES, new_device_claims(wallet, wallet.pin, account_id="ac_x"))
    assert foreign.json()["code"] == "forbidden"
    stale = new_device_claims(wallet, wallet.pin)
    network.clock.advance(120)
    late = await post(wallet, CODES, stale)
    assert late.json()["code"] == "message_expired"
    assert len(await rows(bank, "activation_codes")) == codes_before

    issued = await post(wallet, CODES, new_device_claims(wallet, wallet.pin))
    assert issued.status_code == 201, issued.text
    code = issued.json()["activation_code"]
    stored = await rows(bank, "activation_codes")
    assert len(stored) == codes_before + 1
    assert code not in json.dumps(stored, default=str)  # only its digest is kept
    (credential,) = await rows(bank, "credentials")
    assert credential["failures"] == 0  # the right PIN reset the count
    first = Wallet(bank, device_key())
    assert (await first.enrol(code)).status_code == 200
    reused = await Wallet(bank, device_key()).enrol(code)
    assert reused.json()["code"] == "activation_invalid"


async def test_three_wrong_pins_for_a_code_lock_the_credential_for_payments_too(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    for _ in range(3):
        await post(wallet, CODES, new_device_claims(wallet, "0000"))
    locked = await post(wallet, CODES, new_device_claims(wallet, wallet.pin))
    assert (locked.status_code, locked.json()["code"]) == (423, "pin_locked")
    shop = await merchant(bank)
    paid = await wallet.pay((await shop.request(100))["token"])
    assert paid.json()["code"] == "pin_locked"


# --- the pages themselves ---------------------------------------------------------------------


async def test_the_pages_and_their_files_carry_the_security_headers(network: Network) -> None:
    bank = await network.add("bank-a")
    client: httpx.AsyncClient = bank.public
    for name in PAGES:
        response = await client.get(f"/wallet/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert response.text.startswith('<!doctype html>\n<html lang="en">')
        assert "<script>" not in response.text  # every script is a file of this origin
    script = await client.get("/wallet/static/wallet.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/wallet/static/missing.js")).status_code == 404
    assert (await client.get("/wallet/nowhere")).json()["code"] == "not_found"
    redirect = await client.get("/wallet")
    assert (redirect.status_code, redirect.headers["location"]) == (308, "/wallet/")
    svg = await client.get("/wallet/qr.svg", params={"link": "semops:pay?r=a.b.c"})
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.content.startswith(b"<?xml") and b"<script" not in svg.content
    other = await client.get("/wallet/qr.svg", params={"link": "javascript:alert(1)"})
    assert (other.status_code, other.json()["code"]) == (400, "token_invalid")
    long = await client.get("/wallet/qr.svg", params={"link": "semops:pay?r=a.b." + "c" * 700})
    assert long.status_code in (400, 422)
