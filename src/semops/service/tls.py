"""TLS for the scheme network: mutual TLS between processors and the router.

Every participant holds a certificate from the scheme root CA (`semops pki issue`). The
router's and the processors' scheme ports demand a client certificate that chains to the
root, and clients verify the server the same way. TLS 1.3 only, on both sides: its cipher
suites are all AEAD with ephemeral key exchange, so there is no CBC or static-RSA suite to
refuse one by one (everything in SEMOPS speaks 1.3: Python's ssl, aiohttp, httpx).

OpenSSL's handshake check is not the scheme's whole rule, so each scheme app also runs
`SchemePeerGate`: uvicorn hands the app the client certificate through the ASGI "tls"
extension (`tls_extension`, installed by service/server.py), and the gate lets a request
through only from a *signing* certificate with EKU clientAuth, of the one role that may
call that port (processors call the router; only the router calls a processor), whose
serial is not revoked in the current directory (`crypto.pki.check_scheme_peer`). The
route then knows who called (`scheme_peer`), and compares it with the party a message
names. Message signatures are checked on top, so a TLS terminator cannot forge a payment.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from starlette.types import ASGIApp, Receive, Scope, Send

from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.limits import TLS_PEER_CACHE_MAX
from semops.crypto.pki import PartyIdentity, Role, check_scheme_peer
from semops.service.app import problem_response

TLS_MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_3
# ASGI TLS extension (asgiref "TLS Extension"): tls_version as the TLS protocol number.
_TLS_VERSIONS: Final = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# The IANA numbers of the TLS 1.3 suites (RFC 8446 B.4), the only ones negotiated here.
_CIPHER_SUITES: Final = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
}
_PEER_STATE_KEY: Final = "semops_scheme_peer"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """A participant's TLS identity and the scheme's trust anchor, as files."""

    certificate: Path
    private_key: Path
    root_ca: Path

    @classmethod
    def in_directory(cls, directory: Path, party_id: str) -> TlsFiles:
        return cls(
            certificate=directory / f"{party_id}.crt",
            private_key=directory / f"{party_id}.key",
            root_ca=directory / "root-ca.crt",
        )


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """Verify the server against the scheme root and present our own certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.root_ca))
    context.minimum_version = TLS_MINIMUM_VERSION
    context.load_cert_chain(str(files.certificate), str(files.private_key))
    return context


def _tls13_only(_config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = default()
    context.minimum_version = TLS_MINIMUM_VERSION
    return context


def server_options(files: TlsFiles) -> dict[str, object]:
    """uvicorn keyword arguments for a server that requires a scheme client certificate."""
    return {
        "ssl_certfile": str(files.certificate),
        "ssl_keyfile": str(files.private_key),
        "ssl_ca_certs": str(files.root_ca),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_context_factory": _tls13_only,
    }


def tls_extension(transport: Any) -> dict[str, object] | None:
    """The ASGI "tls" extension for a connection (None for a plain-HTTP one)."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    chain, name = [], None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        try:
            name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        except ValueError:
            name = None
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        # OpenSSL verified the chain during the handshake (CERT_REQUIRED), or refused it.
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _CIPHER_SUITES.get(cipher[0]) if cipher else None,
    }


class SchemePeerGate:
    """ASGI middleware: only the right scheme participant's certificate gets through.

    The check of a certificate is remembered (bounded) per certificate; validity in time
    and revocation are looked at again on every request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        root: x509.Certificate,
        role: Role,
        revoked_serials: Callable[[], AbstractSet[int]],
        clock: Clock,
    ) -> None:
        self.app = app
        self.root = root
        self.role: Role = role
        self.revoked_serials = revoked_serials
        self.clock = clock
        self._known: dict[str, PartyIdentity] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            identity = self._identify(scope)
        except SemopsError as error:
            await problem_response(error, scope.get("path"))(scope, receive, send)
            return
        scope.setdefault("state", {})[_PEER_STATE_KEY] = identity
        await self.app(scope, receive, send)

    def _identify(self, scope: Scope) -> PartyIdentity:
        tls = (scope.get("extensions") or {}).get("tls")
        chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
        if not chain:
            raise SemopsError(E.CERTIFICATE_INVALID, "a scheme port needs a client certificate")
        pem = str(next(iter(chain)))
        now = datetime.fromtimestamp(self.clock.now(), UTC)
        revoked = self.revoked_serials()
        known = self._known.get(pem)
        if known is not None and known.not_after >= now:
            if known.serial in revoked:
                raise SemopsError(E.CERTIFICATE_REVOKED)
            return known
        try:
            certificate = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except ValueError:
            raise SemopsError(E.CERTIFICATE_INVALID, "the certificate cannot be read") from None
        identity = check_scheme_peer(
            certificate, self.root, now, role=self.role, revoked_serials=revoked
        )
        if len(self._known) >= TLS_PEER_CACHE_MAX:
            self._known.clear()
        self._known[pem] = identity
        return identity


def scheme_peer(scope_or_request: Any) -> PartyIdentity:
    """Who called this scheme port, as SchemePeerGate established it (a request or scope)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    identity = (scope.get("state") or {}).get(_PEER_STATE_KEY)
    if not isinstance(identity, PartyIdentity):
        raise SemopsError(E.CERTIFICATE_INVALID, "the caller's certificate was not checked")
    return identity


__all__ = [
    "TLS_MINIMUM_VERSION",
    "SchemePeerGate",
    "TlsFiles",
    "client_context",
    "scheme_peer",
    "server_options",
    "tls_extension",
]
