"""The people and shops of a local network: customers with wallets, merchants with keys.

Everything goes through the public APIs a real bank's back office, a merchant's backend
and a customer's wallet use; nothing reaches into a database.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from semops.devnet.network import Network, ServiceError
from semops.devnet.processes import open_url
from semops.service.clock import SystemClock
from semops.wallet.client import HttpTransport
from semops.wallet.service import Wallet
from semops.wallet.store import WalletStore

CALL_TIMEOUT_S: Final = 15


@dataclass
class Customer:
    name: str
    processor_id: str
    account_id: str
    phone: str
    pin: str
    wallet_dir: Path

    def wallet(self) -> Wallet:
        """A wallet object over this customer's folder (close it with `await close()`)."""
        return Wallet(WalletStore.open(self.wallet_dir), HttpTransport, SystemClock())


@dataclass
class Merchant:
    merchant_id: str
    display_name: str
    processor_id: str
    account_id: str
    api_key: str


def create_customer(
    network: Network, processor_id: str, name: str, phone: str, deposit_minor: int, pin: str
) -> tuple[Customer, str]:
    """A customer with an account and a deposit; returns it and its activation code."""
    created = network.admin(
        processor_id,
        "POST",
        "/v1/admin/customers",
        {"name": name, "phone": phone, "currency": "EUR", "deposit_minor": deposit_minor},
    )
    wallet_dir = network.data_dir / "wallets" / name.lower().replace(" ", "-")
    customer = Customer(name, processor_id, created["account_id"], phone, pin, wallet_dir)
    return customer, str(created["activation_code"])


async def enrol(network: Network, customer: Customer, activation_code: str) -> None:
    wallet = customer.wallet()
    try:
        await wallet.enroll(
            network.layout.wallet_url(customer.processor_id),
            activation_code,
            f"{customer.name}'s phone",
            customer.pin,
        )
    finally:
        await wallet.close()
        wallet.store.close()


def create_merchant(
    network: Network,
    processor_id: str,
    merchant_id: str,
    display_name: str,
    webhook_url: str | None = None,
) -> Merchant:
    body: dict[str, Any] = {
        "merchant_id": merchant_id,
        "display_name": display_name,
        "currency": "EUR",
    }
    if webhook_url is not None:
        body["webhook_url"] = webhook_url
    created = network.admin(processor_id, "POST", "/v1/admin/merchants", body)
    return Merchant(
        merchant_id, display_name, processor_id, created["account_id"], created["api_key"]
    )


def merchant_call(
    network: Network, merchant: Merchant, method: str, path: str, body: Any = None
) -> Any:
    url = network.layout.processor_url(merchant.processor_id) + path
    headers = {"Authorization": f"Bearer {merchant.api_key}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with open_url(request, CALL_TIMEOUT_S) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raise ServiceError(error.code, json.loads(error.read() or b"{}")) from None


def request_payment(
    network: Network,
    merchant: Merchant,
    amount_minor: int,
    reference: str | None = None,
    *,
    ttl_s: int | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount_minor": amount_minor,
        "currency": "EUR",
        "idempotency_key": secrets.token_urlsafe(16),
    }
    if reference is not None:
        body["reference"] = reference
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    result = merchant_call(network, merchant, "POST", "/v1/merchant/requests", body)
    assert isinstance(result, dict)
    return result


def balance(network: Network, processor_id: str, account_id: str) -> int:
    account = network.admin(processor_id, "GET", f"/v1/admin/accounts/{account_id}")
    return int(account["balance_minor"])
