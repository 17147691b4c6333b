"""The account takeover of issue C1, and its relatives M2 and the replayed reads, over real
processes: what a wiretapper on the wallet's link does with one captured call.

The attack as it was found: the web wallet's `POST /v1/wallet/devices/activation-codes`
(PIN-approved, device-authorised) captured and sent three more times within its DeviceAuth
life gave three more activation codes; enrolling with any code of an existing account
replaced its PIN and cleared its lockout; the attacker's device paid from the victim's
account and the victim's PIN was refused. Now a DeviceAuth is single use, and a further
device must prove the account's PIN, which nothing but a bank's audited reset can change.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
import pytest

from semops.core.encoding import digest_of
from semops.crypto import KeyUse, make_pin_block, read_unverified_claims
from semops.crypto.keys import derive_key
from semops.devnet.actors import Customer, balance, request_payment
from semops.protocol import OrderState, PaymentRequest, parse_claims
from semops.wallet.core import build_enrolment, build_order, device_auth_header
from tests.attack.attacker import CALL_TIMEOUT_S, device_key_of, pay, to_wallet_port, trusted
from tests.attack.conftest import PIN, Scene
from tests.attack.state import snapshot

pytestmark = pytest.mark.timeout(300)

CODES: Final = "/v1/wallet/devices/activation-codes"
ATTACKER_PIN: Final = "7391"


@dataclass(frozen=True, slots=True)
class Captured:
    """One wallet call exactly as it went over the wire: what a wiretapper keeps."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def send(self, scene: Scene, processor_id: str) -> httpx.Response:
        url = scene.layout.processor_url(processor_id) + self.path
        with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
            return client.request(self.method, url, headers=self.headers, content=self.body)


def wallet_call(customer: Customer, method: str, path: str, document: Any = None) -> Captured:
    """A call signed by the customer's device the way both wallets sign one."""
    body = json.dumps(document).encode() if document is not None else b""
    header = device_auth_header(
        device_key_of(customer),
        account_id=customer.account_id,
        method=method,
        path=path,
        now=int(time.time()),
        auth_entropy=secrets.token_bytes(16),
        body=body or None,
    )
    headers = {"Authorization": header}
    if body:
        headers["Content-Type"] = "application/json"
    return Captured(method, path, headers, body)


def add_device_call(scene: Scene, customer: Customer, pin: str) -> Captured:
    """The web wallet's "add a device": claims with a PIN block bound to them."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "purpose": "new_device",
        "account_id": customer.account_id,
        "created_at": now,
        "expires_at": now + 60,
    }
    enc_key = trusted(scene.network, customer.processor_id).encryption_key
    claims["pin_block"] = make_pin_block(pin, digest_of(claims), enc_key)
    return wallet_call(customer, "POST", CODES, claims)


def enrol_device(
    scene: Scene, processor_id: str, code: str, pin: str, name: str = "Attacker phone"
) -> httpx.Response:
    """A new device key and a PIN, enrolled with an activation code (the attacker's own
    device with a code it obtained, unless `name` says otherwise)."""
    key = derive_key("device", KeyUse.SIGN, secrets.token_bytes(48))
    enrolment = build_enrolment(
        device_key=key,
        activation_code=code,
        device_name=name,
        pin=pin,
        processor_enc_key=trusted(scene.network, processor_id).encryption_key,
        now=int(time.time()),
    )
    url = scene.layout.processor_url(processor_id) + "/v1/wallet/enrol"
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        return client.post(
            url, content=enrolment.token, headers={"Content-Type": "application/jose"}
        )


def credential(scene: Scene, account_id: str) -> tuple[Any, ...]:
    rows = snapshot({"bank-a": scene.db_urls()["bank-a"]})["bank-a"]["credentials"]
    (row,) = [row for row in rows if row[0] == account_id]
    return row


def test_a_captured_add_device_call_replayed_gives_no_code(scene: Scene) -> None:
    """C1, first step: three copies of one captured call gave three activation codes."""
    victim = scene.customer("bank-a")
    captured = add_device_call(scene, victim, PIN)
    first = captured.send(scene, "bank-a")
    assert first.status_code == 201, first.text
    before = scene.quiet()
    copies = [captured.send(scene, "bank-a") for _ in range(3)]
    assert [(copy.status_code, copy.json()["code"]) for copy in copies] == [(409, "replay")] * 3
    assert all("activation_code" not in copy.text for copy in copies)
    scene.assert_unchanged(before)


def test_an_activation_code_cannot_replace_the_pin_of_an_account(scene: Scene) -> None:
    """C1, second step: an attacker enrolling its own device and PIN with a code of the
    victim's account (captured, leaked or issued) took the account over. Now the
    attacker's PIN is a wrong PIN: counted once, nothing else changes, the victim pays."""
    network = scene.network
    victim = scene.customer("bank-a")
    issued = add_device_call(scene, victim, PIN).send(scene, "bank-a")
    assert issued.status_code == 201, issued.text
    code = issued.json()["activation_code"]
    victim_credential = credential(scene, victim.account_id)
    before = scene.quiet()

    takeover = enrol_device(scene, "bank-a", code, ATTACKER_PIN)
    assert (takeover.status_code, takeover.json()["code"]) == (403, "pin_invalid"), takeover.text
    after = credential(scene, victim.account_id)
    assert after[1] == victim_credential[1]  # the PIN's verification value: untouched
    assert (after[2], after[3]) == (1, False)  # one wrong attempt, not locked
    # Everything else as it was: no device, the code unused, no money moved.
    before["bank-a"]["credentials"] = [
        after if row[0] == victim.account_id else row for row in before["bank-a"]["credentials"]
    ]
    scene.assert_unchanged(before)

    created = request_payment(network, scene.shops["cafe"], 5000)
    start = balance(network, "bank-a", victim.account_id)
    outcome = pay(victim, created["token"])  # the victim's own PIN still pays
    assert outcome.state is OrderState.COMPLETED, outcome
    assert balance(network, "bank-a", victim.account_id) == start - 5000
    assert credential(scene, victim.account_id)[2] == 0

    # The customer's own second device, with the real PIN, is welcome.
    again = add_device_call(scene, victim, PIN).send(scene, "bank-a")
    own = enrol_device(scene, "bank-a", again.json()["activation_code"], PIN, "Own tablet")
    assert own.status_code == 200, own.text
    assert credential(scene, victim.account_id)[1] == victim_credential[1]
    notices = wallet_call(victim, "GET", "/v1/wallet/notices").send(scene, "bank-a")
    kinds = [notice["kind"] for notice in notices.json()["notices"]]
    assert kinds[:3] == ["device_enrolled", "activation_code_issued", "activation_code_issued"]
    # The customer reads the same on the command line.
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "semops",
            "wallet",
            "notices",
            "--wallet-dir",
            str(victim.wallet_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "COLUMNS": "160"},
    ).stdout
    assert "Device Own tablet was added" in shown, shown
    assert "You issued a code to add a device" in shown, shown


def test_a_replayed_wrong_pin_add_device_call_is_one_attempt(scene: Scene) -> None:
    """M2: each replay of a captured wrong-PIN call counted again; two locked the victim."""
    victim = scene.customer("bank-a")
    captured = add_device_call(scene, victim, "0000")
    first = captured.send(scene, "bank-a")
    assert (first.status_code, first.json()["code"]) == (403, "pin_invalid")
    before = scene.quiet()
    replays = [captured.send(scene, "bank-a") for _ in range(2)]
    assert [replay.json()["code"] for replay in replays] == ["replay", "replay"]
    scene.assert_unchanged(before)
    assert credential(scene, victim.account_id)[2:4] == (1, False)


def test_a_captured_read_or_p2p_request_works_once(scene: Scene) -> None:
    """Lower finding: a captured DeviceAuth read replayed within its life, and each replay
    of a captured P2P call made a new payment request."""
    victim = scene.customer("mno-b")
    read = wallet_call(victim, "GET", "/v1/wallet/history")
    assert read.send(scene, "mno-b").status_code == 200
    p2p = wallet_call(
        victim, "POST", "/v1/wallet/requests", {"amount_minor": 700, "currency": "EUR"}
    )
    created = p2p.send(scene, "mno-b")
    assert created.status_code == 201, created.text
    before = scene.quiet()
    again = [read.send(scene, "mno-b"), p2p.send(scene, "mno-b"), p2p.send(scene, "mno-b")]
    assert [(answer.status_code, answer.json()["code"]) for answer in again] == [
        (409, "replay")
    ] * 3
    assert all("entries" not in answer.text and "token" not in answer.text for answer in again)
    scene.assert_unchanged(before)


def test_a_reset_by_the_bank_ends_every_device_and_only_its_code_sets_a_pin(
    scene: Scene,
) -> None:
    """The one path that changes a PIN: an operator action, audited, forcing a fresh
    activation. The old device, the old PIN and any earlier code stop working."""
    network = scene.network
    victim = scene.customer("bank-a")
    spare = add_device_call(scene, victim, PIN).send(scene, "bank-a").json()["activation_code"]
    reset = network.admin("bank-a", "POST", f"/v1/admin/credentials/{victim.account_id}/reset")
    assert reset["devices_revoked"] == 1
    refused = wallet_call(victim, "GET", "/v1/wallet/balance").send(scene, "bank-a")
    assert refused.json()["code"] == "device_revoked"
    stale = enrol_device(scene, "bank-a", spare, ATTACKER_PIN)
    assert stale.json()["code"] == "activation_invalid"
    fresh = enrol_device(scene, "bank-a", reset["activation_code"], "2468")
    assert fresh.status_code == 200, fresh.text
    log = snapshot({"bank-a": scene.db_urls()["bank-a"]})["bank-a"]["audit_log"]
    resets = [json.loads(row[3]) for row in log if row[1] == "credential_reset"]
    assert {"account_id": victim.account_id, "devices_revoked": 1} in resets


def test_an_order_signed_by_a_device_of_a_reset_account_does_not_pay(scene: Scene) -> None:
    """A reset revokes the device: an order it signed before, sent late, pays nothing."""
    network = scene.network
    victim = scene.customer("bank-a")
    created = request_payment(network, scene.shops["books"], 150)
    order = build_order(
        request_token=created["token"],
        request=parse_claims(read_unverified_claims(created["token"]), PaymentRequest),
        processor_id="bank-a",
        payer_account=victim.account_id,
        processor_enc_key=trusted(network, "bank-a").encryption_key,
        device_key=device_key_of(victim),
        pin=PIN,
        order_entropy=secrets.token_bytes(16),
        now=int(time.time()),
    )
    network.admin("bank-a", "POST", f"/v1/admin/credentials/{victim.account_id}/reset")
    late = to_wallet_port(network, "bank-a", order.token)
    assert (late.status, late.code) == (403, "device_revoked")
