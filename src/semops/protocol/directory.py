"""The router's signed directory, checked from the scheme root down. Pure.

Theory of operation (DESIGN.md §6 "PKI", "Trust is chained, never fetched"). Whoever holds
the scheme root certificate can check a directory that reached it over any link: the
router's certificate must chain to the root and name a party of role *router* with the
signing usage; only then is the directory's signature checked with that certificate's key,
and the directory must name that router. Processors, wallets and merchant backends all
take their view of the scheme from a directory that passed this, so a key is trusted only
while the directory lists it as active: a key the router revoked, or a certificate whose
serial it revoked, stops being trusted at the next directory everywhere.

One recipe, used by the processor (its router link), the wallet (its processor's
configuration) and the merchant backend (its processor's notice key).
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

from semops.core.errors import E, SemopsError
from semops.crypto import KeyRing, KeyStatus, KeyUse, PublicKeyRecord
from semops.crypto.pki import certificate_key_record, validate_chain
from semops.protocol.envelope import open_signed
from semops.protocol.messages import Directory


def verify_directory(
    token: str, router_certificate: x509.Certificate, root: x509.Certificate, now: int
) -> Directory:
    """The directory in `token`, if `router_certificate` chains to `root` as the router's
    signing certificate and its key signed the directory; else an opaque refusal."""
    at = datetime.fromtimestamp(now, UTC)
    identity = validate_chain(router_certificate, root, at, expected_usage="sign")
    if identity.role != "router":
        raise SemopsError(E.DIRECTORY_INVALID, "the directory is not signed by a router")
    record = certificate_key_record(identity.party_id, router_certificate, KeyUse.SIGN)
    directory = open_signed(
        token, Directory, KeyRing([record]), now, expected_signer=identity.party_id
    ).message
    if directory.router_id != identity.party_id:
        raise SemopsError(E.DIRECTORY_INVALID, "the directory names another router")
    return directory


def listed_signing_key(
    directory: Directory, participant_id: str, record: PublicKeyRecord, serial: int, now: int
) -> PublicKeyRecord:
    """`record` (the key of a certificate with `serial`), if the directory lists it as an
    active signing key of `participant_id` and has not revoked the certificate."""
    if serial in directory.revoked_serial_numbers():
        raise SemopsError(E.CERTIFICATE_REVOKED, "the router revoked this certificate")
    for key in directory.entry(participant_id).keys:
        if key.kid == record.kid and key.jwk.model_dump() == record.jwk:
            listed = key.to_record(participant_id)
            if listed.use is not KeyUse.SIGN:
                break
            if listed.status is not KeyStatus.ACTIVE:
                raise SemopsError(E.KEY_REVOKED, "the router revoked this key")
            if not listed.not_before <= now < listed.not_after:
                raise SemopsError(E.KEY_EXPIRED)
            return listed
    raise SemopsError(E.KEY_UNKNOWN, "the directory does not list this key for the processor")


__all__ = ["listed_signing_key", "verify_directory"]
