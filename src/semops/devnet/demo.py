"""The demo population of a local network, and the story `semops demo` tells.

Population (made once per data directory, recorded in DATA/demo.json): Alice banks at
bank-a, Bob is a customer of the MNO mno-b, both with enrolled wallets (PIN 1234 — a demo
PIN, printed on purpose); the Corner Café takes payments at mno-b through its own merchant
backend (a separate process with a checkout page), the Book Shop at bank-a.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from semops.core.money import format_amount
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
from semops.devnet.processes import ServiceProcess
from semops.service.files import ensure_token, write_private, write_secret

DEMO_PIN: Final = "1234"
CUSTOMERS: Final = (
    ("alice", "bank-a", "Alice Andersen", "+4915100000001", 50_000),
    ("bob", "mno-b", "Bob Banda", "+254700000002", 20_000),
)
CAFE: Final = ("corner-cafe", "mno-b", "Corner Café")
BOOKS: Final = ("book-shop", "bank-a", "Book Shop")


@dataclass
class Population:
    customers: dict[str, Customer]
    merchants: dict[str, Merchant]

    def save(self, data_dir: Path) -> None:
        document = {
            "customers": {
                key: {**asdict(c), "wallet_dir": str(c.wallet_dir)}
                for key, c in self.customers.items()
            },
            "merchants": {
                key: {k: v for k, v in asdict(m).items() if k != "api_key"}
                for key, m in self.merchants.items()
            },
        }
        # It names the demo customers and their PIN: for the owner of the data dir only.
        write_private(data_dir / "demo.json", (json.dumps(document, indent=2) + "\n").encode())


def _merchant_dir(network: Network, merchant_id: str) -> Path:
    return network.data_dir / "merchants" / merchant_id


def merchant_token_file(network: Network, merchant_id: str) -> Path:
    """The merchant backend's API token (0600): its order API and shop sign-in."""
    return _merchant_dir(network, merchant_id) / "api-token"


def merchant_key_file(network: Network, merchant_id: str) -> Path:
    """The merchant's API key at its processor (0600), which its backend reads."""
    return _merchant_dir(network, merchant_id) / "processor-api-key"


def merchant_trust_args(network: Network, processor_id: str) -> list[str]:
    """`merchant serve` options that chain its processor's notice key to the scheme root."""
    root = network.data_dir / "pki" / "root-ca.crt"
    return ["--root-ca", str(root), "--processor-id", processor_id]


def merchant_backend(
    network: Network, merchant_id: str, processor_id: str, db_url: str | None = None
) -> ServiceProcess:
    folder = _merchant_dir(network, merchant_id)
    port = network.layout.ports["merchant"]
    token_file = merchant_token_file(network, merchant_id)
    ensure_token(token_file)
    return ServiceProcess(
        name=f"merchant-{merchant_id}",
        args=[
            "merchant",
            "serve",
            "--merchant-id",
            merchant_id,
            "--data-dir",
            str(folder),
            "--processor",
            network.layout.processor_url(processor_id),
            "--port",
            str(port),
            "--api-token-file",
            str(token_file),
            *merchant_trust_args(network, processor_id),
            *(["--db", db_url] if db_url else []),
        ],
        output=folder / "logs" / "stdout.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )


def populate(network: Network) -> Population:
    """Create the demo customers and merchants (once; later runs find demo.json)."""
    customers: dict[str, Customer] = {}
    for key, processor_id, name, phone, deposit in CUSTOMERS:
        customer, code = create_customer(network, processor_id, name, phone, deposit, DEMO_PIN)
        asyncio.run(enrol(network, customer, code))
        customers[key] = customer
    cafe_id, cafe_processor, cafe_name = CAFE
    webhook = f"http://127.0.0.1:{network.layout.ports['merchant']}/v1/notices"
    cafe = create_merchant(network, cafe_processor, cafe_id, cafe_name, webhook_url=webhook)
    write_secret(merchant_key_file(network, cafe_id), cafe.api_key.encode())
    books = create_merchant(network, BOOKS[1], BOOKS[0], BOOKS[2])
    write_secret(merchant_key_file(network, BOOKS[0]), books.api_key.encode())
    population = Population(customers, {"cafe": cafe, "books": books})
    population.save(network.data_dir)
    return population


def load_population(network: Network) -> Population | None:
    path = network.data_dir / "demo.json"
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    customers = {
        key: Customer(**{**value, "wallet_dir": Path(value["wallet_dir"])})
        for key, value in document["customers"].items()
    }
    merchants = {}
    for key, value in document["merchants"].items():
        api_key = merchant_key_file(network, value["merchant_id"]).read_text()
        merchants[key] = Merchant(**value, api_key=api_key.strip())
    return Population(customers, merchants)


def eur(amount_minor: int) -> str:
    return f"{format_amount(amount_minor, 'EUR')} EUR"


@dataclass
class StoryStep:
    title: str
    seen: dict[str, list[str]]
    ok: bool


async def _pay(customer: Customer, token: str) -> Any:
    wallet = customer.wallet()
    try:
        return await wallet.pay(await wallet.verify(token), customer.pin)
    finally:
        await wallet.close()
        wallet.store.close()


def _wait_paid(network: Network, merchant: Merchant, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = merchant_call(network, merchant, "GET", f"/v1/merchant/requests/{request_id}")
        if status.get("state") == "paid" and status.get("notice"):
            break
        time.sleep(0.2)
    return status


def pay_story(
    network: Network, title: str, customer: Customer, merchant: Merchant, amount_minor: int
) -> StoryStep:
    """One payment told from every side: what each actor saw."""
    payer_before = balance(network, customer.processor_id, customer.account_id)
    shop_before = balance(network, merchant.processor_id, merchant.account_id)
    created = request_payment(
        network, merchant, amount_minor, reference=f"DEMO-{customer.name[:1]}"
    )
    outcome = asyncio.run(_pay(customer, created["token"]))
    status = _wait_paid(network, merchant, created["request_id"])
    payer_after = balance(network, customer.processor_id, customer.account_id)
    shop_after = balance(network, merchant.processor_id, merchant.account_id)
    receipt = outcome.receipt
    ok = (
        receipt is not None
        and status.get("state") == "paid"
        and payer_after == payer_before - amount_minor
        and shop_after == shop_before + amount_minor
    )
    seen = {
        "merchant": [
            f"request {created['request_id']} for {eur(amount_minor)}: {status.get('state')}",
            f"signed notice from {merchant.processor_id}: transfer {status.get('transfer_id')}"
            " (no payer name, account, phone or processor in it)",
        ],
        "wallet": [
            f"verified request from {merchant.display_name}, approved with PIN",
            f"receipt: {outcome.state.value}"
            + (f", fulfilment {receipt.fulfilment[:12]}… proves payment" if receipt else ""),
        ],
        f"payer processor ({customer.processor_id})": [
            f"{customer.name}: {eur(payer_before)} -> {eur(payer_after)}",
        ],
        f"payee processor ({merchant.processor_id})": [
            f"{merchant.display_name}: {eur(shop_before)} -> {eur(shop_after)}",
        ],
    }
    return StoryStep(title, seen, ok)
