"""Who may set a PIN, and how often a signed call counts (DESIGN.md §6, issue C1/M2).

- No path sets a PIN without the PIN: a further device proves the existing PIN inside its
  enrolment's PIN block; only an account without a credential takes a new one; a reset by
  the bank removes the PIN, revokes every device and issues the one code that may set it.
- Every signed call is single use: a DeviceAuth id is spent by its first call (reads
  included), a refused enrolment sent again gets its stored refusal, so a captured copy is
  never a second effect and never a second PIN attempt.
- What changes the account's credentials is announced to its devices.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from semops.core.limits import PIN_ATTEMPTS_MAX
from semops.service.app import JOSE
from semops.store import processor as store
from tests.processor.network import (
    Network,
    Node,
    Wallet,
    device_key,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)
from tests.processor.test_wallet_web_api import CODES, new_device_claims, post

pytestmark = pytest.mark.anyio

BALANCE = "/v1/wallet/balance"
NOTICES = "/v1/wallet/notices"
REQUESTS = "/v1/wallet/requests"


async def issue_code(node: Node, account_id: str) -> str:
    """A further code, as the bank's back office issues it for a customer's new phone."""
    response = await node.admin("POST", f"/v1/admin/accounts/{account_id}/activation-codes")
    assert response.status_code == 201, response.text
    return str(response.json()["activation_code"])


async def credential(node: Node) -> dict[str, Any]:
    (row,) = await rows(node, "credentials")
    return row


async def send_enrolment(node: Node, token: str) -> httpx.Response:
    return await node.public.post("/v1/wallet/enrol", content=token, headers={"Content-Type": JOSE})


async def pays(node: Node, wallet: Wallet, amount_minor: int = 100) -> httpx.Response:
    shop = await merchant(
        node, merchant_id=f"shop-{amount_minor}", display_name=f"Shop {amount_minor}"
    )
    return await wallet.pay((await shop.request(amount_minor))["token"])


# --- a further device proves the PIN ------------------------------------------------------


@on_both
async def test_a_further_device_with_its_own_pin_is_refused_and_the_pin_stays(
    network: Network,
) -> None:
    """C1: enrolling with an activation code of an existing account once replaced its PIN
    and cleared its lockout. Now the attacker's own PIN is a wrong PIN, counted once."""
    bank = await network.add("bank-a")
    victim = await enrolled_wallet(bank)
    before = await credential(bank)
    code = await issue_code(bank, victim.account_id)

    attacker = Wallet(bank, device_key(), pin="9999")
    refused = await attacker.enrol(code)
    assert (refused.status_code, refused.json()["code"]) == (403, "pin_invalid")
    after = await credential(bank)
    assert after["pin_value"] == before["pin_value"]
    assert (after["failures"], after["locked"]) == (1, False)
    assert [row["kid"] for row in await rows(bank, "devices")] == [victim.key.kid]
    (used,) = [row for row in await rows(bank, "activation_codes") if row["used_at"] is None]
    assert used["account_id"] == victim.account_id  # the code is still the customer's

    assert (await pays(bank, victim)).status_code == 200  # the real PIN still pays
    phone = Wallet(bank, device_key())
    added = await phone.enrol(code)  # the customer's own new phone, with the real PIN
    assert added.status_code == 200, added.text
    assert (await credential(bank))["pin_value"] == before["pin_value"]
    assert (await pays(bank, phone, 200)).status_code == 200


@on_both
async def test_a_refused_enrolment_sent_again_is_not_a_second_pin_attempt(
    network: Network,
) -> None:
    """M2 for enrolments: a captured wrong-PIN enrolment replayed gets the same refusal."""
    bank = await network.add("bank-a")
    victim = await enrolled_wallet(bank)
    code = await issue_code(bank, victim.account_id)
    token = Wallet(bank, device_key(), pin="0000").enrolment(code)
    answers = [await send_enrolment(bank, token) for _ in range(PIN_ATTEMPTS_MAX + 1)]
    assert {(answer.status_code, answer.json()["code"]) for answer in answers} == {
        (403, "pin_invalid")
    }
    assert (await credential(bank))["failures"] == 1
    assert (await pays(bank, victim)).status_code == 200


async def test_a_locked_credential_refuses_a_further_device_even_with_the_right_pin(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    victim = await enrolled_wallet(bank)
    code = await issue_code(bank, victim.account_id)
    for _ in range(PIN_ATTEMPTS_MAX):
        await Wallet(bank, device_key(), pin="0000").enrol(code)
    assert (await credential(bank))["locked"]
    right = await Wallet(bank, device_key()).enrol(code)
    assert (right.status_code, right.json()["code"]) == (423, "pin_locked")
    assert len(await rows(bank, "devices")) == 1
    unlocked = await bank.admin("POST", f"/v1/admin/credentials/{victim.account_id}/unlock")
    assert unlocked.status_code == 200
    assert (await Wallet(bank, device_key()).enrol(code)).status_code == 200


# --- every signed call is single use ------------------------------------------------------


@on_both
async def test_a_device_authorisation_works_once_reads_included(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    headers = wallet.auth("GET", BALANCE)
    first = await bank.public.get(BALANCE, headers=headers)
    assert first.status_code == 200, first.text
    again = await bank.public.get(BALANCE, headers=headers)
    assert (again.status_code, again.json()["code"]) == (409, "replay")
    assert (await wallet.get(BALANCE)).status_code == 200  # a new authorisation works

    spent = await rows(bank, "signed_calls")
    assert len(spent) == 2 and all(row["kid"] == wallet.key.kid for row in spent)
    network.clock.advance(61)
    await bank.processor.customers.prune_signed_calls()
    assert await rows(bank, "signed_calls") == []
    late = await bank.public.get(BALANCE, headers=headers)  # forgotten, and expired
    assert late.json()["code"] == "message_expired"


@on_both
async def test_a_replayed_activation_code_call_makes_no_second_code(network: Network) -> None:
    """C1 as the attacker did it: the web wallet's call captured and sent three times."""
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    body = json.dumps(new_device_claims(wallet, wallet.pin)).encode()
    headers = {**wallet.auth("POST", CODES, body), "Content-Type": "application/json"}
    first = await bank.public.post(CODES, content=body, headers=headers)
    assert first.status_code == 201, first.text
    codes = await rows(bank, "activation_codes")
    for _ in range(3):
        copy = await bank.public.post(CODES, content=body, headers=headers)
        assert (copy.status_code, copy.json()["code"]) == (409, "replay")
        assert "activation_code" not in copy.text
    assert await rows(bank, "activation_codes") == codes


@on_both
async def test_a_replayed_wrong_pin_call_counts_once(network: Network) -> None:
    """M2: two replays of a captured wrong-PIN "add a device" call locked the victim."""
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    body = json.dumps(new_device_claims(wallet, "0000")).encode()
    headers = {**wallet.auth("POST", CODES, body), "Content-Type": "application/json"}
    first = await bank.public.post(CODES, content=body, headers=headers)
    assert first.json()["code"] == "pin_invalid"
    for _ in range(PIN_ATTEMPTS_MAX):
        assert (await bank.public.post(CODES, content=body, headers=headers)).status_code == 409
    assert ((await credential(bank))["failures"], (await credential(bank))["locked"]) == (1, False)
    assert (await pays(bank, wallet)).status_code == 200


@on_both
async def test_a_replayed_p2p_call_makes_no_second_request(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    body = json.dumps({"amount_minor": 500, "currency": "EUR"}).encode()
    headers = {**wallet.auth("POST", REQUESTS, body), "Content-Type": "application/json"}
    assert (await bank.public.post(REQUESTS, content=body, headers=headers)).status_code == 201
    again = await bank.public.post(REQUESTS, content=body, headers=headers)
    assert again.json()["code"] == "replay"
    assert len(await rows(bank, "requests")) == 1


async def test_a_p2p_request_with_the_wallets_key_is_returned_again_on_retry(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    document = {"amount_minor": 500, "currency": "EUR", "idempotency_key": "ms_retry-once-000"}
    first = await post(wallet, REQUESTS, document)
    retry = await post(wallet, REQUESTS, document)  # a new authorisation, the same key
    assert first.status_code == retry.status_code == 201, retry.text
    assert first.json()["request_id"] == retry.json()["request_id"]
    other = await post(wallet, REQUESTS, {**document, "amount_minor": 600})
    assert other.json()["code"] == "idempotency_conflict"
    assert len(await rows(bank, "requests")) == 1


# --- reset by the bank, and what the devices are told -------------------------------------


@on_both
async def test_a_reset_removes_the_pin_revokes_every_device_and_issues_the_only_code(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    stale_code = await issue_code(bank, wallet.account_id)
    reset = await bank.admin("POST", f"/v1/admin/credentials/{wallet.account_id}/reset")
    assert reset.status_code == 200, reset.text
    assert reset.json()["devices_revoked"] == 1
    assert await rows(bank, "credentials") == []
    refused = await wallet.get(BALANCE)
    assert refused.json()["code"] == "device_revoked"
    assert (await Wallet(bank, device_key()).enrol(stale_code)).json()["code"] == (
        "activation_invalid"
    )

    fresh = Wallet(bank, device_key(), pin="5678")
    assert (await fresh.enrol(reset.json()["activation_code"])).status_code == 200
    assert (await pays(bank, fresh)).status_code == 200
    old_pin = await fresh.pay(
        (await (await merchant(bank, merchant_id="shop-b", display_name="Shop B")).request(50))[
            "token"
        ],
        pin=wallet.pin,
    )
    assert old_pin.json()["code"] == "pin_invalid"
    audit = [row for row in await rows(bank, "audit_log") if row["kind"] == "credential_reset"]
    assert len(audit) == 1 and audit[0]["actor"] == "operator"
    assert json.loads(audit[0]["data"]) == {"account_id": wallet.account_id, "devices_revoked": 1}


async def test_a_reset_of_an_unknown_account_changes_nothing(network: Network) -> None:
    bank = await network.add("bank-a")
    await enrolled_wallet(bank)
    before = {table: await rows(bank, table) for table in ("credentials", "devices")}
    response = await bank.admin("POST", "/v1/admin/credentials/ac_nobody/reset")
    assert (response.status_code, response.json()["code"]) == (404, "account_unknown")
    assert {table: await rows(bank, table) for table in before} == before
    anonymous = await bank.public.post("/v1/admin/credentials/ac_nobody/reset")
    assert anonymous.status_code == 401


@on_both
async def test_the_accounts_devices_are_told_of_codes_devices_and_resets(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    laptop = await enrolled_wallet(bank)
    bystander = await enrolled_wallet(bank, name="Bystander", phone="+447700900777")
    code = await issue_code(bank, laptop.account_id)
    tablet = Wallet(bank, device_key())
    assert (await tablet.enrol(code)).status_code == 200
    issued = await post(laptop, CODES, new_device_claims(laptop, laptop.pin))
    assert issued.status_code == 201

    listed = await tablet.get(NOTICES)
    assert listed.status_code == 200 and listed.headers["cache-control"] == "no-store"
    kinds = [(notice["kind"], notice["actor"]) for notice in listed.json()["notices"]]
    assert kinds == [
        ("activation_code_issued", "customer"),
        ("device_enrolled", "customer"),
        ("activation_code_issued", "operator"),
        ("device_enrolled", "customer"),  # the first device, at the account's opening
    ]
    assert listed.json()["notices"][1]["device_name"] == "Phone"
    assert set(listed.json()["notices"][0]) == {"kind", "actor", "device_name", "created_at"}
    assert [n["kind"] for n in (await bystander.get(NOTICES)).json()["notices"]] == [
        "device_enrolled"
    ]


@on_both
async def test_a_reset_cannot_be_outrun_by_a_code_asked_for_at_the_same_moment(
    network: Network,
) -> None:
    """Found in review: a thief with the phone and the PIN asked for a code while the bank
    reset the account; a code issued after the reset then set the thief's PIN. Now the
    device and the credential are checked, with the PIN, in the very transaction that
    issues the code: a reset that committed first leaves it nothing to issue."""
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    customers = bank.processor.customers
    real_authenticate = customers.authenticate
    reset: dict[str, Any] = {}

    async def reset_meanwhile(*args: Any) -> dict[str, Any]:
        device = await real_authenticate(*args)
        reset.update(await customers.reset_credentials(wallet.account_id))
        return device

    customers.authenticate = reset_meanwhile  # type: ignore[method-assign]
    answer = await post(wallet, CODES, new_device_claims(wallet, wallet.pin))
    customers.authenticate = real_authenticate  # type: ignore[method-assign]
    assert (answer.status_code, answer.json()["code"]) == (403, "device_revoked")
    usable = [row for row in await rows(bank, "activation_codes") if row["used_at"] is None]
    assert [row["sets_pin"] for row in usable if row["expires_at"] > network.clock.now()] == [
        True
    ]  # only the reset's own code is left
    thief = await Wallet(bank, device_key(), pin="6666").enrol(reset["activation_code"])
    assert thief.status_code == 200  # whoever holds the reset's code chooses the PIN: the bank
    # hands it over out of band, which is the point of a reset.


async def test_a_code_for_a_further_device_never_sets_a_pin(network: Network) -> None:
    """Defence in depth: should an account lose its PIN by any other path, a code issued for
    a further device still cannot set one."""
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    code = await issue_code(bank, wallet.account_id)
    async with bank.processor.context.database.write() as connection:
        await connection.execute(store.credentials.delete())
    refused = await Wallet(bank, device_key(), pin="6666").enrol(code)
    assert (refused.status_code, refused.json()["code"]) == (403, "activation_invalid")
    assert await rows(bank, "credentials") == []
    assert len(await rows(bank, "devices")) == 1
