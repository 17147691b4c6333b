"""The one check both scheme apps run on their TLS client (service/tls.py SchemePeerGate).

The gate reads the client certificate from the ASGI "tls" extension (which our uvicorn
protocol fills in, service/server.py) and lets a request through only from a signing
certificate of the port's one role, not revoked. Driven here with hand-made ASGI scopes;
over real sockets in tests/attack/test_scheme_tls.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from semops.core.clock import FixedClock
from semops.crypto import pki
from semops.service.tls import SchemePeerGate, scheme_peer, tls_extension

NOW = datetime.now(UTC).replace(microsecond=0)
ROOT_KEY = ec.derive_private_key(0x5EED_2001, ec.SECP256R1())
ROOT = pki.make_root_ca(ROOT_KEY, "SEMOPS Root CA", NOW, serial=1)
KEY = ec.derive_private_key(0x5EED_2002, ec.SECP256R1())


def pem(party: str, role: pki.Role, serial: int, *, enc: bool = False) -> str:
    issue = pki.issue_encryption_certificate if enc else pki.issue_party_certificate
    cert = issue(ROOT_KEY, ROOT, KEY.public_key(), party, role, NOW, serial)
    return pki.certificate_pem(cert).decode("ascii")


BANK = pem("bank-a", "processor", 10)
BANK_ENC = pem("bank-a", "processor", 11, enc=True)
ROUTER = pem("router", "router", 12)


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"party": scheme_peer(request).party_id})


class Gate:
    def __init__(self, role: pki.Role) -> None:
        self.revoked: set[int] = set()
        self.clock = FixedClock(int(NOW.timestamp()))
        app = Starlette(routes=[Route("/", _whoami)])
        self.app = SchemePeerGate(
            app, root=ROOT, role=role, revoked_serials=lambda: self.revoked, clock=self.clock
        )

    def call(self, chain: list[str] | None) -> tuple[int, dict[str, Any]]:
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "https",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [],
            "state": {},
        }
        if chain is not None:
            scope["extensions"] = {"tls": {"client_cert_chain": chain, "tls_version": 0x0304}}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], json.loads(body)


def test_a_processor_certificate_passes_the_routers_gate_and_is_named() -> None:
    assert Gate("processor").call([BANK]) == (200, {"party": "bank-a"})


def test_no_certificate_or_an_unreadable_one_is_refused() -> None:
    gate = Gate("processor")
    for chain in (None, [], ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"]):
        status, problem = gate.call(chain)
        assert (status, problem["code"]) == (401, "certificate_invalid")


def test_only_the_router_passes_a_processors_gate() -> None:
    gate = Gate("router")
    assert gate.call([ROUTER]) == (200, {"party": "router"})
    status, problem = gate.call([BANK])
    assert (status, problem["code"]) == (403, "tls_peer_not_allowed")


def test_an_encryption_certificate_never_passes() -> None:
    status, problem = Gate("processor").call([BANK_ENC])
    assert (status, problem["code"]) == (401, "certificate_invalid")


def test_a_revocation_applies_to_a_certificate_already_seen() -> None:
    gate = Gate("processor")
    assert gate.call([BANK])[0] == 200
    gate.revoked.add(10)
    status, problem = gate.call([BANK])
    assert (status, problem["code"]) == (401, "certificate_revoked")


def test_a_certificate_seen_before_is_refused_once_it_expires() -> None:
    gate = Gate("processor")
    assert gate.call([BANK])[0] == 200
    gate.clock.advance(400 * 86400)
    assert gate.call([BANK])[0] == 401


class _SslObject:
    def __init__(self, der: bytes | None) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return self.der

    def version(self) -> str:
        return "TLSv1.3"

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256)


class _Transport:
    def __init__(self, ssl_object: _SslObject | None) -> None:
        self.ssl_object = ssl_object

    def get_extra_info(self, name: str) -> Any:
        return self.ssl_object if name == "ssl_object" else None


def test_the_tls_extension_carries_the_client_chain_as_pem() -> None:
    der = ssl.PEM_cert_to_DER_cert(BANK)
    extension = tls_extension(_Transport(_SslObject(der)))
    assert extension is not None
    assert extension["client_cert_chain"] == [ssl.DER_cert_to_PEM_cert(der)]
    assert extension["client_cert_name"] == "OU=processor,O=SEMOPS,CN=bank-a"
    assert (extension["tls_version"], extension["cipher_suite"]) == (0x0304, 0x1302)
    assert extension["client_cert_error"] is None
    assert tls_extension(_Transport(None)) is None  # plain HTTP: no extension at all
    assert tls_extension(_Transport(_SslObject(None)))["client_cert_chain"] == []  # type: ignore[index]
