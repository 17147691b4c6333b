"""TLS for the scheme network: mutual TLS between processors and the router.

Every participant holds a certificate from the scheme root CA (`semops pki issue`). The
router and the processors' scheme endpoints demand a client certificate that chains to the
root; clients verify the server the same way. TLS 1.2 is the floor (1.3 preferred). Message
signatures are checked on top, so a TLS terminator cannot forge a payment.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path


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
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.certificate), str(files.private_key))
    return context


def server_options(files: TlsFiles) -> dict[str, object]:
    """uvicorn keyword arguments for a server that requires a scheme client certificate."""
    return {
        "ssl_certfile": str(files.certificate),
        "ssl_keyfile": str(files.private_key),
        "ssl_ca_certs": str(files.root_ca),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }
