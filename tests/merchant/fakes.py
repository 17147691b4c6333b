"""A test processor for the merchant backend: the merchant API of docs/network-api.md in
memory (or over HTTP), signing real PaymentRequests and PaymentNotices with its key."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.crypto import (
    KeyUse,
    PrivateKey,
    condition_for,
    derive_key,
    derive_private_key,
    make_fulfilment,
)
from semops.crypto.pki import (
    certificate_key_record,
    certificate_pem,
    issue_party_certificate,
    make_root_ca,
)
from semops.merchant.processor_api import ProcessorAnswer
from semops.merchant.trust import ProcessorTrust
from semops.protocol import (
    Directory,
    DirectoryEntry,
    DirectoryKey,
    PaymentNotice,
    PaymentRequest,
    sign,
)

PROCESSOR = "mno-b"
MERCHANT = "corner-shop"
API_KEY = "test-merchant-api-key-0123456789"


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops merchant test key {label}".encode()).digest()


def entropy(label: str, size: int) -> bytes:
    return hashlib.sha512(f"semops merchant test entropy {label}".encode()).digest()[:size]


class Entropy:
    def __init__(self, label: str = "merchant") -> None:
        self.label = label
        self.calls = 0

    def __call__(self, size: int) -> bytes:
        self.calls += 1
        return entropy(f"{self.label}/{self.calls}", size)


SIGN_KEY = derive_key(PROCESSOR, KeyUse.SIGN, seed("processor"))
ROGUE_KEY = derive_key("bank-z", KeyUse.SIGN, seed("rogue"))
ROOT_KEY = derive_private_key(seed("scheme root"))
ROUTER_KEY = derive_key("router", KeyUse.SIGN, seed("router"))


class SchemePki:
    """A scheme root, the processor's signing certificate and the router's, and the
    router-signed directory listing the processor's key, made at the clock's time."""

    def __init__(self, now: int, sign_key: PrivateKey = SIGN_KEY, root_key: Any = ROOT_KEY) -> None:
        at = datetime.fromtimestamp(now, UTC)
        self.now = now
        self.root = make_root_ca(root_key, "SEMOPS test root", at, 1)
        self.certificate = issue_party_certificate(
            root_key, self.root, sign_key.key.public_key(), sign_key.owner, "processor", at, 2
        )
        self.router_certificate = issue_party_certificate(
            root_key, self.root, ROUTER_KEY.key.public_key(), "router", "router", at, 3
        )

    def directory(
        self,
        *,
        key_status: str = "active",
        revoked_serials: tuple[str, ...] | None = None,
        listed: Any = None,
    ) -> str:
        """The router's signed directory: the processor with its signing key (`listed`, or
        the certified one) in `key_status`."""
        record = listed or certificate_key_record(PROCESSOR, self.certificate, KeyUse.SIGN)
        key = DirectoryKey.from_record(record).model_copy(update={"status": key_status})
        router_record = certificate_key_record("router", self.router_certificate, KeyUse.SIGN)
        entries = (
            DirectoryEntry(
                participant_id="router",
                kind="router",
                display_name="Router",
                endpoint="https://router.test",
                keys=(DirectoryKey.from_record(router_record),),
            ),
            DirectoryEntry(
                participant_id=PROCESSOR,
                kind="mno",
                display_name="MNO B",
                endpoint="https://mno-b.test",
                keys=(key,),
            ),
        )
        directory = Directory(
            serial=1,
            router_id="router",
            issued_at=self.now,
            expires_at=self.now + 86_400,
            entries=entries,
            revoked_serials=revoked_serials,
        )
        return sign(directory, ROUTER_KEY)

    def keys_document(self, **directory: Any) -> dict[str, Any]:
        record = certificate_key_record(PROCESSOR, self.certificate, KeyUse.SIGN)
        return {
            "processor_id": PROCESSOR,
            "signing_key": DirectoryKey.from_record(record).model_dump(mode="json"),
            "signing_certificate": certificate_pem(self.certificate).decode("ascii"),
            "directory": self.directory(**directory),
            "router_certificate": certificate_pem(self.router_certificate).decode("ascii"),
        }


def _answer(document: Any, status: int = 200) -> ProcessorAnswer:
    return ProcessorAnswer(status, "application/json", json.dumps(document).encode())


def _problem(error: SemopsError) -> ProcessorAnswer:
    return ProcessorAnswer(
        error.spec.http_status,
        "application/problem+json",
        json.dumps(error.to_problem()).encode(),
    )


class FakeMerchantProcessor:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.requests: dict[str, dict[str, Any]] = {}  # idempotency key -> answer
        self.by_id: dict[str, dict[str, Any]] = {}  # request id -> state document
        self.bodies: list[tuple[str, str, Any]] = []
        self.unavailable = False
        self.lose_replies = 0
        self.refuse: SemopsError | None = None
        self.refund_state = "completed"
        self.refunds: dict[str, dict[str, Any]] = {}
        self.key_fetches = 0
        self.keys_delay_s = 0.0  # how long the key document takes to arrive
        self.pki = SchemePki(clock.now())
        self.keys_document: Any = self.pki.keys_document()
        self.before_create: Any = None
        self.counter = 0

    @property
    def trust(self) -> ProcessorTrust:
        """What the merchant backend is set up with: the scheme root and this processor."""
        return ProcessorTrust(PROCESSOR, self.pki.root)

    @staticmethod
    def key_record(key: PrivateKey) -> dict[str, Any]:
        record = key.public_record(0, 2**34)
        return DirectoryKey.from_record(record).model_dump(mode="json")

    # --- the transport interface ---------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ProcessorAnswer:
        assert timeout_s > 0
        self.bodies.append((method, path, json_body))
        if self.unavailable:
            raise SemopsError(E.UNAVAILABLE, f"{method} {path} failed")
        if (headers or {}).get("Authorization") != f"Bearer {API_KEY}":
            return _problem(SemopsError(E.UNAUTHENTICATED))
        answer = await self.handle(method, path, json_body)
        if self.lose_replies > 0 and method == "POST":
            self.lose_replies -= 1
            raise SemopsError(E.TIMEOUT, f"{method} {path} timed out")
        return answer

    async def close(self) -> None:
        pass

    async def handle(self, method: str, path: str, body: Any) -> ProcessorAnswer:
        try:
            if (method, path) == ("GET", "/v1/merchant/keys"):
                self.key_fetches += 1
                if self.keys_delay_s:
                    await asyncio.sleep(self.keys_delay_s)
                return _answer(self.keys_document)
            if (method, path) == ("POST", "/v1/merchant/requests"):
                if self.before_create is not None:
                    await self.before_create(body)
                return self._create(body)
            if path.startswith("/v1/merchant/requests/"):
                rest = path.removeprefix("/v1/merchant/requests/")
                if method == "GET":
                    return _answer(self._state(rest))
                if method == "POST" and rest.endswith("/refunds"):
                    return self._refund(rest.removesuffix("/refunds"), body)
            raise SemopsError(E.NOT_FOUND)
        except SemopsError as error:
            return _problem(error)

    # --- behaviour -------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> ProcessorAnswer:
        if self.refuse is not None:
            raise self.refuse
        key = body["idempotency_key"]
        if key in self.requests:
            return _answer(self.requests[key], 201)
        self.counter += 1
        now = self.clock.now()
        fulfilment = make_fulfilment(entropy(f"fulfilment/{key}", 32))
        request = PaymentRequest(
            request_id=make_id(IdKind.REQUEST, entropy(f"request/{key}", 16)),
            payee_processor=PROCESSOR,
            payee_id=MERCHANT,
            payee_name="Corner Shop",
            amount_minor=body["amount_minor"],
            currency=body["currency"],
            reference=body.get("reference"),
            created_at=now,
            expires_at=now + body.get("ttl_s", 600),
            condition=condition_for(fulfilment),
            basket_digest=body.get("basket_digest"),
        )
        token = sign(request, SIGN_KEY)
        answer = {
            "request_id": request.request_id,
            "token": token,
            "link": f"semops:pay?r={token}",
            "expires_at": request.expires_at,
            "state": "open",
        }
        self.requests[key] = answer
        self.by_id[request.request_id] = {
            "request_id": request.request_id,
            "state": "open",
            "amount_minor": request.amount_minor,
            "currency": request.currency,
            "reference": request.reference,
            "expires_at": request.expires_at,
            "notice": None,
            "refunded_minor": 0,
            "_request": request,
        }
        return _answer(answer, 201)

    def _state(self, request_id: str) -> dict[str, Any]:
        state = self.by_id.get(request_id)
        if state is None:
            raise SemopsError(E.NOT_FOUND)
        return {key: value for key, value in state.items() if not key.startswith("_")}

    def _refund(self, request_id: str, body: dict[str, Any]) -> ProcessorAnswer:
        if request_id not in self.by_id:
            raise SemopsError(E.NOT_FOUND)
        refund_id = body["refund_id"]
        if refund_id not in self.refunds:
            self.refunds[refund_id] = dict(body, state=self.refund_state)
        stored = self.refunds[refund_id]
        if stored["state"] not in ("completed", "failed"):
            stored["state"] = self.refund_state
        if stored["state"] == "failed":
            raise SemopsError(E.REFUND_NOT_ALLOWED)
        return _answer({"refund_id": refund_id, "state": stored["state"]})

    def request_of(self, request_id: str) -> PaymentRequest:
        request = self.by_id[request_id]["_request"]
        assert isinstance(request, PaymentRequest)
        return request

    def notice(
        self, request_id: str, *, key: PrivateKey = SIGN_KEY, transfer: str = "t1", **changes: Any
    ) -> str:
        request = self.request_of(request_id)
        values: dict[str, Any] = {
            "request_id": request.request_id,
            "transfer_id": make_id(IdKind.TRANSFER, entropy(f"transfer/{transfer}", 16)),
            "payee_processor": PROCESSOR,
            "payee_id": request.payee_id,
            "amount_minor": request.amount_minor,
            "currency": request.currency,
            "reference": request.reference,
            "paid_at": self.clock.now(),
            "guarantee": "irrevocable",
        }
        values.update(changes)
        if values.get("reference") is None:
            values.pop("reference")
        return sign(PaymentNotice.model_validate(values), key)

    def mark_paid(self, request_id: str) -> str:
        token = self.notice(request_id)
        self.by_id[request_id].update(state="paid", notice=token, paid_at=self.clock.now())
        return token
