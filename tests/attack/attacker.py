"""What the attacker does with captured traffic: re-send, decode, change, re-sign.

Re-sending uses the channel's real identity where the channel demands one: scheme ports
take only mutual TLS with a scheme certificate, so the attacker holds some participant's
TLS identity (an insider, or the TLS terminator of wiretap.py); the message-level signature
is what must stop it. The wallet port is plain HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Final

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json
from semops.crypto import KeyUse, PrivateKey
from semops.crypto.jose import sign_message
from semops.devnet.actors import Customer
from semops.devnet.network import Network
from semops.processor.keys import ProcessorKeys, load_keys
from semops.protocol import PaymentRequest, open_signed, parse_claims
from semops.service.tls import TlsFiles, client_context
from semops.wallet.core import SignedOrder, build_order, verify_config
from semops.wallet.service import PaymentOutcome
from semops.wallet.store import WalletStore

CALL_TIMEOUT_S: Final = 30.0
JOSE: Final = {"Content-Type": "application/jose"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str

    @property
    def code(self) -> str | None:
        """The stable error code of a problem+json answer (None for a success)."""
        if self.status < 400:
            return None
        return str(json.loads(self.body).get("code"))


# --- the channels -------------------------------------------------------------------------


def scheme_post(network: Network, as_party: str, url: str, token: str) -> Answer:
    """POST a JOSE body over mutual TLS with `as_party`'s scheme certificate."""
    files = TlsFiles.in_directory(network.data_dir / as_party, as_party)
    with httpx.Client(verify=client_context(files), timeout=CALL_TIMEOUT_S) as client:
        response = client.post(url, content=token.encode("ascii"), headers=JOSE)
    return Answer(response.status_code, response.text)


def to_router(network: Network, path: str, token: str, as_party: str = "bank-a") -> Answer:
    return scheme_post(network, as_party, network.layout.router_url() + path, token)


def to_scheme_port(network: Network, processor_id: str, path: str, token: str) -> Answer:
    """A call to a processor's scheme port, as the router would make it."""
    url = f"https://127.0.0.1:{network.layout.ports[f'{processor_id}-scheme']}{path}"
    return scheme_post(network, "router", url, token)


def post_jose(url: str, token: str) -> Answer:
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        response = client.post(url, content=token.encode("ascii"), headers=JOSE)
    return Answer(response.status_code, response.text)


def to_wallet_port(network: Network, processor_id: str, token: str) -> Answer:
    return post_jose(network.layout.processor_url(processor_id) + "/v1/wallet/orders", token)


# --- tokens -------------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a compact JWS, unverified (what a wiretap reads)."""
    claims = json.loads(b64url_decode(token.split(".")[1]))
    assert isinstance(claims, dict)
    return claims


def with_claims(token: str, claims: dict[str, Any]) -> str:
    """The same header and signature over other claims: a change in flight."""
    header, _, signature = token.split(".")
    return f"{header}.{b64url_encode(canonical_json(claims))}.{signature}"


def signed_with(claims: dict[str, Any], key: PrivateKey) -> str:
    """The claims signed with a key the attacker holds, under that key's kid."""
    return sign_message(claims, key)


def impostor_key(kid: str) -> PrivateKey:
    """A fresh random key that claims someone else's kid."""
    return PrivateKey(kid, "impostor", KeyUse.SIGN, ec.generate_private_key(ec.SECP256R1()))


def processor_keys(network: Network, processor_id: str) -> ProcessorKeys:
    """A processor's keys as an insider (or a thief of its key files) holds them."""
    return load_keys(network.data_dir / processor_id, processor_id, int(time.time()))


# --- field changes ------------------------------------------------------------------------


def _other(char: str) -> str:
    for one, two in (("a", "b"), ("A", "B"), ("0", "1")):
        if char in (one, two):
            return two if char == one else one
    if char.islower():
        return "a"
    if char.isupper():
        return "A"
    return "0"


def changed(value: Any) -> Any:
    """A different value of the same JSON type and alphabet (so only the meaning changes)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str) and value:
        return value[:-1] + _other(value[-1])
    raise AssertionError(f"no change known for {value!r}")


def field_changes(claims: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field, claims with that one field changed) for every field but the version."""
    return [
        (name, {**claims, name: changed(value)}) for name, value in claims.items() if name != "v"
    ]


# --- wallets ------------------------------------------------------------------------------


async def _pay(customer: Customer, token: str, pin: str) -> PaymentOutcome:
    wallet = customer.wallet()
    try:
        return await wallet.pay(await wallet.verify(token), pin)
    finally:
        await wallet.close()
        wallet.store.close()


def pay(customer: Customer, token: str, pin: str | None = None) -> PaymentOutcome:
    """Pay a request with the customer's real wallet (the order is stored before it goes)."""
    return asyncio.run(_pay(customer, token, pin or customer.pin))


def stored_order_token(customer: Customer, order_id: str) -> str:
    """The signed order as the wallet stored it: what a captured order looks like."""
    store = WalletStore.open(customer.wallet_dir)
    try:
        return store.require_order(order_id).token
    finally:
        store.close()


def trusted(network: Network, processor_id: str) -> Any:
    with httpx.Client(timeout=CALL_TIMEOUT_S) as client:
        document = client.get(network.layout.processor_url(processor_id) + "/v1/wallet/config")
    return verify_config(document.json(), int(time.time()))


def forge_order(
    network: Network,
    customer: Customer,
    request_token: str,
    *,
    pin: str,
    entropy: bytes,
    created_at: int | None = None,
) -> SignedOrder:
    """An order made with the customer's device key, outside the wallet's own checks
    (a compromised device, or the wallet code driven by hand)."""
    config = trusted(network, customer.processor_id)
    request = parse_claims(claims_of(request_token), PaymentRequest)
    store = WalletStore.open(customer.wallet_dir)
    try:
        device_key = store.device_key()
    finally:
        store.close()
    return build_order(
        request_token=request_token,
        request=request,
        processor_id=customer.processor_id,
        payer_account=customer.account_id,
        processor_enc_key=config.encryption_key,
        device_key=device_key,
        pin=pin,
        order_entropy=entropy,
        now=created_at if created_at is not None else int(time.time()),
    )


def device_key_of(customer: Customer) -> PrivateKey:
    store = WalletStore.open(customer.wallet_dir)
    try:
        return store.device_key()
    finally:
        store.close()


def verified(token: str, network: Network, processor_id: str, kind: type[Any]) -> Any:
    """A token checked against the directory, as its rightful receiver checks it."""
    return open_signed(token, kind, trusted(network, processor_id).ring, int(time.time())).message
