"""What a processor lets a payer read: payee names (M5) and webhook URLs (M4), in process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from semops.core.errors import SemopsError
from semops.processor import ProcessorSettings
from tests.processor.network import (
    Network,
    Node,
    Wallet,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio

P2P = "/v1/wallet/requests"


async def _ask_to_be_paid(wallet: Wallet, node: Node) -> httpx.Response:
    body = json.dumps({"amount_minor": 250, "currency": "EUR"}).encode()
    return await node.public.post(P2P, content=body, headers=wallet.auth("POST", P2P, body))


@on_both
async def test_a_person_is_never_paid_under_a_merchant_s_name(network: Network) -> None:
    bank = await network.add("bank-a")
    await merchant(bank, display_name="Corner Shop")
    impostor = await enrolled_wallet(bank, name="C0rner Shop", phone="+4915100000101")
    refused = await _ask_to_be_paid(impostor, bank)
    assert (refused.status_code, refused.json()["code"]) == (409, "name_confusable")
    assert await rows(bank, "requests") == []
    assert [p["kind"] for p in await rows(bank, "payees")] == ["merchant"]
    # Two people may share a name: both are paid under it.
    for phone in ("+4915100000102", "+4915100000103"):
        person = await enrolled_wallet(bank, name="Ada Lovelace", phone=phone)
        assert (await _ask_to_be_paid(person, bank)).status_code == 201


async def test_a_name_stored_before_the_rule_is_never_put_in_a_request(network: Network) -> None:
    bank = await network.add("bank-a")
    person = await enrolled_wallet(bank, name="Ada Lovelace")
    async with bank.processor.context.database.write() as connection:
        await connection.execute(text("UPDATE customers SET name = :name"), {"name": "\u3164"})
    refused = await _ask_to_be_paid(person, bank)
    assert (refused.status_code, refused.json()["code"]) == (422, "name_not_allowed")
    assert await rows(bank, "requests") == []


async def test_a_merchant_name_that_looks_like_another_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    await merchant(bank, "corner-shop", display_name="Corner Shop")
    accounts = await rows(bank, "accounts")
    for number, name in enumerate(("CORNER SHOP", "C0rner Shop", "Corner  Shop")):
        body = {"merchant_id": f"fake-{number}", "display_name": name, "currency": "EUR"}
        answer = await bank.admin("POST", "/v1/admin/merchants", body)
        assert (answer.status_code, answer.json()["code"]) == (409, "name_confusable"), name
    assert len(await rows(bank, "payees")) == 1
    assert await rows(bank, "accounts") == accounts


async def test_without_development_a_plain_http_webhook_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    for url in ("http://127.0.0.1:9/notices", "https://shop.example/n?x=1"):
        body = {
            "merchant_id": "corner-shop",
            "display_name": "Corner Shop",
            "currency": "EUR",
            "webhook_url": url,
        }
        answer = await bank.admin("POST", "/v1/admin/merchants", body)
        assert (answer.status_code, answer.json()["code"]) == (422, "url_not_allowed"), url
    assert await rows(bank, "payees") == []


def test_development_needs_a_loopback_public_host(tmp_path: Path) -> None:
    fields = {
        "processor_id": "bank-a",
        "kind": "bank",
        "display_name": "Alpha Bank",
        "data_dir": tmp_path,
        "router_url": "https://127.0.0.1:8400",
    }
    ProcessorSettings(**fields, development=True).check()  # type: ignore[arg-type]
    ProcessorSettings(**fields, public_host="0.0.0.0").check()  # type: ignore[arg-type]
    with pytest.raises(SemopsError) as refused:
        ProcessorSettings(**fields, development=True, public_host="0.0.0.0").check()  # type: ignore[arg-type]
    assert refused.value.code == "validation_failed"
