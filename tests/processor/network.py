"""An in-memory scheme for processor tests: a PKI, a test router, processors, wallets.

Processors run as their real FastAPI apps (httpx ASGITransport) on real SQLite files. The
router here is a small test double speaking the real protocol with a test router key: it
verifies prepares with the directory ring, signs RoutedPrepares and TransferStatuses,
forwards refunds, answers status queries, and can be told to misbehave (time out, refuse,
leave a transfer pending). The wallet is the test: it makes device keys, enrolments,
orders with PIN blocks and device authorisations exactly as a real wallet must.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from semops.core.clock import FixedClock
from semops.core.encoding import sha256_b64url
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import ID_RANDOM_BYTES, TRANSFER_HOP_MARGIN_S
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    check_fulfilment,
    derive_key,
    make_pin_block,
    private_key_for,
    read_unverified_claims,
)
from semops.crypto.pki import (
    certificate_pem,
    issue_encryption_certificate,
    issue_party_certificate,
    make_root_ca,
    private_key_pem,
)
from semops.devnet.postgres import create_databases, drop_databases
from semops.processor import (
    Processor,
    ProcessorSettings,
    create_operator_app,
    create_public_app,
    create_scheme_app,
)
from semops.processor.directory import verify_directory_document
from semops.processor.keys import certificate_record, load_keys
from semops.protocol import (
    DeviceAuth,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    Enrolment,
    PaymentOrder,
    PaymentRequest,
    RefundResult,
    RefundTransfer,
    RoutedPrepare,
    TransferFulfil,
    TransferPrepare,
    TransferReject,
    TransferStatus,
    open_signed,
    parse_claims,
    sign,
)
from semops.service.app import JOSE, PROBLEM_JSON
from semops.service.files import write_secret
from semops.store import processor as store
from semops.store.db import Database
from semops.store.migrate import upgrade

# Run a test on SQLite and on PostgreSQL (the `network` fixture is indirect-parametrized).
on_both = pytest.mark.parametrize("network", ["sqlite", "postgresql"], indirect=True)

ROUTER_ID = "router"
START = 1_900_000_000
PIN = "4821"
ROUTER_URL = "https://router.test:8400"


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops processor test {label}".encode()).digest()


class Pki:
    """A scheme root and participant certificates, issued at START."""

    def __init__(self) -> None:
        self.issued_at = datetime.fromtimestamp(START - 3600, UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = make_root_ca(self.root_key, "SEMOPS Test Root", self.issued_at, 1)
        self._serial = 10

    def issue(
        self, party: str, role: str, directory: Path
    ) -> tuple[ec.EllipticCurvePrivateKey, Any]:
        """Write PARTY.key/.crt/.enc.key/.enc.crt and root-ca.crt, as `semops pki issue`."""
        directory.mkdir(parents=True, exist_ok=True)
        sign_key, enc_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        self._serial += 2
        cert = issue_party_certificate(
            self.root_key,
            self.root,
            sign_key.public_key(),
            party,
            role,
            self.issued_at,
            self._serial,  # type: ignore[arg-type]
        )
        enc_cert = issue_encryption_certificate(
            self.root_key,
            self.root,
            enc_key.public_key(),
            party,
            role,
            self.issued_at,
            self._serial + 1,  # type: ignore[arg-type]
        )
        write_secret(directory / f"{party}.key", private_key_pem(sign_key))
        write_secret(directory / f"{party}.enc.key", private_key_pem(enc_key))
        (directory / f"{party}.crt").write_bytes(certificate_pem(cert))
        (directory / f"{party}.enc.crt").write_bytes(certificate_pem(enc_cert))
        (directory / "root-ca.crt").write_bytes(certificate_pem(self.root))
        return sign_key, (cert, enc_cert)


@dataclass
class Node:
    """One processor under test: the service object and its two apps as HTTP clients."""

    processor: Processor
    public: httpx.AsyncClient
    scheme: httpx.AsyncClient
    data_dir: Path

    @property
    def id(self) -> str:
        return self.processor.settings.processor_id

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.processor.context.keys.operator_token}"}

    async def admin(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.public.request(method, path, json=body, headers=self.operator)

    async def metrics(self) -> str:
        """The operator port's /metrics, with the operator token."""
        transport = httpx.ASGITransport(app=create_operator_app(self.processor))
        async with httpx.AsyncClient(transport=transport, base_url="http://op") as client:
            response = await client.get("/metrics", headers=self.operator)
            assert response.status_code == 200, response.text
            return response.text

    async def close(self) -> None:
        await self.public.aclose()
        await self.scheme.aclose()
        await self.processor.context.database.dispose()


class Webhooks:
    """The merchants' webhook endpoints: records every notice; can be made to fail."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.failing = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        if self.failing:
            raise SemopsError(E.UNAVAILABLE, "webhook down")
        assert jose is not None
        self.received.append((url, jose))
        return 204, "", b""

    async def close(self) -> None:
        return None


def _problem(error: SemopsError) -> tuple[int, str, bytes]:
    return error.spec.http_status, PROBLEM_JSON, json.dumps(error.to_problem()).encode()


@dataclass
class RouterRecord:
    transfer_id: str
    kind: str
    payer: str
    payee: str
    amount_minor: int
    currency: str
    state: str = "reserved"
    fulfilment: str | None = None
    reason_code: str | None = None
    original_transfer_id: str | None = None


@dataclass
class TestRouter:
    """The router as a test double: the real protocol, a test key, switchable faults."""

    clock: FixedClock
    key: PrivateKey
    certificate_pem: str
    nodes: dict[str, Node] = field(default_factory=dict)
    entries: dict[str, DirectoryEntry] = field(default_factory=dict)
    records: dict[str, RouterRecord] = field(default_factory=dict)
    # Faults: "timeout" (records, no answer), "lost" (no record, no answer), "pending"
    # (records, answers 202), "refuse" (problem, not recorded), "down" (transport error),
    # "lost_reply" (routes and decides, but the payer's answer is lost).
    mode: str = "normal"
    # Whether the decided status is also pushed to the processors' /v1/scheme/status.
    push_status: bool = True
    serial: int = 1
    calls: list[tuple[str, str]] = field(default_factory=list)

    # --- directory ----------------------------------------------------------------------

    def directory_token(self) -> str:
        self.serial += 1
        directory = Directory(
            serial=self.serial,
            router_id=ROUTER_ID,
            issued_at=self.clock.now(),
            expires_at=self.clock.now() + 86400,
            entries=tuple(self.entries.values()),
        )
        return sign(directory, self.key)

    def document(self) -> dict[str, str]:
        return {"directory": self.directory_token(), "router_certificate": self.certificate_pem}

    def ring(self) -> KeyRing:
        return KeyRing(
            [record for entry in self.entries.values() for record in entry.key_records()]
        )

    # --- the client interface the processors use ------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str, bytes]:
        path = url.removeprefix(ROUTER_URL)
        self.calls.append((method, path))
        if self.mode == "down":
            raise SemopsError(E.UNAVAILABLE, "router down")
        if method == "GET" and path == "/v1/directory":
            return 200, "application/json", json.dumps(self.document()).encode()
        if method == "POST" and path == "/v1/participants":
            return 200, "application/json", json.dumps(self.document()).encode()
        if method == "GET" and path.startswith("/v1/transfers/"):
            return self.status_of(path.rsplit("/", 1)[1])
        assert jose is not None
        if method == "POST" and path == "/v1/transfers":
            return await self.prepare(jose)
        if method == "POST" and path == "/v1/refunds":
            return await self.refund(jose)
        return 404, PROBLEM_JSON, b'{"code": "not_found"}'

    async def close(self) -> None:
        return None

    def status_token(self, record: RouterRecord) -> str:
        status = TransferStatus(
            transfer_id=record.transfer_id,
            kind=record.kind,  # type: ignore[arg-type]
            state=record.state,  # type: ignore[arg-type]
            amount_minor=record.amount_minor,
            currency=record.currency,
            decided_at=self.clock.now(),
            fulfilment=record.fulfilment,
            reason_code=record.reason_code,
            original_transfer_id=record.original_transfer_id,
        )
        return sign(status, self.key)

    def status_of(self, transfer_id: str) -> tuple[int, str, bytes]:
        record = self.records.get(transfer_id)
        if record is None:
            return _problem(SemopsError(E.NOT_FOUND, "the router has no such transfer"))
        code = 202 if record.state == "reserved" else 200
        return code, JOSE, self.status_token(record).encode()

    async def prepare(self, token: str) -> tuple[int, str, bytes]:
        now = self.clock.now()
        try:
            prepare = open_signed(token, TransferPrepare, self.ring(), now).message
        except SemopsError as error:
            return _problem(error)
        if self.mode == "refuse":
            return _problem(SemopsError(E.NET_DEBIT_CAP_EXCEEDED))
        if self.mode == "lost":
            raise SemopsError(E.TIMEOUT, "lost before the router")
        record = RouterRecord(
            prepare.transfer_id,
            "payment",
            prepare.payer_processor,
            prepare.payee_processor,
            prepare.amount_minor,
            prepare.currency,
        )
        self.records[record.transfer_id] = record
        if self.mode == "timeout":
            raise SemopsError(E.TIMEOUT, "no answer in time")
        if self.mode == "pending":
            return 202, JOSE, self.status_token(record).encode()
        routed = RoutedPrepare(
            transfer_id=prepare.transfer_id,
            payee_processor=prepare.payee_processor,
            amount_minor=prepare.amount_minor,
            currency=prepare.currency,
            condition=prepare.condition,
            created_at=now,
            expires_at=prepare.expires_at - TRANSFER_HOP_MARGIN_S,
            sealed=prepare.sealed,
        )
        payee = self.nodes[prepare.payee_processor]
        answer = await payee.scheme.post(
            "/v1/scheme/transfers", content=sign(routed, self.key), headers={"Content-Type": JOSE}
        )
        assert answer.status_code == 200, answer.text
        self._decide(record, answer.text, prepare.condition)
        await self.push(record, to_payer=record.state == "aborted")
        if self.mode == "lost_reply":
            raise SemopsError(E.TIMEOUT, "decided, but the answer was lost on the way back")
        return 200, JOSE, self.status_token(record).encode()

    def _decide(self, record: RouterRecord, answer: str, condition: str) -> None:
        kind = read_unverified_claims(answer)["type"]
        if kind == "TransferFulfil":
            fulfil = open_signed(
                answer, TransferFulfil, self.ring(), self.clock.now(), expected_signer=record.payee
            ).message
            check_fulfilment(fulfil.fulfilment, condition)
            record.state, record.fulfilment = "committed", fulfil.fulfilment
        else:
            reject = open_signed(
                answer, TransferReject, self.ring(), self.clock.now(), expected_signer=record.payee
            ).message
            record.state, record.reason_code = "aborted", reject.reason_code

    async def push(self, record: RouterRecord, *, to_payer: bool) -> None:
        """What the router's outbox does: the decided status to the receiving side."""
        if not self.push_status:
            return
        token = self.status_token(record)
        targets = [record.payee] + ([record.payer] if to_payer else [])
        for target in targets:
            response = await self.nodes[target].scheme.post(
                "/v1/scheme/status", content=token, headers={"Content-Type": JOSE}
            )
            assert response.status_code == 204, response.text

    async def decide_later(
        self,
        transfer_id: str,
        state: str,
        reason_code: str | None = None,
        fulfilment: str | None = None,
    ) -> None:
        """Decide a transfer left pending, and tell both sides (as the outbox would)."""
        record = self.records[transfer_id]
        record.state, record.reason_code, record.fulfilment = state, reason_code, fulfilment
        await self.push(record, to_payer=True)

    async def refund(self, token: str) -> tuple[int, str, bytes]:
        try:
            refund = open_signed(token, RefundTransfer, self.ring(), self.clock.now()).message
        except SemopsError as error:
            return _problem(error)
        original = self.records.get(refund.transfer_id)
        if original is None or original.state != "committed":
            return _problem(SemopsError(E.REFUND_NOT_ALLOWED))
        if self.mode == "refuse":
            return _problem(SemopsError(E.NET_DEBIT_CAP_EXCEEDED))
        record = RouterRecord(
            refund.refund_id,
            "refund",
            refund.payee_processor,
            original.payer,
            refund.amount_minor,
            refund.currency,
            original_transfer_id=refund.transfer_id,
        )
        self.records[record.transfer_id] = record
        if self.mode == "timeout":
            raise SemopsError(E.TIMEOUT, "no answer in time")
        answer = await self.nodes[original.payer].scheme.post(
            "/v1/scheme/refunds", content=token, headers={"Content-Type": JOSE}
        )
        assert answer.status_code == 200, answer.text
        result = open_signed(
            answer.text, RefundResult, self.ring(), self.clock.now(), expected_signer=original.payer
        ).message
        if result.outcome == "accepted":
            record.state = "committed"
        else:
            record.state, record.reason_code = "aborted", result.reason_code
        # The receiving processor hears through the outbox; the sender in the reply.
        await self.push(record, to_payer=record.state == "aborted")
        return 200, JOSE, self.status_token(record).encode()


class Network:
    """A test router and any number of processors, sharing one clock and one PKI.

    Processors keep their databases in SQLite files under `root`, or with
    `postgres_url` in fresh PostgreSQL databases (one per processor, dropped at close).
    """

    def __init__(self, root: Path, postgres_url: str | None = None) -> None:
        self.root = root
        self.postgres_url = postgres_url
        self.databases: dict[str, str] = {}
        self._prefix = f"semops_p{secrets.token_hex(5)}"
        self.clock = FixedClock(START)
        self.pki = Pki()
        router_key, (router_cert, _) = self.pki.issue(ROUTER_ID, "router", root / ROUTER_ID)
        self.router = TestRouter(
            clock=self.clock,
            key=private_key_for(ROUTER_ID, KeyUse.SIGN, router_key),
            certificate_pem=certificate_pem(router_cert).decode(),
        )
        self.router.entries[ROUTER_ID] = self._entry(ROUTER_ID, "router", router_cert, None)
        self.webhooks = Webhooks()

    def _entry(self, party: str, kind: str, cert: Any, enc_cert: Any | None) -> DirectoryEntry:
        keys = [DirectoryKey.from_record(certificate_record(party, cert, KeyUse.SIGN))]
        if enc_cert is not None:
            keys.append(
                DirectoryKey.from_record(certificate_record(party, enc_cert, KeyUse.ENCRYPT))
            )
        return DirectoryEntry(
            participant_id=party,
            kind=kind,
            display_name=party.upper(),  # type: ignore[arg-type]
            endpoint=f"https://{party}.test:8501",
            keys=tuple(keys),
        )

    def issue(self, party: str) -> Path:
        data_dir = self.root / party
        if not (data_dir / f"{party}.crt").exists():
            _, (cert, enc_cert) = self.pki.issue(party, "processor", data_dir)
            self.router.entries[party] = self._entry(party, "bank", cert, enc_cert)
        return data_dir

    async def add(self, party: str, *, register: bool = True) -> Node:
        """Start (or restart, on the same database) the processor `party`."""
        data_dir = self.issue(party)
        settings = ProcessorSettings(
            db_url=await self._database_url(party),
            processor_id=party,
            kind="bank",
            display_name=party.upper(),
            data_dir=data_dir,
            router_url=ROUTER_URL,
            currency="EUR",
        )
        database = Database(settings.database_url)
        await upgrade(database, "processor")
        keys = load_keys(data_dir, party, self.clock.now())
        processor = Processor(settings, keys, database, self.clock, self.router, self.webhooks)
        await processor.start()
        if register:
            await processor.directory.register()
        node = Node(
            processor=processor,
            public=httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_public_app(processor)),
                base_url=f"http://{party}.public",
            ),
            scheme=httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_scheme_app(processor)),
                base_url=f"https://{party}.scheme",
            ),
            data_dir=data_dir,
        )
        self.router.nodes[party] = node
        return node

    async def refresh_all(self) -> None:
        for node in self.router.nodes.values():
            node.processor.directory.install(
                verify_directory_document(
                    self.router.document(), node.processor.context.keys, self.clock.now()
                )
            )

    async def _database_url(self, party: str) -> str | None:
        if self.postgres_url is None:
            return None
        if party not in self.databases:
            name = f"{self._prefix}_{party.replace('-', '_')}"
            urls = await create_databases(self.postgres_url, [name])
            self.databases[party] = urls[name]
        return self.databases[party]

    async def close(self) -> None:
        for node in self.router.nodes.values():
            await node.close()
        if self.postgres_url is not None and self.databases:
            names = [url.rsplit("/", 1)[1] for url in self.databases.values()]
            await drop_databases(self.postgres_url, names)


# --- the wallet and the merchant, as the test plays them ------------------------------------


@dataclass
class Wallet:
    node: Node
    key: PrivateKey
    account_id: str = ""
    pin: str = PIN

    @property
    def clock(self) -> FixedClock:
        clock = self.node.processor.context.clock
        assert isinstance(clock, FixedClock)
        return clock

    def enc_record(self) -> Any:
        return self.node.processor.context.keys.enc_record()

    def enrolment(self, code: str, pin: str | None = None, *, name: str = "Phone") -> str:
        return enrolment_token(
            self.key, code, pin or self.pin, self.enc_record(), self.clock.now(), name=name
        )

    def key_jwk(self) -> dict[str, str]:
        from semops.crypto import public_jwk

        return public_jwk(self.key.key)

    async def enrol(self, code: str) -> httpx.Response:
        response = await self.node.public.post(
            "/v1/wallet/enrol", content=self.enrolment(code), headers={"Content-Type": JOSE}
        )
        if response.status_code == 200:
            self.account_id = response.json()["account_id"]
        return response

    def order(
        self,
        request_token: str,
        *,
        pin: str | None = None,
        order_id: str | None = None,
        amount_minor: int | None = None,
        account_id: str | None = None,
        processor: str | None = None,
    ) -> tuple[str, str]:
        """(order id, signed PaymentOrder) for a request token."""
        return order_token(
            self.key,
            request_token,
            processor=processor or self.node.id,
            account_id=account_id or self.account_id,
            pin=pin or self.pin,
            enc_record=self.enc_record(),
            now=self.clock.now(),
            order_id=order_id,
            amount_minor=amount_minor,
        )

    async def pay(self, request_token: str, **options: Any) -> httpx.Response:
        _, token = self.order(request_token, **options)
        return await self.send(token)

    async def send(self, order_token: str) -> httpx.Response:
        return await self.node.public.post(
            "/v1/wallet/orders", content=order_token, headers={"Content-Type": JOSE}
        )

    def auth(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        account_id: str | None = None,
        ttl_s: int = 60,
    ) -> dict[str, str]:
        now = self.clock.now()
        auth = DeviceAuth(
            auth_id=make_id(IdKind.DEVICE_AUTH, secrets.token_bytes(ID_RANDOM_BYTES)),
            account_id=account_id or self.account_id,
            method=method,
            path=path,  # type: ignore[arg-type]
            body_digest=sha256_b64url(body) if body else None,
            created_at=now,
            expires_at=now + ttl_s,
        )
        return {"Authorization": f"SEMOPS-Device {sign(auth, self.key)}"}

    async def get(self, path: str) -> httpx.Response:
        return await self.node.public.get(path, headers=self.auth("GET", path))

    async def balance(self) -> int:
        response = await self.get("/v1/wallet/balance")
        assert response.status_code == 200, response.text
        return int(response.json()["available_minor"])


FAKE_JWE = "eyJhbGciOiJFQ0RILUVTIn0.a2V5.aXY.Y2lwaGVy.dGFn"


def enrolment_token(
    key: PrivateKey, code: str, pin: str, enc_record: Any, now: int, *, name: str = "Phone"
) -> str:
    """What a wallet sends to enrol: signed by the new key, the PIN sealed and bound."""
    from semops.crypto import public_jwk

    draft = Enrolment(
        activation_code=code,
        device_jwk=public_jwk(key.key),
        device_name=name,
        created_at=now,
        expires_at=now + 120,
        pin_block=FAKE_JWE,
    )
    block = make_pin_block(pin, draft.enrolment_digest(), enc_record)
    return sign(draft.model_copy(update={"pin_block": block}), key)


def order_token(
    key: PrivateKey,
    request_token: str,
    *,
    processor: str,
    account_id: str,
    pin: str,
    enc_record: Any,
    now: int,
    order_id: str | None = None,
    amount_minor: int | None = None,
) -> tuple[str, str]:
    """(order id, signed PaymentOrder): what a wallet sends to pay a request."""
    request = parse_claims(read_unverified_claims(request_token), PaymentRequest)
    order_id = order_id or make_id(IdKind.ORDER, secrets.token_bytes(16))
    draft = PaymentOrder(
        order_id=order_id,
        payer_processor=processor,
        payer_account=account_id,
        request=request_token,
        amount_minor=amount_minor or request.amount_minor,
        currency=request.currency,
        created_at=now,
        expires_at=now + 300,
        pin_block=FAKE_JWE,
    )
    block = make_pin_block(pin, draft.order_digest(), enc_record)
    return order_id, sign(draft.model_copy(update={"pin_block": block}), key)


def device_key(label: str | None = None) -> PrivateKey:
    return derive_key("device", KeyUse.SIGN, seed(label or secrets.token_hex(8)))


async def customer(
    node: Node,
    *,
    deposit_minor: int | None = 10_000,
    name: str = "Ada Lovelace",
    phone: str = "+447700900123",
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "phone": phone, "currency": "EUR"}
    if deposit_minor is not None:
        body["deposit_minor"] = deposit_minor
    response = await node.admin("POST", "/v1/admin/customers", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def enrolled_wallet(
    node: Node, *, deposit_minor: int | None = 10_000, **fields: Any
) -> Wallet:
    created = await customer(node, deposit_minor=deposit_minor, **fields)
    wallet = Wallet(node, device_key())
    response = await wallet.enrol(created["activation_code"])
    assert response.status_code == 200, response.text
    return wallet


@dataclass
class Merchant:
    node: Node
    merchant_id: str
    api_key: str
    account_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    async def request(self, amount_minor: int = 1250, **fields: Any) -> dict[str, Any]:
        body = {
            "amount_minor": amount_minor,
            "currency": "EUR",
            "idempotency_key": make_id(IdKind.REQUEST, secrets.token_bytes(16)),
            **fields,
        }
        response = await self.node.public.post(
            "/v1/merchant/requests", json=body, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def status(self, request_id: str) -> dict[str, Any]:
        response = await self.node.public.get(
            f"/v1/merchant/requests/{request_id}", headers=self.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def refund(
        self, request_id: str, amount_minor: int, refund_id: str | None = None, **fields: Any
    ) -> httpx.Response:
        body = {
            "refund_id": refund_id or make_id(IdKind.REFUND, secrets.token_bytes(16)),
            "amount_minor": amount_minor,
            **fields,
        }
        return await self.node.public.post(
            f"/v1/merchant/requests/{request_id}/refunds", json=body, headers=self.headers
        )


async def merchant(
    node: Node,
    merchant_id: str = "corner-shop",
    *,
    webhook: bool = True,
    display_name: str = "Corner Shop",
) -> Merchant:
    body: dict[str, Any] = {
        "merchant_id": merchant_id,
        # A second merchant at one node needs its own name: a processor refuses a name
        # that looks like another payee's.
        "display_name": display_name,
        "currency": "EUR",
    }
    if webhook:
        body["webhook_url"] = f"https://{merchant_id}.test/hooks/semops"
    response = await node.admin("POST", "/v1/admin/merchants", body)
    assert response.status_code == 201, response.text
    data = response.json()
    return Merchant(node, merchant_id, data["api_key"], data["account_id"])


async def account_balance(node: Node, account_id: str) -> int:
    response = await node.admin("GET", f"/v1/admin/accounts/{account_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["available_minor"])


async def rows(node: Node, table: str) -> list[dict[str, Any]]:
    from sqlalchemy import text

    async with node.processor.context.database.read() as connection:
        result = await connection.execute(text(f"SELECT * FROM {table}"))
        return [dict(row) for row in result.mappings()]


async def booked(node: Node) -> list[dict[str, Any]]:
    """The processor's accounts with their balances as booked (system postings not folded
    into their rows yet included)."""
    async with node.processor.context.database.read() as connection:
        return await store.booked_accounts(connection)


async def check_ledger(node: Node) -> None:
    """Every entry sums to zero, every booked balance equals the sum of its postings, and
    every row the sum of its folded ones."""
    postings = await rows(node, "postings")
    by_entry: dict[str, int] = {}
    by_account: dict[str, int] = {}
    folded: dict[str, int] = {}
    for posting in postings:
        by_entry[posting["entry_id"]] = (
            by_entry.get(posting["entry_id"], 0) + posting["amount_minor"]
        )
        account_id = posting["account_id"]
        by_account[account_id] = by_account.get(account_id, 0) + posting["amount_minor"]
        if posting["folded"]:
            folded[account_id] = folded.get(account_id, 0) + posting["amount_minor"]
        else:
            assert ":" in account_id, f"a customer's or merchant's posting unfolded: {posting}"
    assert all(total == 0 for total in by_entry.values()), by_entry
    for row in await rows(node, "accounts"):
        assert row["balance_minor"] == folded.get(row["account_id"], 0), row
    for account in await booked(node):
        assert account["balance_minor"] == by_account.get(account["account_id"], 0), account
        if account["kind"] in ("customer", "merchant", "suspense"):
            assert account["balance_minor"] >= -account["overdraft_minor"], account


async def database_text(node: Node) -> str:
    """Every row of every table of a processor's database, as one text (for exposure checks)."""
    from semops.store.processor import metadata

    parts = []
    for table in metadata.sorted_tables:
        parts.extend(str(row) for row in await rows(node, table.name))
    return "\n".join(parts)
