"""A processor's key material, loaded from its data directory.

Files (made by `semops pki issue ID --role processor --out DATA_DIR`, all private ones 0600):

    ID.key / ID.crt          signing and mutual-TLS key, certificate from the scheme root
    ID.enc.key / ID.enc.crt  encryption key (PIN blocks and sealed transfer details)
    root-ca.crt              the scheme root, the only trust anchor

and three secrets made here on first start, 0600, never logged:

    pin.key         the PIN-verification key, held apart from the database (DESIGN.md §6)
    reference.key   the key of one-time payer references (DESIGN.md §5)
    operator.token  the back-office bearer token (hex text)

The certificates are checked against the root on load, so a processor never starts with a
key the scheme would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from semops.crypto import KeyUse, PrivateKey, PublicKeyRecord, private_key_for
from semops.crypto.pki import (
    certificate_key_record,
    certificate_pem,
    load_certificate_pem,
    validate_chain,
)
from semops.service.files import ensure_random_secret, ensure_token, read_private_key

PIN_KEY_FILE = "pin.key"
REFERENCE_KEY_FILE = "reference.key"
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 - a file name, not a secret


# The one recipe from a certificate to the key record a directory publishes for it.
certificate_record = certificate_key_record


@dataclass(frozen=True, slots=True)
class ProcessorKeys:
    processor_id: str
    sign_key: PrivateKey
    enc_key: PrivateKey
    sign_certificate: x509.Certificate
    enc_certificate: x509.Certificate
    root_certificate: x509.Certificate
    pin_key: bytes
    reference_key: bytes
    operator_token: str

    def __repr__(self) -> str:  # never print secrets
        return f"ProcessorKeys({self.processor_id!r})"

    def sign_record(self) -> PublicKeyRecord:
        return certificate_record(self.processor_id, self.sign_certificate, KeyUse.SIGN)

    def enc_record(self) -> PublicKeyRecord:
        return certificate_record(self.processor_id, self.enc_certificate, KeyUse.ENCRYPT)

    def pem(self, certificate: x509.Certificate) -> str:
        return certificate_pem(certificate).decode("ascii")


def load_keys(data_dir: Path, processor_id: str, now: int) -> ProcessorKeys:
    """Load and check the processor's keys; make the three secrets on first start."""
    root = load_certificate_pem((data_dir / "root-ca.crt").read_bytes())
    sign_certificate = load_certificate_pem((data_dir / f"{processor_id}.crt").read_bytes())
    enc_certificate = load_certificate_pem((data_dir / f"{processor_id}.enc.crt").read_bytes())
    at = datetime.fromtimestamp(now, UTC)
    validate_chain(sign_certificate, root, at, expected_party=processor_id, expected_usage="sign")
    validate_chain(enc_certificate, root, at, expected_party=processor_id, expected_usage="encrypt")
    sign_key = private_key_for(
        processor_id, KeyUse.SIGN, read_private_key(data_dir / f"{processor_id}.key")
    )
    enc_key = private_key_for(
        processor_id, KeyUse.ENCRYPT, read_private_key(data_dir / f"{processor_id}.enc.key")
    )
    if sign_key.kid != certificate_record(processor_id, sign_certificate, KeyUse.SIGN).kid:
        raise ValueError(f"{processor_id}.key does not belong to {processor_id}.crt")
    if enc_key.kid != certificate_record(processor_id, enc_certificate, KeyUse.ENCRYPT).kid:
        raise ValueError(f"{processor_id}.enc.key does not belong to {processor_id}.enc.crt")
    return ProcessorKeys(
        processor_id=processor_id,
        sign_key=sign_key,
        enc_key=enc_key,
        sign_certificate=sign_certificate,
        enc_certificate=enc_certificate,
        root_certificate=root,
        pin_key=ensure_random_secret(data_dir / PIN_KEY_FILE),
        reference_key=ensure_random_secret(data_dir / REFERENCE_KEY_FILE),
        operator_token=ensure_token(data_dir / OPERATOR_TOKEN_FILE),
    )
