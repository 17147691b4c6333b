"""A network driven through every privacy scenario of issue 4, as real processes.

The router, bank-a and mno-b run as `Network` starts them; two merchant backends run as
their own processes (the Corner Café at mno-b, the Book Shop at bank-a), each with its
database and logs under DATA/merchants/<id>; every customer pays with the real wallet code
over HTTP, from a wallet folder under DATA/wallets. The people carry distinctive data
(names, phones, PINs nobody else has), so that a match anywhere means exactly them.

Scenarios, in order: a request that will expire (made first, paid last), bank -> MNO
merchant payment with basket lines, a partial refund of it, MNO -> bank, on-us, P2P (an
MNO customer's wallet asks to be paid; a bank customer pays, then a customer of the same
MNO pays a second request on-us), a wrong PIN then the right
one, a lockout (three wrong PINs, then the right one is still refused), a decline for
funds, six payments by two customers to one merchant (for unlinkability), and refused
credentials (an unknown API key, a wrong operator token). Then every process is stopped
and the data directory is what the tests read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from semops.devnet.actors import (
    Customer,
    Merchant,
    balance,
    create_customer,
    create_merchant,
    enrol,
)
from semops.devnet.demo import merchant_backend, merchant_token_file, merchant_trust_args
from semops.devnet.network import Network, new_layout
from semops.devnet.processes import ServiceProcess, free_port
from semops.privacy import NOBODY, Category, Datum, customer
from semops.protocol import OrderState
from semops.service.clock import SystemClock
from semops.service.files import ensure_token, write_secret
from semops.wallet.client import Answer, HttpTransport, Transport
from semops.wallet.service import PaymentOutcome, VerifiedRequest, Wallet
from semops.wallet.store import WalletStore

CALL_TIMEOUT_S: Final = 15
PAID_WAIT_S: Final = 20
EXPIRY_TTL_S: Final = 30  # REQUEST_TTL_MIN_S: the shortest request a processor makes

# key: (processor, name, phone, PIN, deposit in minor units)
PEOPLE: Final = {
    "zelda": ("bank-a", "Zelda Quixotic-Payer", "+4915199990001", "7319", 100_000),
    "yusuf": ("bank-a", "Yusuf Marblewood-Payer", "+4915199990002", "2864", 100_000),
    "olu": ("mno-b", "Olu Brightwater-Payer", "+254711990004", "5082", 20_000),
    "mia": ("mno-b", "Mia Okonkwo-Receiver", "+254711990003", "6150", 5_000),
    "kofi": ("mno-b", "Kofi Lockwood-Payer", "+254711990005", "9427", 5_000),
}
# Mistyped PINs are secrets too (they sit next to the real one); no amount equals any.
WRONG_PINS: Final = ("8642", "9753", "5317", "2468")
REFUSED_API_KEY: Final = "sk_" + "Refused" * 7
REFUSED_OPERATOR_TOKEN: Final = "operator-token-that-is-wrong-" + "7" * 20
CAFE_BASKET: Final = [
    {"name": "Quokka Espresso Doppio", "quantity": 2, "unit_amount_minor": 350},
    {"name": "Marzipan Zeppelin Slice", "quantity": 1, "unit_amount_minor": 540},
]
BOOKS_BASKET: Final = [
    {"name": "Obsidian Atlas of Tides", "quantity": 1, "unit_amount_minor": 2490}
]
LINKED_PAYERS: Final = ("zelda", "yusuf", "zelda", "yusuf", "zelda", "yusuf")


@dataclass(frozen=True)
class Recorded:
    """A raw HTTP answer, as the client received it."""

    status: int
    content_type: str
    body: bytes


@dataclass(frozen=True)
class LinkedPayment:
    payer: str
    order_id: str  # the merchant backend's order
    request_id: str
    transfer_id: str


@dataclass
class Story:
    data_dir: Path
    customers: dict[str, Customer]
    merchants: dict[str, Merchant]
    activation_codes: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Recorded] = field(default_factory=dict)
    linked: list[LinkedPayment] = field(default_factory=list)

    def extra_data(self) -> list[Datum]:
        """What no actor keeps, so the check cannot harvest it: PINs, mistyped PINs,
        activation codes and the credentials that were refused."""
        data: list[Datum] = []
        for key, person in self.customers.items():
            owner = customer(person.processor_id, person.account_id)
            data.append(Datum(Category.PIN, person.pin, owner, f"PIN of {key}"))
            code = self.activation_codes[key]
            data.append(Datum(Category.ACTIVATION_CODE, code, owner, f"code of {key}"))
        zelda, kofi = self.customers["zelda"], self.customers["kofi"]
        for index, pin in enumerate(WRONG_PINS):
            typist = zelda if index == 0 else kofi
            owner = customer(typist.processor_id, typist.account_id)
            data.append(Datum(Category.PIN, pin, owner, "a mistyped PIN"))
        data.append(Datum(Category.API_KEY, REFUSED_API_KEY, NOBODY, "refused API key"))
        data.append(Datum(Category.SERVICE_SECRET, REFUSED_OPERATOR_TOKEN, NOBODY, "refused token"))
        return data


# --- HTTP helpers -------------------------------------------------------------------------


def raw_call(
    url: str, method: str, body: Any = None, headers: dict[str, str] | None = None
) -> Recorded:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
            return Recorded(response.status, response.headers.get_content_type(), response.read())
    except urllib.error.HTTPError as error:
        return Recorded(error.code, error.headers.get_content_type(), error.read())


# Each merchant backend's API token, by its base URL (its order API needs it).
_BACKEND_TOKENS: dict[str, str] = {}


def backend(
    base_url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    auth = {"Authorization": f"Bearer {_BACKEND_TOKENS[base_url]}"}
    answer = raw_call(base_url + path, method, body, {**auth, **(headers or {})})
    assert 200 <= answer.status < 300, (answer.status, answer.body[:300])
    return json.loads(answer.body)


def new_order(
    base_url: str, amount: str, reference: str, basket: Any = None, ttl_s: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"amount": amount, "currency": "EUR", "reference": reference}
    if basket is not None:
        body["basket"] = basket
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    order = backend(base_url, "POST", "/v1/orders", body)
    assert order["token"], order
    return order  # type: ignore[no-any-return]


def wait_paid(base_url: str, order_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + PAID_WAIT_S
    while True:
        order = backend(base_url, "GET", f"/v1/orders/{order_id}")
        if order["state"] == "paid" or time.monotonic() > deadline:
            return order  # type: ignore[no-any-return]
        time.sleep(0.1)


def wait_balance(network: Network, person: Customer, expected: int) -> int:
    deadline = time.monotonic() + PAID_WAIT_S
    while True:
        now = balance(network, person.processor_id, person.account_id)
        if now == expected or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


# --- the wallet, recording what the processor answered --------------------------------------


def _recording(answers: list[Answer]) -> Callable[[str], Transport]:
    class Recording(HttpTransport):
        async def request(self, *args: Any, **kwargs: Any) -> Answer:
            answer = await super().request(*args, **kwargs)
            answers.append(answer)
            return answer

    return Recording


def _wallet(person: Customer, answers: list[Answer] | None = None) -> Wallet:
    transport = _recording(answers) if answers is not None else HttpTransport
    return Wallet(WalletStore.open(person.wallet_dir), transport, SystemClock())


async def _verify(person: Customer, token: str) -> VerifiedRequest:
    wallet = _wallet(person)
    try:
        return await wallet.verify(token)
    finally:
        await wallet.close()
        wallet.store.close()


async def _pay(
    person: Customer, verified: VerifiedRequest, pin: str, answers: list[Answer] | None = None
) -> PaymentOutcome:
    wallet = _wallet(person, answers)
    try:
        return await wallet.pay(verified, pin)
    finally:
        await wallet.close()
        wallet.store.close()


def pay(person: Customer, token: str, pin: str | None = None) -> PaymentOutcome:
    verified = asyncio.run(_verify(person, token))
    return asyncio.run(_pay(person, verified, pin or person.pin))


def pay_recording(person: Customer, token: str, pin: str) -> tuple[PaymentOutcome, Recorded]:
    answers: list[Answer] = []
    verified = asyncio.run(_verify(person, token))
    outcome = asyncio.run(_pay(person, verified, pin, answers))
    last = answers[-1]
    return outcome, Recorded(last.status, last.content_type, last.body)


async def _request_p2p(person: Customer, amount_minor: int, reference: str) -> dict[str, Any]:
    wallet = _wallet(person)
    try:
        return await wallet.request_payment(amount_minor, "EUR", reference)
    finally:
        await wallet.close()
        wallet.store.close()


async def _history(person: Customer) -> dict[str, Any]:
    wallet = _wallet(person)
    try:
        return await wallet.history()
    finally:
        await wallet.close()
        wallet.store.close()


def outcome_of(outcome: PaymentOutcome) -> str:
    if outcome.state is OrderState.COMPLETED:
        return "completed"
    return str(outcome.order.error_code)


# --- the network --------------------------------------------------------------------------


def _backend_process(network: Network, merchant_id: str, processor_id: str) -> ServiceProcess:
    if merchant_id == "corner-cafe":
        return merchant_backend(network, merchant_id, processor_id)  # the layout's port
    folder = network.data_dir / "merchants" / merchant_id
    port = free_port()
    ensure_token(merchant_token_file(network, merchant_id))
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
            str(merchant_token_file(network, merchant_id)),
            *merchant_trust_args(network, processor_id),
        ],
        output=folder / "logs" / "stdout.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )


def _base_url(process: ServiceProcess) -> str:
    return process.health_url.removesuffix("/healthz")


def _merchant(
    network: Network, merchant_id: str, processor_id: str, name: str
) -> tuple[str, Merchant]:
    """The merchant at its processor, and its backend running with the API key (0600)."""
    process = _backend_process(network, merchant_id, processor_id)
    url = _base_url(process)
    shop = create_merchant(network, processor_id, merchant_id, name, url + "/v1/notices")
    key_file = network.data_dir / "merchants" / merchant_id / "processor-api-key"
    write_secret(key_file, shop.api_key.encode())
    network.processes[process.name] = process
    process.start()
    process.wait_ready()
    _BACKEND_TOKENS[url] = merchant_token_file(network, merchant_id).read_text().strip()
    return url, shop


def _people(network: Network, story: Story) -> None:
    for key, (processor_id, name, phone, pin, deposit) in PEOPLE.items():
        person, code = create_customer(network, processor_id, name, phone, deposit, pin)
        asyncio.run(enrol(network, person, code))
        story.customers[key] = person
        story.activation_codes[key] = code


def run_story(tmp: Path) -> Story:
    """Start everything, run every scenario, stop everything; the data stays in `tmp`."""
    network = Network(new_layout(tmp, fixed_ports=False, db_urls=None))
    try:
        network.start()
        story = Story(network.data_dir, {}, {})
        _people(network, story)
        cafe, story.merchants["cafe"] = _merchant(network, "corner-cafe", "mno-b", "Corner Café")
        books, story.merchants["books"] = _merchant(network, "book-shop", "bank-a", "Book Shop")
        _scenarios(network, story, cafe, books)
    finally:
        network.stop()
    return story


def _scenarios(network: Network, story: Story, cafe: str, books: str) -> None:
    people = story.customers
    zelda, olu, mia, kofi = (people[key] for key in ("zelda", "olu", "mia", "kofi"))
    results = story.outcomes

    # Made first, paid last: the request is verified now and expires before it is paid.
    expiring = new_order(cafe, "2.70", "EXP-LATE-1", ttl_s=EXPIRY_TTL_S)
    expiring_made = time.monotonic()
    expiring_verified = asyncio.run(_verify(zelda, expiring["token"]))

    # bank -> MNO, with basket lines, then a partial refund through the merchant backend.
    order = new_order(cafe, "12.40", "CAFE-TABLE-7", basket=CAFE_BASKET)
    results["bank_to_mno"] = outcome_of(pay(zelda, order["token"]))
    results["bank_to_mno_merchant_state"] = wait_paid(cafe, order["order_id"])["state"]
    before = balance(network, "bank-a", zelda.account_id)
    refund = backend(
        cafe,
        "POST",
        f"/v1/orders/{order['order_id']}/refunds",
        {"amount": "3.00", "reason": "one cold espresso"},
        headers={"Idempotency-Key": "ik_privacy-story-refund-1"},
    )
    results["refund"] = refund["refund"]["state"]
    results["refund_credited"] = wait_balance(network, zelda, before + 300) - before

    # MNO -> bank, with a basket; on-us at the bank.
    order = new_order(books, "24.90", "BOOK-INV-1", basket=BOOKS_BASKET)
    results["mno_to_bank"] = outcome_of(pay(olu, order["token"]))
    results["mno_to_bank_merchant_state"] = wait_paid(books, order["order_id"])["state"]
    order = new_order(books, "9.90", "BOOK-INV-2")
    results["on_us"] = outcome_of(pay(zelda, order["token"]))

    # P2P: Mia's wallet asks her MNO for a request; Zelda, at the bank, pays it.
    mia_before = balance(network, "mno-b", mia.account_id)
    created = asyncio.run(_request_p2p(mia, 1730, "P2P-DINNER-SPLIT"))
    story.outcomes["p2p_link"] = created["link"]
    results["p2p"] = outcome_of(pay(zelda, created["token"]))
    results["p2p_credited"] = wait_balance(network, mia, mia_before + 1730) - mia_before
    created = asyncio.run(_request_p2p(mia, 860, "P2P-TAXI-SHARE"))
    results["p2p_on_us"] = outcome_of(pay(olu, created["token"]))
    results["p2p_history"] = asyncio.run(_history(mia))

    # A wrong PIN (its raw answer kept), then the right one.
    order = new_order(cafe, "6.10", "CAFE-TABLE-9")
    outcome, answer = pay_recording(zelda, order["token"], WRONG_PINS[0])
    results["wrong_pin"], story.answers["wrong_pin"] = outcome_of(outcome), answer
    results["after_wrong_pin"] = outcome_of(pay(zelda, order["token"]))

    # Lockout: three wrong PINs lock the credential; the right PIN is then refused too.
    before = balance(network, "mno-b", kofi.account_id)
    order = new_order(cafe, "3.30", "CAFE-TABLE-3")
    attempts = [outcome_of(pay(kofi, order["token"], pin)) for pin in WRONG_PINS[1:]]
    attempts.append(outcome_of(pay(kofi, order["token"])))
    results["lockout"] = attempts
    results["lockout_moved"] = balance(network, "mno-b", kofi.account_id) - before

    # Declined for funds.
    before = balance(network, "mno-b", olu.account_id)
    order = new_order(books, "950.00", "BOOK-INV-BIG")
    results["declined"] = outcome_of(pay(olu, order["token"]))
    results["declined_moved"] = balance(network, "mno-b", olu.account_id) - before

    # Six payments by two customers of one bank to one merchant, interleaved.
    for index, payer in enumerate(LINKED_PAYERS):
        order = new_order(cafe, "4.20", f"LINK-{index}")
        assert outcome_of(pay(people[payer], order["token"])) == "completed"
        paid = wait_paid(cafe, order["order_id"])
        story.linked.append(
            LinkedPayment(payer, order["order_id"], paid["request_id"], paid["transfer_id"])
        )

    _refused_credentials(network, story)

    # The expiring request, now past its expiry.
    time.sleep(max(0.0, expiring_made + EXPIRY_TTL_S + 1.5 - time.monotonic()))
    results["expired"] = outcome_of(asyncio.run(_pay(zelda, expiring_verified, zelda.pin)))


def _refused_credentials(network: Network, story: Story) -> None:
    bank = network.layout.processor_url("bank-a")
    story.answers["bad_api_key"] = raw_call(
        bank + "/v1/merchant/requests",
        "POST",
        {"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_refusedkey0001"},
        {"Authorization": f"Bearer {REFUSED_API_KEY}"},
    )
    story.answers["bad_operator_token"] = raw_call(
        bank + "/v1/admin/position",
        "GET",
        None,
        {"Authorization": f"Bearer {REFUSED_OPERATOR_TOKEN}"},
    )


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
