"""A small scheme for wallet tests: a root CA, a router, two processors, a signed directory,
and an in-memory payer processor that speaks the wallet's part of docs/network-api.md.

Everything is real crypto: the directory is signed by the router's certified key, requests
by the payee processor, receipts by the payer processor; the fake processor verifies the
device signature, opens the PIN block with its own key and checks it is bound to the order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.crypto import (
    KeyRing,
    KeyStatus,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    condition_for,
    derive_key,
    derive_private_key,
    make_fulfilment,
    open_pin_block,
    read_unverified_claims,
)
from semops.crypto.keys import make_kid
from semops.crypto.pki import (
    certificate_pem,
    issue_party_certificate,
    make_root_ca,
)
from semops.protocol import (
    DeviceAuth,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    Enrolment,
    PaymentOrder,
    PaymentRequest,
    Receipt,
    check_order_matches_request,
    open_signed,
    parse_claims,
    sign,
)
from semops.wallet.client import Answer

PAYER = "bank-a"
PAYEE = "mno-b"
ROUTER = "router"
ACTIVATION_CODE = "K7QX-2M9D-WP4T"
ACCOUNT_ID = "alice-001"
KEY_LIFETIME_S = 365 * 86400


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops wallet test key {label}".encode()).digest()


def entropy(label: str, size: int) -> bytes:
    return hashlib.sha512(f"semops wallet test entropy {label}".encode()).digest()[:size]


class Entropy:
    """Deterministic 'randomness' for the wallet: a new value on every call."""

    def __init__(self, label: str = "wallet") -> None:
        self.label = label
        self.calls = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        return entropy(f"{self.label}/{self.calls}", size)


def problem(spec: Any, detail: str | None = None, **extra: Any) -> Answer:
    body = SemopsError(spec, detail, **extra).to_problem()
    return Answer(spec.http_status, "application/problem+json", json.dumps(body).encode())


def json_answer(document: Any, status: int = 200) -> Answer:
    return Answer(status, "application/json", json.dumps(document).encode())


@dataclass
class Scheme:
    """Root, router and two processors, with keys valid around `now`."""

    now: int
    root_key: Any = None
    root_pem: str = ""
    router_key: PrivateKey | None = None
    router_pem: str = ""
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    directory_token: str = ""
    directory: Directory | None = None

    @classmethod
    def build(cls, now: int, *, label: str = "scheme") -> Scheme:
        scheme = cls(now)
        issued = datetime.fromtimestamp(now - 86400, UTC)
        scheme.root_key = derive_private_key(seed(f"{label}/root"))
        root = make_root_ca(scheme.root_key, "SEMOPS Wallet Test Root", issued, 1)
        scheme.root_pem = certificate_pem(root).decode()
        scheme.router_key = derive_key(ROUTER, KeyUse.SIGN, seed(f"{label}/router"))
        router_cert = issue_party_certificate(
            scheme.root_key, root, scheme.router_key.key.public_key(), ROUTER, "router", issued, 2
        )
        scheme.router_pem = certificate_pem(router_cert).decode()
        for owner in (PAYER, PAYEE):
            for use in (KeyUse.SIGN, KeyUse.ENCRYPT):
                scheme.keys[f"{owner}/{use.value}"] = derive_key(
                    owner, use, seed(f"{label}/{owner}/{use.value}")
                )
        scheme.sign_directory(now)
        return scheme

    def key(self, owner: str, use: KeyUse) -> PrivateKey:
        return self.keys[f"{owner}/{use.value}"]

    def _dkey(self, key: PrivateKey) -> DirectoryKey:
        return DirectoryKey.from_record(
            key.public_record(self.now - 86400, self.now + KEY_LIFETIME_S)
        )

    def sign_directory(self, issued_at: int, *, payee_status: str = "active") -> None:
        assert self.router_key is not None
        entries = [
            DirectoryEntry(
                participant_id=ROUTER,
                kind="router",
                display_name="SEMOPS Router",
                endpoint="https://router.example:8400",
                keys=(self._dkey(self.router_key),),
            ),
            DirectoryEntry(
                participant_id=PAYER,
                kind="bank",
                display_name="Bank A",
                endpoint="https://bank-a.example:8443",
                keys=(
                    self._dkey(self.key(PAYER, KeyUse.SIGN)),
                    self._dkey(self.key(PAYER, KeyUse.ENCRYPT)),
                ),
            ),
            DirectoryEntry(
                participant_id=PAYEE,
                kind="mno",
                display_name="MNO B",
                endpoint="https://mno-b.example:8443",
                status=payee_status,  # type: ignore[arg-type]
                keys=(
                    self._dkey(self.key(PAYEE, KeyUse.SIGN)),
                    self._dkey(self.key(PAYEE, KeyUse.ENCRYPT)),
                ),
            ),
        ]
        self.directory = Directory(
            serial=issued_at,
            router_id=ROUTER,
            issued_at=issued_at,
            expires_at=issued_at + 86400,
            entries=tuple(entries),
        )
        self.directory_token = sign(self.directory, self.router_key)

    @property
    def ring(self) -> KeyRing:
        assert self.directory is not None
        return KeyRing(self.directory.key_records())

    def config_document(self) -> dict[str, Any]:
        enc = self.key(PAYER, KeyUse.ENCRYPT)
        return {
            "processor_id": PAYER,
            "display_name": "Bank A",
            "encryption_key": self._dkey(enc).model_dump(mode="json"),
            "directory": self.directory_token,
            "router_certificate": self.router_pem,
            "root_certificate": self.root_pem,
        }

    def request(
        self,
        *,
        label: str = "r1",
        amount_minor: int = 1250,
        currency: str = "EUR",
        reference: str | None = "INV-1",
        created_at: int | None = None,
        ttl_s: int = 600,
        signer: str = PAYEE,
    ) -> tuple[str, str]:
        """(request token, fulfilment) of a request signed by the payee processor."""
        fulfilment = make_fulfilment(entropy(f"fulfilment/{label}", 32))
        created = self.now if created_at is None else created_at
        request = PaymentRequest(
            request_id=make_id(IdKind.REQUEST, entropy(f"request/{label}", 16)),
            payee_processor=PAYEE,
            payee_id="corner-shop",
            payee_name="Corner Shop",
            amount_minor=amount_minor,
            currency=currency,
            reference=reference,
            created_at=created,
            expires_at=created + ttl_s,
            condition=condition_for(fulfilment),
        )
        key = self.key(signer, KeyUse.SIGN)
        if signer != PAYEE:
            # Sign as if the payee processor, with another party's key: forged.
            key = PrivateKey(kid=key.kid, owner=PAYEE, use=key.use, key=key.key)
        return sign(request, key), fulfilment


@dataclass
class Executed:
    order_id: str
    digest: str
    status: int
    content_type: str
    body: bytes


class FakeProcessor:
    """The payer processor's wallet endpoints, in memory, with knobs for failures."""

    def __init__(self, scheme: Scheme, clock: Any, *, pin: str = "4821") -> None:
        self.scheme = scheme
        self.clock = clock
        self.devices: dict[str, Any] = {}
        self.pin: str | None = None
        self.expected_pin = pin
        self.fulfilments: dict[str, str] = {}  # condition -> fulfilment
        self.orders: dict[str, Executed] = {}
        self.received: list[tuple[str, str, str | None]] = []  # method, path, jose
        self.payments = 0
        self.balance_minor = 10_000
        self.lose_replies = 0
        self.answer_pending = False
        self.unavailable = False
        self.failures = 0
        self.tamper_receipt: Any = None
        self.closed = 0

    def knows(self, token_and_fulfilment: tuple[str, str]) -> str:
        token, fulfilment = token_and_fulfilment
        self.fulfilments[condition_for(fulfilment)] = fulfilment
        return token

    # --- the transport interface ---------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        assert timeout_s > 0
        self.received.append((method, path, jose))
        if self.unavailable:
            raise SemopsError(E.UNAVAILABLE, f"{method} {path} failed")
        answer = self._route(method, path, jose, headers or {})
        if self.lose_replies > 0 and method == "POST":
            self.lose_replies -= 1
            raise SemopsError(E.TIMEOUT, f"{method} {path} timed out")
        return answer

    async def close(self) -> None:
        self.closed += 1

    def _route(self, method: str, path: str, jose: str | None, headers: dict[str, str]) -> Answer:
        try:
            if (method, path) == ("GET", "/v1/wallet/config"):
                return json_answer(self.scheme.config_document())
            if (method, path) == ("POST", "/v1/wallet/enrol"):
                assert jose is not None
                return self._enrol(jose)
            if (method, path) == ("POST", "/v1/wallet/orders"):
                assert jose is not None
                return self._order(jose)
            if method == "GET" and path.startswith("/v1/wallet/orders/"):
                self._authorise(headers, method, path)
                return self._status(path.rsplit("/", 1)[1])
            if (method, path) == ("GET", "/v1/wallet/balance"):
                self._authorise(headers, method, path)
                return json_answer(
                    {
                        "account_id": ACCOUNT_ID,
                        "currency": "EUR",
                        "balance_minor": self.balance_minor,
                        "available_minor": self.balance_minor,
                    }
                )
            if (method, path) == ("GET", "/v1/wallet/history"):
                self._authorise(headers, method, path)
                return json_answer(
                    {
                        "entries": [
                            {
                                "kind": "payment",
                                "amount_minor": 1250,
                                "currency": "EUR",
                                "payee_name": "Corner Shop",
                                "created_at": self.scheme.now,
                                "order_id": "or_" + "O" * 22,
                            },
                            {
                                "kind": "deposit",
                                "amount_minor": 10_000,
                                "currency": "EUR",
                                "created_at": self.scheme.now - 60,
                            },
                        ]
                    }
                )
            return problem(E.NOT_FOUND)
        except SemopsError as error:
            return problem(error.spec, error.detail, **error.extra)

    def _device_ring(self) -> KeyRing:
        return KeyRing(self.devices.values())

    def _authorise(self, headers: dict[str, str], method: str, path: str) -> None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme != "SEMOPS-Device":
            raise SemopsError(E.UNAUTHENTICATED)
        auth = open_signed(token, DeviceAuth, self._device_ring(), self.clock.now()).message
        if auth.method != method or auth.path != path or auth.account_id != ACCOUNT_ID:
            raise SemopsError(E.FORBIDDEN, "the authorisation is for another call")

    def _enrol(self, token: str) -> Answer:
        claims = read_unverified_claims(token)
        enrolment = parse_claims(claims, Enrolment)
        jwk = enrolment.device_jwk.model_dump()
        kid = make_kid("device", jwk)
        device = PublicKeyRecord(
            kid=kid,
            owner="device",
            use=KeyUse.SIGN,
            jwk=jwk,
            not_before=0,
            not_after=2**34,
            status=KeyStatus.ACTIVE,
        )
        open_signed(token, Enrolment, KeyRing([device]), self.clock.now())
        if enrolment.activation_code != ACTIVATION_CODE:
            raise SemopsError(E.ACTIVATION_INVALID)
        self.pin = open_pin_block(
            enrolment.pin_block,
            self.scheme.key(PAYER, KeyUse.ENCRYPT),
            enrolment.enrolment_digest(),
        )
        self.devices[kid] = device
        return json_answer(
            {
                "account_id": ACCOUNT_ID,
                "device_kid": kid,
                "customer_name": "Alice",
                "currency": "EUR",
            }
        )

    def _order(self, token: str) -> Answer:
        now = self.clock.now()
        order = open_signed(token, PaymentOrder, self._device_ring(), now).message
        digest = order.digest()
        stored = self.orders.get(order.order_id)
        if stored is not None:
            if stored.digest != digest:
                raise SemopsError(E.IDEMPOTENCY_CONFLICT)
            return Answer(stored.status, stored.content_type, stored.body)
        if self.answer_pending:
            return json_answer({"order_id": order.order_id, "state": "pending"}, 202)
        answer = self._execute(order, now)
        self.orders[order.order_id] = Executed(
            order.order_id, digest, answer.status, answer.content_type, answer.body
        )
        return answer

    def _execute(self, order: PaymentOrder, now: int) -> Answer:
        try:
            pin = open_pin_block(
                order.pin_block, self.scheme.key(PAYER, KeyUse.ENCRYPT), order.order_digest()
            )
            request = open_signed(order.request, PaymentRequest, self.scheme.ring, now).message
            check_order_matches_request(order, request, processor_id=PAYER, now=now)
            if pin != (self.pin or self.expected_pin):
                self.failures += 1
                raise SemopsError(E.PIN_INVALID, attempts_remaining=3 - self.failures)
            if order.amount_minor > self.balance_minor:
                raise SemopsError(E.INSUFFICIENT_FUNDS)
        except SemopsError as error:
            return problem(error.spec, error.detail, **error.extra)
        self.balance_minor -= order.amount_minor
        self.payments += 1
        receipt = Receipt(
            order_id=order.order_id,
            request_id=request.request_id,
            transfer_id=make_id(IdKind.TRANSFER, entropy(f"transfer/{order.order_id}", 16)),
            payer_processor=PAYER,
            payee_processor=request.payee_processor,
            payee_id=request.payee_id,
            payee_name=request.payee_name,
            amount_minor=request.amount_minor,
            currency=request.currency,
            reference=request.reference,
            condition=request.condition,
            fulfilment=self.fulfilments[request.condition],
            committed_at=now,
        )
        if self.tamper_receipt is not None:
            receipt = self.tamper_receipt(receipt)
        token = sign(receipt, self.scheme.key(PAYER, KeyUse.SIGN))
        return Answer(200, "application/jose", token.encode())

    def _status(self, order_id: str) -> Answer:
        stored = self.orders.get(order_id)
        if stored is None:
            return problem(E.NOT_FOUND)
        if stored.status == 200:
            return json_answer(
                {
                    "order_id": order_id,
                    "state": "completed",
                    "receipt": stored.body.decode(),
                    "error": None,
                }
            )
        return json_answer(
            {
                "order_id": order_id,
                "state": "failed",
                "receipt": None,
                "error": json.loads(stored.body),
            }
        )
