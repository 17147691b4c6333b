"""The scheme PKI: one root CA, and certificates for the router and each processor.

Theory of operation. The scheme operator keeps one self-signed root (CA:TRUE, pathlen 0, so
it signs participants directly and nobody else can become a CA under it). Each participant
gets two certificates for two separate P-256 keys:

* a *signing* certificate (digitalSignature; EKU serverAuth + clientAuth): the key that
  authenticates both ends of the processor-to-router mutual TLS and signs messages (JWS);
* an *encryption* certificate (keyAgreement only; EKU the private `id-semops-jwe-encryption`
  alone): the key others seal to (JWE, ECDH-ES). Keeping it apart means a signing oracle can
  never become a decryption oracle. Its EKU names neither serverAuth nor clientAuth, so
  OpenSSL itself refuses it as a TLS certificate at the handshake; certificates issued
  before that EKU existed carry none and are still accepted for sealing, and
  `check_scheme_peer` refuses them (like every encryption certificate) as a TLS client.

Identity lives in one place, a SAN URI: `urn:semops:<role>:<party_id>` for the signing
certificate and `urn:semops:<role>:<party_id>:enc` for the encryption one. The subject
(CN = party id, O = SEMOPS, OU = role) repeats it for people and must agree with it.

`validate_chain` is the only judge of a certificate: issuer name and key identifier, the
root's ECDSA-SHA-256 signature, both validity windows at the given time, CA flags, P-256,
usage, and the identity. Every failure is the same opaque `E.CERTIFICATE_INVALID`; the
detail names the check for logs and operators but never carries key material.
`check_scheme_peer` adds what a scheme port asks of a TLS client on top: a *signing*
certificate with EKU clientAuth, of the one role that may connect there, whose serial the
router has not revoked. `certificate_key_record` is the one recipe from a certificate to the
key record a directory publishes.

This module is pure: time, keys and serial numbers are arguments; the shell
(`semops.cli.pki`) reads the clock, makes keys and serials, and touches files.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, TypeAlias, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    SignatureAlgorithmOID,
)

from semops.core.errors import E, SemopsError
from semops.core.limits import (
    CERT_SAN_NAMES_MAX,
    CLOCK_SKEW_MAX_S,
    PARTY_CERT_VALIDITY_DAYS,
    PARTY_ID_MAX_CHARS,
    PARTY_ID_MIN_CHARS,
    ROOT_CERT_VALIDITY_DAYS,
)
from semops.crypto.keys import KeyUse, PublicKeyRecord, make_kid, public_jwk

Role: TypeAlias = Literal["router", "processor"]
Usage: TypeAlias = Literal["sign", "encrypt"]
IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

ROLES: Final[tuple[Role, ...]] = get_args(Role)
USAGES: Final[tuple[Usage, ...]] = get_args(Usage)
SCHEME_ORGANIZATION: Final = "SEMOPS"
URI_PREFIX: Final = "urn:semops:"
_ENCRYPTION_URI_SUFFIX: Final = ":enc"

# Lower-case letters, digits and '-', not at either end: safe as a file name, in a URN, as
# a DNS label and as a command-line argument (no leading '-'); the same rule as the
# `PartyId` of the protocol messages, so every certified id can appear in a message.
PARTY_ID_PATTERN: Final = (
    rf"^[a-z0-9][a-z0-9-]{{{PARTY_ID_MIN_CHARS - 2},{PARTY_ID_MAX_CHARS - 2}}}[a-z0-9]$"
)
_PARTY_ID_RE: Final = re.compile(PARTY_ID_PATTERN)
# RFC 1123 host names, no wildcards: a participant certificate names exactly its hosts.
_DNS_LABEL: Final = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME_RE: Final = re.compile(rf"^(?=.{{1,253}}$){_DNS_LABEL}(?:\.{_DNS_LABEL})*$")

# A freshly issued certificate starts this much in the past, so a peer whose clock runs a
# little behind the issuer's does not refuse it as "not yet valid".
_BACKDATE: Final = timedelta(seconds=CLOCK_SKEW_MAX_S)
_SIGNATURE_HASH: Final = hashes.SHA256()

_ROOT_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
_SIGN_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_ENCRYPT_KEY_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=True,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_SIGN_EKU: Final = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
# id-semops-jwe-encryption: an OID under the UUID arc 2.25 (ITU-T X.667, no registration
# needed), made from a random UUID for this one purpose. An EKU that lists only it keeps
# the encryption certificate out of every TLS handshake (OpenSSL's purpose check refuses a
# certificate whose EKU lacks serverAuth/clientAuth).
SEMOPS_ENCRYPTION_EKU_OID: Final = x509.ObjectIdentifier(
    "2.25.244736590999815640063489235266512876665"
)
_ENCRYPT_EKU: Final = x509.ExtendedKeyUsage([SEMOPS_ENCRYPTION_EKU_OID])
# The largest serial RFC 5280 §4.1.2.2 allows: 20 octets, positive.
SERIAL_MAX: Final = 2**159 - 1
# Extensions a participant certificate may carry; any other one marked critical is refused
# (RFC 5280 §4.2: a verifier must reject a critical extension it does not understand).
_KNOWN_EXTENSIONS: Final = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)


@dataclass(frozen=True, slots=True)
class PartyIdentity:
    """Who a valid participant certificate speaks for, and for what."""

    party_id: str
    role: Role
    usage: Usage
    not_after: datetime
    serial: int


# --- Names and keys -----------------------------------------------------------------------


def check_party_id(party_id: str) -> str:
    """A participant id: 2 to 32 characters of a-z, 0-9 and '-', not starting or ending in '-'."""
    if not isinstance(party_id, str) or not _PARTY_ID_RE.fullmatch(party_id):
        raise SemopsError(
            E.VALIDATION_FAILED,
            f"a party id is {PARTY_ID_MIN_CHARS} to {PARTY_ID_MAX_CHARS} characters of a-z, "
            "0-9 and '-', not starting or ending with '-'",
        )
    return party_id


def _is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _require_p256(key: object, what: str) -> None:
    if not _is_p256(key):
        raise ValueError(f"the {what} must be an ECDSA P-256 key")


def _utc_seconds(now: datetime) -> datetime:
    """`now` in UTC, to the second (X.509 times have no fractions)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(UTC).replace(microsecond=0)


def _same_public_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    return isinstance(b, ec.EllipticCurvePublicKey) and a.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    ) == b.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def _identity_uri(role: Role, party_id: str, usage: Usage) -> str:
    suffix = _ENCRYPTION_URI_SUFFIX if usage == "encrypt" else ""
    return f"{URI_PREFIX}{role}:{party_id}{suffix}"


def _check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ValueError(f"a role is one of {', '.join(ROLES)}")


def network_names(
    hostnames: Sequence[str], ip_addresses: Sequence[str | IpAddress]
) -> list[x509.GeneralName]:
    """SAN entries for the hosts a TLS certificate serves; ValueError names a bad one."""
    if len(hostnames) + len(ip_addresses) > CERT_SAN_NAMES_MAX:
        raise ValueError(f"at most {CERT_SAN_NAMES_MAX} host names and IP addresses")
    names: list[x509.GeneralName] = []
    for hostname in hostnames:
        lowered = hostname.lower()
        if not _HOSTNAME_RE.fullmatch(lowered):
            raise ValueError(f"not a host name: {hostname!r}")
        names.append(x509.DNSName(lowered))
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise ValueError(f"not an IP address: {ip!r}") from None
    return names


# --- Issuing ------------------------------------------------------------------------------


def make_root_ca(
    key: ec.EllipticCurvePrivateKey, name: str, now: datetime, serial: int
) -> x509.Certificate:
    """The self-signed scheme root: CA, pathlen 0, signs certificates and CRLs only."""
    _require_p256(key, "root key")
    if not name or not name.isprintable() or len(name) > 64:  # 64: X.520 ub-common-name
        raise ValueError("the root name is 1 to 64 printable characters")
    start = _utc_seconds(now)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SCHEME_ORGANIZATION),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(start - _BACKDATE)
        .not_valid_after(start + timedelta(days=ROOT_CERT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ROOT_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, _SIGNATURE_HASH)
    )


def issue_party_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject_public_key: ec.EllipticCurvePublicKey,
    party_id: str,
    role: Role,
    now: datetime,
    serial: int,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str | IpAddress] = ("127.0.0.1",),
) -> x509.Certificate:
    """The signing certificate: mutual TLS (both ends) and message signatures."""
    san = network_names(hostnames, ip_addresses)
    return _issue(ca_key, ca_cert, subject_public_key, party_id, role, "sign", now, serial, san)


def issue_encryption_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject_public_key: ec.EllipticCurvePublicKey,
    party_id: str,
    role: Role,
    now: datetime,
    serial: int,
) -> x509.Certificate:
    """The encryption certificate: the party's ECDH-ES (JWE) key. Not for TLS, so no hosts."""
    return _issue(ca_key, ca_cert, subject_public_key, party_id, role, "encrypt", now, serial, [])


def _check_issuer(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, start: datetime
) -> None:
    _require_p256(ca_key, "CA key")
    if not _same_public_key(ca_key.public_key(), ca_cert.public_key()):
        raise ValueError("the CA key does not belong to the CA certificate")
    constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    if not constraints.ca:
        raise ValueError("the CA certificate is not a CA")
    if not ca_cert.not_valid_before_utc <= start <= ca_cert.not_valid_after_utc:
        raise ValueError("the CA certificate is not valid now")


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    subject_public_key: ec.EllipticCurvePublicKey,
    party_id: str,
    role: Role,
    usage: Usage,
    now: datetime,
    serial: int,
    network_names: list[x509.GeneralName],
) -> x509.Certificate:
    check_party_id(party_id)
    role = _check_role(role)
    _require_p256(subject_public_key, "subject key")
    start = _utc_seconds(now)
    _check_issuer(ca_key, ca_cert, start)
    # Never beyond the CA: a certificate outliving its issuer would fail validation anyway,
    # and saying so in the certificate tells the operator when to renew.
    not_after = min(start + timedelta(days=PARTY_CERT_VALIDITY_DAYS), ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, party_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SCHEME_ORGANIZATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        ]
    )
    san = [*network_names, x509.UniformResourceIdentifier(_identity_uri(role, party_id, usage))]
    ca_public = ca_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(subject_public_key)
        .serial_number(serial)
        .not_valid_before(max(start - _BACKDATE, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_SIGN_KEY_USAGE if usage == "sign" else _ENCRYPT_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False
        )
    )
    builder = builder.add_extension(_SIGN_EKU if usage == "sign" else _ENCRYPT_EKU, critical=False)
    return builder.sign(ca_key, _SIGNATURE_HASH)


# --- Validating ---------------------------------------------------------------------------


def _invalid(detail: str) -> SemopsError:
    return SemopsError(E.CERTIFICATE_INVALID, detail)


def validate_chain(
    leaf: x509.Certificate,
    root: x509.Certificate,
    now: datetime,
    *,
    expected_party: str | None = None,
    expected_usage: Usage | None = None,
) -> PartyIdentity:
    """Who `leaf` speaks for, if the scheme root issued it and it is valid at `now`.

    Raises SemopsError(E.CERTIFICATE_INVALID) on any failure, including a certificate
    the parser only half understands: there is no second kind of "no".
    """
    at = _utc_seconds(now)
    try:
        identity = _validate(leaf, root, at)
    except SemopsError:
        raise
    except (ValueError, TypeError, x509.ExtensionNotFound, UnsupportedAlgorithm):
        raise _invalid("the certificate cannot be read") from None
    if expected_usage is not None and identity.usage != expected_usage:
        raise _invalid(f"the certificate is for {identity.usage}ing, not {expected_usage}ing")
    if expected_party is not None and identity.party_id != expected_party:
        raise _invalid("the certificate belongs to another party")
    return identity


def _validate(leaf: x509.Certificate, root: x509.Certificate, at: datetime) -> PartyIdentity:
    _check_root(root, at)
    if leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise _invalid("a CA certificate cannot be a participant certificate")
    if leaf.issuer != root.subject:
        raise _invalid("the certificate was not issued by the scheme root")
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    if aki.key_identifier != ski.digest:
        raise _invalid("the certificate was not issued by the scheme root")
    if not _signed_by(leaf, root):
        raise _invalid("the certificate signature is not valid")
    if not leaf.not_valid_before_utc <= at <= leaf.not_valid_after_utc:
        raise _invalid("the certificate is not valid at this time")
    for extension in leaf.extensions:
        if extension.critical and extension.oid not in _KNOWN_EXTENSIONS:
            raise _invalid("the certificate has an unknown critical extension")
    if not _is_p256(leaf.public_key()):
        raise _invalid("the certificate key is not P-256")
    role, party_id, usage = _identity_from_san(leaf)
    _check_usage(leaf, usage)
    _check_subject(leaf, role, party_id)
    return PartyIdentity(party_id, role, usage, leaf.not_valid_after_utc, leaf.serial_number)


def _check_root(root: x509.Certificate, at: datetime) -> None:
    if not root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
        raise _invalid("the trust anchor is not a CA")
    if not root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
        raise _invalid("the trust anchor may not sign certificates")
    if not _is_p256(root.public_key()):
        raise _invalid("the trust anchor key is not P-256")
    # A corrupted or substituted root file shows here, before it is trusted for anything.
    if root.issuer != root.subject or not _signed_by(root, root):
        raise _invalid("the trust anchor is not a valid self-signed root")
    if not root.not_valid_before_utc <= at <= root.not_valid_after_utc:
        raise _invalid("the trust anchor is not valid at this time")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """ECDSA with SHA-256 by the issuer's key, and nothing else."""
    issuer_key = issuer.public_key()
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        return False
    if not isinstance(issuer_key, ec.EllipticCurvePublicKey):
        return False
    try:
        issuer_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(_SIGNATURE_HASH))
    except InvalidSignature:
        return False
    return True


def _check_usage(leaf: x509.Certificate, usage: Usage) -> None:
    key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    try:
        eku: x509.ExtendedKeyUsage | None = leaf.extensions.get_extension_for_class(
            x509.ExtendedKeyUsage
        ).value
    except x509.ExtensionNotFound:
        eku = None
    if usage == "sign":
        if key_usage != _SIGN_KEY_USAGE or eku is None or set(eku) != set(_SIGN_EKU):
            raise _invalid("the key usage does not match a signing certificate")
    # No EKU: an encryption certificate issued before the EKU was added (still valid for
    # sealing; never for TLS, see check_scheme_peer).
    elif key_usage != _ENCRYPT_KEY_USAGE or (eku is not None and set(eku) != set(_ENCRYPT_EKU)):
        raise _invalid("the key usage does not match an encryption certificate")


def _check_subject(leaf: x509.Certificate, role: Role, party_id: str) -> None:
    def only(oid: x509.ObjectIdentifier) -> str | bytes | None:
        values = leaf.subject.get_attributes_for_oid(oid)
        return values[0].value if len(values) == 1 else None

    if (
        only(NameOID.COMMON_NAME) != party_id
        or only(NameOID.ORGANIZATIONAL_UNIT_NAME) != role
        or only(NameOID.ORGANIZATION_NAME) != SCHEME_ORGANIZATION
    ):
        raise _invalid("the certificate subject does not match its identity")


def _identity_from_san(cert: x509.Certificate) -> tuple[Role, str, Usage]:
    """(role, party id, usage) from the one `urn:semops:` URI in the SAN."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = [
        uri
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(URI_PREFIX)
    ]
    if len(uris) != 1:
        raise _invalid("the certificate does not name exactly one SEMOPS party")
    parts = uris[0].removeprefix(URI_PREFIX).split(":")
    usage: Usage
    if len(parts) == 2:
        usage = "sign"
    elif len(parts) == 3 and parts[2] == _ENCRYPTION_URI_SUFFIX[1:]:
        usage = "encrypt"
    else:
        raise _invalid("the certificate party name is malformed")
    role_text, party_id = parts[0], parts[1]
    role = next((known for known in ROLES if known == role_text), None)
    if role is None or not _PARTY_ID_RE.fullmatch(party_id):
        raise _invalid("the certificate party name is malformed")
    return role, party_id, usage


def party_id_from_certificate(cert: x509.Certificate) -> tuple[Role, str]:
    """(role, party id) of the peer of a mutual-TLS connection, from its SAN URI.

    Call it only on a certificate the TLS layer has already verified against the scheme
    root (or after `validate_chain`): it reads the name, it does not judge the chain. An
    encryption certificate is refused, since it never authenticates a connection.
    """
    try:
        role, party_id, usage = _identity_from_san(cert)
    except (ValueError, x509.ExtensionNotFound):
        raise _invalid("the certificate cannot be read") from None
    if usage != "sign":
        raise _invalid("an encryption certificate does not identify a connection")
    return role, party_id


# --- Scheme ports and directories ---------------------------------------------------------


def check_scheme_peer(
    leaf: x509.Certificate,
    root: x509.Certificate,
    now: datetime,
    *,
    role: Role,
    revoked_serials: AbstractSet[int] = frozenset(),
) -> PartyIdentity:
    """Who the TLS client of a scheme port is, if it may connect there at all.

    OpenSSL has already checked the chain during the handshake; this is the scheme's own
    rule on top, the same at the router and at every processor: a certificate the root
    issued and that is valid now (checked again here: the handshake's check is OpenSSL's
    idea of validity, not ours), a *signing* certificate whose EKU allows clientAuth (never
    an encryption certificate, whatever OpenSSL made of it), of `role` (processors connect
    to the router; only the router connects to a processor), and not revoked by serial.
    """
    identity = validate_chain(leaf, root, now, expected_usage="sign")
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise SemopsError(E.TLS_PEER_NOT_ALLOWED, "the certificate is not for TLS clients")
    if identity.role != role:
        raise SemopsError(E.TLS_PEER_NOT_ALLOWED, f"only a {role} may connect to this port")
    if identity.serial in revoked_serials:
        raise SemopsError(E.CERTIFICATE_REVOKED)
    return identity


def certificate_key_record(
    owner: str, certificate: x509.Certificate, use: KeyUse
) -> PublicKeyRecord:
    """The key record a directory publishes for a certificate (kid = owner:thumbprint)."""
    jwk = public_jwk(certificate.public_key())  # type: ignore[arg-type]
    return PublicKeyRecord(
        kid=make_kid(owner, jwk),
        owner=owner,
        use=use,
        jwk=jwk,
        not_before=int(certificate.not_valid_before_utc.timestamp()),
        not_after=int(certificate.not_valid_after_utc.timestamp()),
    )


def serial_text(serial: int) -> str:
    """A certificate serial as the directory and the CLI write it: lower-case hex."""
    if not 0 < serial <= SERIAL_MAX:
        raise ValueError("a certificate serial is a positive number of at most 20 octets")
    return f"{serial:x}"


def parse_serial(text: str) -> int:
    """A serial written in hex (as `semops pki show` prints it), optionally with ':' or
    a 0x prefix; ValueError for anything else."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    if not cleaned or len(cleaned) > 40 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise ValueError("a serial is 1 to 40 hexadecimal digits")
    serial = int(cleaned, 16)
    serial_text(serial)  # the range check
    return serial


# --- PEM ----------------------------------------------------------------------------------


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8, unencrypted: the file holding it is 0600 (DESIGN.md §6)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_private_key_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key from unencrypted PEM; any other key is refused with ValueError."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _is_p256(key):
        raise ValueError("the private key is not an ECDSA P-256 key")
    return key


def load_certificate_pem(data: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(data)


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, as colon-separated upper-case hex (like openssl)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


__all__ = [
    "PARTY_ID_PATTERN",
    "ROLES",
    "SEMOPS_ENCRYPTION_EKU_OID",
    "SERIAL_MAX",
    "USAGES",
    "PartyIdentity",
    "Role",
    "Usage",
    "certificate_fingerprint",
    "certificate_key_record",
    "certificate_pem",
    "check_party_id",
    "check_scheme_peer",
    "issue_encryption_certificate",
    "issue_party_certificate",
    "load_certificate_pem",
    "load_private_key_pem",
    "make_root_ca",
    "network_names",
    "parse_serial",
    "party_id_from_certificate",
    "private_key_pem",
    "serial_text",
    "validate_chain",
]
