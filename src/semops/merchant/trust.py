"""Which notice keys the merchant backend trusts: only what chains to the scheme. Pure.

Theory of operation (DESIGN.md §6 "Trust is chained, never fetched"). A PaymentNotice is
the processor's guarantee that an order is paid, so whoever can make the backend accept a
notice key can mark any order paid. The key is fetched from the processor
(`GET /v1/merchant/keys`), and whatever travels on that link may have been swapped, so the
fetch decides nothing by itself. The backend holds a trust anchor set up once, out of band:

- the scheme root certificate and the id of its own processor: a fetched key is trusted
  only if the certificate sent with it (`signing_certificate`) chains to that root, names
  that processor and is for signing (`semops.crypto.pki.validate_chain`), the key is the
  certificate's own (its kid is `make_kid(processor, certificate key)`), and the
  router-signed directory sent with it (checked from the same root) lists that key as the
  processor's active signing key and has not revoked the certificate. A certificate alone
  is not enough: the root may have issued others for the same processor (an old one, whose
  key was rotated away or revoked, or a rogue second one), and only the directory says
  which key the processor registered; and/or
- a pin: the RFC 7638 thumbprint of the processor's signing key, and only that key.

With both, a key must pass both. A document that fails changes nothing: the keys trusted
before stay trusted, and a notice under an untrusted key is refused like any unknown key.
Time is an argument; nothing here reads a clock or a file.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography import x509

from semops.core.errors import E, SemopsError
from semops.core.limits import CERTIFICATE_PEM_MAX_CHARS
from semops.crypto import KeyUse, PublicKeyRecord, make_kid, thumbprint
from semops.crypto.pki import (
    certificate_key_record,
    check_party_id,
    load_certificate_pem,
    validate_chain,
)
from semops.protocol import Directory, DirectoryKey
from semops.protocol.directory import listed_signing_key, verify_directory

# Keys listed in one key document: a processor publishes its current key and perhaps the
# next one during a rotation; a longer list is not a key document.
KEYS_LISTED_MAX: Final = 8
# An RFC 7638 thumbprint: SHA-256 in base64url without padding.
KEY_PIN_CHARS: Final = 43


@dataclass(frozen=True, slots=True)
class ProcessorTrust:
    """The merchant backend's trust anchor for its processor's notice key."""

    processor_id: str | None = None
    root: x509.Certificate | None = None
    key_pin: str | None = None

    def __post_init__(self) -> None:
        if self.root is None and self.key_pin is None:
            raise ValueError("a trust anchor is the scheme root or a pinned key")
        if self.root is not None and self.processor_id is None:
            raise ValueError("the scheme root needs the processor's id")
        if self.processor_id is not None:
            check_party_id(self.processor_id)
        if self.key_pin is not None:
            check_key_pin(self.key_pin)


def check_key_pin(pin: str) -> str:
    """A key pin as typed: an RFC 7638 thumbprint (base64url, 43 characters)."""
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if len(pin) != KEY_PIN_CHARS or not set(pin) <= alphabet:
        raise ValueError("a key pin is the key's RFC 7638 thumbprint (43 base64url characters)")
    return pin


def key_records_from(document: Any) -> list[PublicKeyRecord]:
    """The signing keys a `GET /v1/merchant/keys` answer lists (not yet trusted).

    Accepts `{"processor_id", "signing_key"}` (what the processor serves), one key record,
    a list of them, or `{"keys": [...]}`, each a directory key
    (kid, use, jwk, validity, status). The owner is the record's `owner` or the document's
    `processor_id`, else the kid's prefix; in every case the kid must be exactly
    `make_kid(owner, jwk)`, so a key cannot claim another owner."""
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        items, default_owner = document["keys"], document.get("processor_id")
    elif isinstance(document, dict) and isinstance(document.get("signing_key"), dict):
        items, default_owner = [document["signing_key"]], document.get("processor_id")
    elif isinstance(document, dict) and "kid" in document:
        items, default_owner = [document], document.get("processor_id")
    elif isinstance(document, list):
        items, default_owner = document, None
    else:
        raise SemopsError(E.MALFORMED, "the processor's key document is not understood")
    records = []
    for item in items[:KEYS_LISTED_MAX]:
        if not isinstance(item, dict):
            continue
        members = ("kid", "use", "jwk", "not_before", "not_after", "status")
        try:
            key = DirectoryKey.model_validate({k: item[k] for k in members if k in item})
        except ValueError:
            raise SemopsError(E.MALFORMED, "a processor key record is malformed") from None
        owner = item.get("owner") or default_owner or key.kid.split(":", 1)[0]
        if not isinstance(owner, str) or make_kid(owner, key.jwk.model_dump()) != key.kid:
            raise SemopsError(E.KEY_UNKNOWN, "a processor key's id does not name its key")
        if key.use == KeyUse.SIGN.value:
            records.append(key.to_record(owner))
    if not records:
        raise SemopsError(E.KEY_UNKNOWN, "the processor published no signing key")
    return records


def _certified(
    document: dict[str, Any], processor_id: str, root: x509.Certificate, now: int
) -> PublicKeyRecord:
    pem = document.get("signing_certificate")
    if not isinstance(pem, str) or not pem.isascii() or len(pem) > CERTIFICATE_PEM_MAX_CHARS:
        raise SemopsError(E.CERTIFICATE_INVALID, "the processor sent no signing certificate")
    try:
        certificate = load_certificate_pem(pem.encode("ascii"))
    except ValueError:
        raise SemopsError(E.CERTIFICATE_INVALID, "the certificate cannot be read") from None
    at = datetime.fromtimestamp(now, UTC)
    validate_chain(certificate, root, at, expected_party=processor_id, expected_usage="sign")
    record = certificate_key_record(processor_id, certificate, KeyUse.SIGN)
    listed = key_records_from(document) if "signing_key" in document else [record]
    if all(item.kid != record.kid or item.jwk != record.jwk for item in listed):
        raise SemopsError(E.KEY_UNKNOWN, "the key listed is not the certified one")
    directory = _directory(document, root, now)
    return listed_signing_key(directory, processor_id, record, certificate.serial_number, now)


def _directory(document: dict[str, Any], root: x509.Certificate, now: int) -> Directory:
    """The router-signed directory sent with the key, checked from the scheme root."""
    token, pem = document.get("directory"), document.get("router_certificate")
    if not isinstance(token, str) or not isinstance(pem, str) or not pem.isascii():
        raise SemopsError(E.DIRECTORY_INVALID, "the processor sent no signed directory")
    if len(pem) > CERTIFICATE_PEM_MAX_CHARS:
        raise SemopsError(E.CERTIFICATE_INVALID, "the router certificate is too large")
    try:
        router_certificate = load_certificate_pem(pem.encode("ascii"))
    except ValueError:
        raise SemopsError(E.CERTIFICATE_INVALID, "the router certificate cannot be read") from None
    return verify_directory(token, router_certificate, root, now)


def trusted_keys(document: Any, trust: ProcessorTrust, now: int) -> list[PublicKeyRecord]:
    """The notice keys of a key document that the trust anchor vouches for, or the reason
    none is trusted (certificate_invalid, key_unknown, malformed)."""
    if not isinstance(document, dict):
        raise SemopsError(E.MALFORMED, "the processor's key document is not an object")
    if trust.processor_id is not None and document.get("processor_id") != trust.processor_id:
        raise SemopsError(E.KEY_UNKNOWN, "the key document is for another processor")
    if trust.root is not None:
        assert trust.processor_id is not None, "checked when the trust was made"
        records = [_certified(document, trust.processor_id, trust.root, now)]
    else:
        records = key_records_from(document)
    pin = trust.key_pin
    if pin is not None:
        records = [r for r in records if hmac.compare_digest(thumbprint(r.jwk), pin)]
        if not records:
            raise SemopsError(E.KEY_UNKNOWN, "the processor's key is not the pinned one")
    return records


__all__ = [
    "KEY_PIN_CHARS",
    "ProcessorTrust",
    "check_key_pin",
    "key_records_from",
    "trusted_keys",
]
