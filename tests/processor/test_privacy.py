"""DESIGN.md §5 and §6 at the processor: what is logged, stored and answered.

Secrets (PINs, PIN blocks, activation codes, API keys, operator tokens, keys) never reach
a log line or an error; the payee side holds only one-time payer references; the merchant
sees nothing about the payer or the payer's processor.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from semops.crypto import read_unverified_claims
from semops.protocol import PaymentNotice, parse_claims
from semops.service.logs import ALLOWED_FIELDS
from tests.processor.network import (
    PIN,
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


def flat(logs: list[dict[str, Any]]) -> str:
    return json.dumps(logs, default=str)


async def test_secrets_never_reach_the_logs(network: Network) -> None:
    with capture_logs() as logs:
        bank = await network.add("bank-a")
        created = await customer(bank)
        wallet = Wallet(bank, device_key(), pin="975310")
        enrolment = wallet.enrolment(created["activation_code"])
        assert (await wallet.enrol(created["activation_code"])).status_code == 200
        shop = await merchant(bank)
        request = await shop.request(100)
        _, wrong = wallet.order(request["token"], pin="135790")
        assert (await wallet.send(wrong)).status_code == 403
        _, order = wallet.order(request["token"])
        assert (await wallet.send(order)).status_code == 200
        await bank.admin("POST", f"/v1/admin/credentials/{wallet.account_id}/unlock")
    text = flat(logs)
    keys = bank.processor.context.keys
    for secret in (
        "975310",
        "135790",
        created["activation_code"],
        shop.api_key,
        keys.operator_token,
        enrolment.split(".")[1],
        order.split(".")[1],
    ):
        assert secret not in text, secret
    events = {entry["event"] for entry in logs}
    assert {"pin_refused", "order_completed", "credential_unlocked_by_operator"} <= events
    # Every field a processor logs survives the service's allowlist.
    used = {key for entry in logs for key in entry if key not in ("log_level",)}
    assert used <= ALLOWED_FIELDS, used - ALLOWED_FIELDS


async def test_errors_never_echo_secrets(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    shop = await merchant(bank)
    request = await shop.request(100)
    response = await wallet.pay(request["token"], pin="000000")
    assert "000000" not in response.text
    bad = await bank.admin(
        "POST", "/v1/admin/customers", {"name": "Eve", "phone": "secret-123456", "currency": "EUR"}
    )
    assert bad.status_code == 422 and "secret-123456" not in bad.text


@on_both
async def test_the_payee_side_stores_no_payer_identity(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank, name="Ada Lovelace", phone="+447700900555")
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    assert (await wallet.pay(request["token"])).status_code == 200
    assert (await shop.refund(request["request_id"], 100)).json()["state"] == "completed"
    (order,) = await rows(bank, "orders")
    device = (await rows(bank, "devices"))[0]
    stored = await database_text(mno)
    for datum in (
        wallet.account_id,
        "Ada Lovelace",
        "+447700900555",
        "bank-a",
        order["order_id"],
        device["kid"],
        order["device_kid"],
    ):
        assert datum not in stored, datum
    # The payer side holds no merchant account.
    assert shop.account_id not in await database_text(bank)


async def test_the_merchant_learns_nothing_about_the_payer(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(300)
    assert (await wallet.pay(request["token"])).status_code == 200
    status = await shop.status(request["request_id"])
    notice = parse_claims(read_unverified_claims(status["notice"]), PaymentNotice)
    visible = json.dumps(status) + json.dumps(notice.to_claims())
    (inbound,) = await rows(mno, "inbound_transfers")
    for datum in (wallet.account_id, "bank-a", "Ada Lovelace", inbound["payer_ref"]):
        assert datum not in visible, datum
    assert await mno.processor.payees.deliver_outbox() == 1
    ((_, delivered),) = network.webhooks.received
    assert delivered == status["notice"]


async def test_the_pin_is_not_in_the_database(network: Network) -> None:
    bank = await network.add("bank-a")
    created = await customer(bank)
    wallet = Wallet(bank, device_key(), pin="864209")
    assert (await wallet.enrol(created["activation_code"])).status_code == 200
    assert "864209" not in await database_text(bank)
    assert wallet.pin != PIN


async def test_the_wallet_accepts_the_processors_configuration(network: Network) -> None:
    """The wallet's own check of /v1/wallet/config (semops.wallet) passes on what we serve."""
    wallet_core = pytest.importorskip("semops.wallet.core")
    bank = await network.add("bank-a")
    config = (await bank.public.get("/v1/wallet/config")).json()
    trusted = wallet_core.verify_config(config, network.clock.now())
    assert trusted.processor_id == "bank-a"
    assert trusted.encryption_key.kid == bank.processor.context.keys.enc_key.kid


def test_the_log_allowlist_is_in_force_for_the_service() -> None:
    # A processor logs through structlog; the service's allowlist drops unknown keys, so a
    # secret passed by mistake under a new name would not be written.
    assert "pin" not in ALLOWED_FIELDS and "activation_code" not in ALLOWED_FIELDS
    assert structlog.get_logger("semops.processor") is not None
