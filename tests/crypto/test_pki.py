"""The scheme PKI (pure): what a certificate holds, and every way validation says no."""

from __future__ import annotations

import ast
import inspect
import ipaddress
import ssl
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    DNSName,
    IPAddress,
    PolicyBuilder,
    Store,
    VerificationError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.core.errors import E, SemopsError
from semops.core.limits import (
    CERT_SAN_NAMES_MAX,
    CLOCK_SKEW_MAX_S,
    PARTY_CERT_VALIDITY_DAYS,
    ROOT_CERT_VALIDITY_DAYS,
)
from semops.crypto import pki

SHA256 = hashes.SHA256()
NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=UTC)
ROOT_KEY = ec.derive_private_key(0x5EED_0001, ec.SECP256R1())
OTHER_ROOT_KEY = ec.derive_private_key(0x5EED_0002, ec.SECP256R1())
PARTY_KEY = ec.derive_private_key(0x5EED_0003, ec.SECP256R1())
PARTY_ENC_KEY = ec.derive_private_key(0x5EED_0004, ec.SECP256R1())
ROUTER_KEY = ec.derive_private_key(0x5EED_0005, ec.SECP256R1())
P384_KEY = ec.derive_private_key(0x5EED_0006, ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

ROOT = pki.make_root_ca(ROOT_KEY, "SEMOPS Root CA", NOW, serial=1)
# Same name, different key: only the signature tells them apart.
IMPOSTOR_ROOT = pki.make_root_ca(OTHER_ROOT_KEY, "SEMOPS Root CA", NOW, serial=1)
OTHER_ROOT = pki.make_root_ca(OTHER_ROOT_KEY, "Other Scheme Root", NOW, serial=2)


def issue_sign(
    party_id: str = "bank-a",
    role: pki.Role = "processor",
    *,
    key: ec.EllipticCurvePrivateKey = PARTY_KEY,
    ca_key: ec.EllipticCurvePrivateKey = ROOT_KEY,
    ca_cert: x509.Certificate = ROOT,
    now: datetime = NOW,
) -> x509.Certificate:
    return pki.issue_party_certificate(
        ca_key, ca_cert, key.public_key(), party_id, role, now, serial=1000
    )


def issue_enc(party_id: str = "bank-a", role: pki.Role = "processor") -> x509.Certificate:
    return pki.issue_encryption_certificate(
        ROOT_KEY, ROOT, PARTY_ENC_KEY.public_key(), party_id, role, NOW, serial=1001
    )


def refused(leaf: x509.Certificate, root: x509.Certificate = ROOT, **kwargs: object) -> str:
    """validate_chain must refuse with the one opaque code; returns the detail."""
    now = kwargs.pop("now", NOW)
    assert isinstance(now, datetime)
    with pytest.raises(SemopsError) as caught:
        pki.validate_chain(leaf, root, now, **kwargs)  # type: ignore[arg-type]
    assert caught.value.spec is E.CERTIFICATE_INVALID
    assert "PRIVATE" not in caught.value.detail
    return caught.value.detail


def hand_made(
    *,
    key: object = PARTY_KEY.public_key(),
    uri: str = "urn:semops:processor:bank-a",
    key_usage: x509.KeyUsage | None = None,
    eku: bool = True,
    ca: bool = False,
    hash_algorithm: hashes.HashAlgorithm = SHA256,
    subject_cn: str = "bank-a",
    extra: x509.ExtensionType | None = None,
    issuer_key_id_from: ec.EllipticCurvePrivateKey = ROOT_KEY,
) -> x509.Certificate:
    """A certificate signed by the real root but built without the issuing recipe."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SEMOPS"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "processor"),
                ]
            )
        )
        .issuer_name(ROOT.subject)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(77)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            key_usage or pki._SIGN_KEY_USAGE,
            critical=True,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.UniformResourceIdentifier(uri)]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key_id_from.public_key()),
            critical=False,
        )
    )
    if eku:
        builder = builder.add_extension(pki._SIGN_EKU, critical=False)
    if extra is not None:
        builder = builder.add_extension(extra, critical=True)
    return builder.sign(ROOT_KEY, hash_algorithm)


# --- The root -----------------------------------------------------------------------------


def test_root_is_a_self_signed_ca_with_pathlen_zero_for_ten_years() -> None:
    assert ROOT.issuer == ROOT.subject
    constraints = ROOT.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ROOT.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = ROOT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ROOT_KEY.public_key())
    assert ROOT.not_valid_after_utc == NOW + timedelta(days=ROOT_CERT_VALIDITY_DAYS)
    assert ROOT.not_valid_before_utc == NOW - timedelta(seconds=CLOCK_SKEW_MAX_S)
    ROOT.verify_directly_issued_by(ROOT)


def test_root_refuses_keys_other_than_p256() -> None:
    for key in (P384_KEY, RSA_KEY):
        with pytest.raises(ValueError, match="P-256"):
            pki.make_root_ca(key, "Root", NOW, serial=1)  # type: ignore[arg-type]


def test_root_refuses_naive_time_and_bad_names() -> None:
    with pytest.raises(ValueError, match="timezone"):
        pki.make_root_ca(ROOT_KEY, "Root", datetime(2030, 1, 1), serial=1)  # noqa: DTZ001
    for name in ("", "x" * 65, "two\nlines"):
        with pytest.raises(ValueError, match="root name"):
            pki.make_root_ca(ROOT_KEY, name, NOW, serial=1)


# --- Issuing ------------------------------------------------------------------------------


def test_signing_certificate_contents() -> None:
    cert = pki.issue_party_certificate(
        ROOT_KEY,
        ROOT,
        PARTY_KEY.public_key(),
        "bank-a",
        "processor",
        NOW,
        serial=4242,
        hostnames=["bank-a.example", "LOCALHOST"],
        ip_addresses=["127.0.0.1", "::1"],
    )
    assert cert.serial_number == 4242
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "bank-a"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "SEMOPS"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == (
        "processor"
    )
    assert cert.issuer == ROOT.subject
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["bank-a.example", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "urn:semops:processor:bank-a"
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not usage.value.key_agreement and not usage.value.key_cert_sign
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ROOT.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value == (
        x509.SubjectKeyIdentifier.from_public_key(PARTY_KEY.public_key())
    )
    assert cert.not_valid_after_utc == NOW + timedelta(days=PARTY_CERT_VALIDITY_DAYS)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_encryption_certificate_is_key_agreement_only() -> None:
    cert = issue_enc()
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement and not usage.digital_signature
    # Its only EKU is SEMOPS's own: no serverAuth or clientAuth, so never a TLS certificate.
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [pki.SEMOPS_ENCRYPTION_EKU_OID]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier("urn:semops:processor:bank-a:enc")]


def test_party_certificate_never_outlives_the_root() -> None:
    late = ROOT.not_valid_after_utc - timedelta(days=10)
    cert = issue_sign(now=late)
    assert cert.not_valid_after_utc == ROOT.not_valid_after_utc


def test_issuing_time_is_truncated_and_backdated_for_clock_skew() -> None:
    cert = issue_sign(now=NOW.replace(microsecond=999_999))
    assert cert.not_valid_before_utc == NOW - timedelta(seconds=CLOCK_SKEW_MAX_S)
    # A non-UTC offset means the same instant.
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert issue_sign(now=plus_two).not_valid_before_utc == cert.not_valid_before_utc


@pytest.mark.parametrize(
    "key",
    [P384_KEY.public_key(), RSA_KEY.public_key()],
    ids=["p384", "rsa"],
)
def test_issuing_refuses_subject_keys_other_than_p256(key: object) -> None:
    with pytest.raises(ValueError, match="P-256"):
        pki.issue_party_certificate(
            ROOT_KEY,
            ROOT,
            key,  # type: ignore[arg-type]
            "bank-a",
            "processor",
            NOW,
            serial=1,
        )
    with pytest.raises(ValueError, match="P-256"):
        pki.issue_encryption_certificate(
            ROOT_KEY,
            ROOT,
            key,  # type: ignore[arg-type]
            "bank-a",
            "processor",
            NOW,
            serial=1,
        )


def test_issuing_refuses_a_ca_key_that_is_not_the_ca_certificates() -> None:
    with pytest.raises(ValueError, match="does not belong"):
        issue_sign(ca_key=OTHER_ROOT_KEY)


def test_issuing_refuses_a_participant_certificate_as_ca() -> None:
    with pytest.raises(ValueError, match="not a CA"):
        issue_sign(ca_key=PARTY_KEY, ca_cert=issue_sign(), key=ROUTER_KEY)


def test_issuing_refuses_an_expired_or_future_ca() -> None:
    with pytest.raises(ValueError, match="not valid now"):
        issue_sign(now=ROOT.not_valid_after_utc + timedelta(seconds=1))
    with pytest.raises(ValueError, match="not valid now"):
        issue_sign(now=NOW - timedelta(days=1))


def test_issuing_refuses_unknown_roles() -> None:
    with pytest.raises(ValueError, match="role"):
        issue_sign(role="merchant")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "party_id",
    ["a", "", "Bank-a", "bank_a", "bank a", "-bank", "bank-", "b" * 33, "bänk", "bank-a\n"],
)
def test_bad_party_ids_are_refused(party_id: str) -> None:
    with pytest.raises(SemopsError) as caught:
        pki.check_party_id(party_id)
    assert caught.value.spec is E.VALIDATION_FAILED
    with pytest.raises(SemopsError):
        issue_sign(party_id)


@pytest.mark.parametrize("party_id", ["ab", "bank-a", "mno-2", "0x", "a" * 32, "a--b"])
def test_good_party_ids_are_accepted(party_id: str) -> None:
    assert pki.check_party_id(party_id) == party_id


@pytest.mark.parametrize(
    ("hostnames", "ip_addresses", "message"),
    [
        (["*.example"], [], "host name"),
        (["bad_name.example"], [], "host name"),
        (["-lead.example"], [], "host name"),
        ([""], [], "host name"),
        (["a" * 64 + ".example"], [], "host name"),
        ([], ["1.2.3"], "IP address"),
        ([], ["localhost"], "IP address"),
        ([f"h{i}.example" for i in range(CERT_SAN_NAMES_MAX)], ["127.0.0.1"], "at most"),
    ],
)
def test_bad_network_names_are_refused(
    hostnames: list[str], ip_addresses: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pki.issue_party_certificate(
            ROOT_KEY,
            ROOT,
            PARTY_KEY.public_key(),
            "bank-a",
            "processor",
            NOW,
            serial=1,
            hostnames=hostnames,
            ip_addresses=ip_addresses,
        )


# --- Validating: the good paths -----------------------------------------------------------


def test_signing_chain_validates() -> None:
    identity = pki.validate_chain(issue_sign(), ROOT, NOW)
    assert identity == pki.PartyIdentity(
        party_id="bank-a",
        role="processor",
        usage="sign",
        not_after=NOW + timedelta(days=PARTY_CERT_VALIDITY_DAYS),
        serial=1000,
    )


def test_encryption_chain_validates() -> None:
    identity = pki.validate_chain(
        issue_enc("router", "router"),
        ROOT,
        NOW,
        expected_party="router",
        expected_usage="encrypt",
    )
    assert (identity.party_id, identity.role, identity.usage) == ("router", "router", "encrypt")


def test_validation_holds_on_both_edges_of_the_window() -> None:
    cert = issue_sign()
    pki.validate_chain(cert, ROOT, cert.not_valid_before_utc)
    pki.validate_chain(cert, ROOT, cert.not_valid_after_utc)


@settings(max_examples=25, deadline=None)
@given(
    party_id=st.from_regex(pki.PARTY_ID_PATTERN, fullmatch=True),
    role=st.sampled_from(pki.ROLES),
)
def test_every_valid_party_id_round_trips(party_id: str, role: pki.Role) -> None:
    cert = issue_sign(party_id, role)
    identity = pki.validate_chain(cert, ROOT, NOW, expected_party=party_id)
    assert (identity.role, identity.party_id) == (role, party_id)
    assert pki.party_id_from_certificate(cert) == (role, party_id)


# --- Validating: every way to say no ------------------------------------------------------


def test_certificate_from_another_root_is_refused() -> None:
    stranger = issue_sign(ca_key=OTHER_ROOT_KEY, ca_cert=OTHER_ROOT)
    assert "not issued by the scheme root" in refused(stranger)


def test_certificate_from_a_same_named_impostor_root_is_refused() -> None:
    impostor = issue_sign(ca_key=OTHER_ROOT_KEY, ca_cert=IMPOSTOR_ROOT)
    assert impostor.issuer == ROOT.subject
    refused(impostor)


def test_impostor_signature_with_forged_key_identifier_is_refused() -> None:
    """Same issuer name and AKI as the real root: only the signature catches it."""
    forged = (
        x509.CertificateBuilder()
        .subject_name(issue_sign().subject)
        .issuer_name(ROOT.subject)
        .public_key(PARTY_KEY.public_key())
        .serial_number(5)
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(pki._SIGN_KEY_USAGE, critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("urn:semops:processor:bank-a")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ROOT_KEY.public_key()),
            critical=False,
        )
        .add_extension(pki._SIGN_EKU, critical=False)
        .sign(OTHER_ROOT_KEY, hashes.SHA256())
    )
    assert "signature" in refused(forged)


def test_certificate_naming_another_issuer_key_is_refused() -> None:
    """Signed by the root, but its AKI points at another key: the chain is inconsistent."""
    assert "not issued by the scheme root" in refused(hand_made(issuer_key_id_from=OTHER_ROOT_KEY))


def test_expired_certificate_is_refused() -> None:
    cert = issue_sign()
    assert "not valid at this time" in refused(
        cert, now=cert.not_valid_after_utc + timedelta(seconds=1)
    )


def test_not_yet_valid_certificate_is_refused() -> None:
    cert = issue_sign(now=NOW + timedelta(days=2))
    assert "not valid at this time" in refused(cert, now=NOW + timedelta(days=1))


def test_expired_or_future_root_is_refused() -> None:
    cert = issue_sign()
    assert "trust anchor" in refused(cert, now=ROOT.not_valid_after_utc + timedelta(seconds=1))
    assert "trust anchor" in refused(cert, now=ROOT.not_valid_before_utc - timedelta(seconds=1))


def test_tampered_identity_is_refused() -> None:
    """Rewrite bank-a as bank-b everywhere in the signed part: still parses, must not pass."""
    der = issue_sign().public_bytes(serialization.Encoding.DER)
    assert der.count(b"bank-a") == 2  # CN and SAN URI
    tampered = x509.load_der_x509_certificate(der.replace(b"bank-a", b"bank-b"))
    assert tampered.tbs_certificate_bytes != issue_sign().tbs_certificate_bytes
    assert pki.party_id_from_certificate(tampered) == ("processor", "bank-b")
    assert "signature" in refused(tampered)


def test_flipped_byte_in_the_signed_validity_is_refused() -> None:
    cert = issue_sign()
    der = bytearray(cert.public_bytes(serialization.Encoding.DER))
    # Extend not_after by a decade: "31..." -> "41..." in the UTCTime/GeneralizedTime.
    not_after = cert.not_valid_after_utc.strftime("%y%m%d%H%M%SZ").encode()
    at = bytes(der).index(not_after)
    der[at] += 1
    tampered = x509.load_der_x509_certificate(bytes(der))
    assert tampered.not_valid_after_utc > cert.not_valid_after_utc
    assert "signature" in refused(tampered)


def test_flipped_byte_in_the_signature_is_refused() -> None:
    der = bytearray(issue_sign().public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # last byte of the signature's s integer
    assert "signature" in refused(x509.load_der_x509_certificate(bytes(der)))


def test_tampered_root_is_refused() -> None:
    der = bytearray(ROOT.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    broken_root = x509.load_der_x509_certificate(bytes(der))
    assert "trust anchor" in refused(issue_sign(), broken_root)


def test_participant_certificate_is_not_a_trust_anchor() -> None:
    assert "trust anchor" in refused(issue_sign(), issue_sign())


def test_ca_certificate_is_not_a_participant() -> None:
    assert "CA" in refused(ROOT)
    assert "CA" in refused(hand_made(ca=True))


def test_p384_leaf_key_is_refused() -> None:
    assert "P-256" in refused(hand_made(key=P384_KEY.public_key()))


def test_rsa_leaf_key_is_refused() -> None:
    assert "P-256" in refused(hand_made(key=RSA_KEY.public_key()))


def test_signature_hash_other_than_sha256_is_refused() -> None:
    assert "signature" in refused(hand_made(hash_algorithm=hashes.SHA384()))


def test_hand_made_but_correct_certificate_passes() -> None:
    """The control for the hand-made refusals above: only the one changed field fails."""
    assert pki.validate_chain(hand_made(), ROOT, NOW).party_id == "bank-a"


def test_wrong_expected_usage_is_refused() -> None:
    assert "signing, not encrypting" in refused(issue_sign(), expected_usage="encrypt")
    assert "encrypting, not signing" in refused(issue_enc(), expected_usage="sign")


def test_usage_must_match_the_name() -> None:
    # Says "sign" in its name but is a key-agreement key.
    assert "key usage" in refused(hand_made(key_usage=pki._ENCRYPT_KEY_USAGE))
    # Says "enc" but is a signing key with TLS usages.
    assert "key usage" in refused(hand_made(uri="urn:semops:processor:bank-a:enc"))
    # A signing certificate without serverAuth/clientAuth is not for mutual TLS.
    assert "key usage" in refused(hand_made(eku=False))
    # A signing key that may also sign certificates is refused even though CA is false.
    ca_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    assert "key usage" in refused(hand_made(key_usage=ca_usage))


def test_expected_party_mismatch_is_refused() -> None:
    assert "another party" in refused(issue_sign("bank-a"), expected_party="bank-b")


@pytest.mark.parametrize(
    "uri",
    [
        "urn:semops:merchant:bank-a",
        "urn:semops:processor:Bank-A",
        "urn:semops:processor",
        "urn:semops:processor:bank-a:sig",
        "urn:semops:processor:bank-a:enc:x",
        "https://bank-a.example",
    ],
)
def test_malformed_identity_is_refused(uri: str) -> None:
    refused(hand_made(uri=uri))
    with pytest.raises(SemopsError):
        pki.party_id_from_certificate(hand_made(uri=uri))


def test_subject_must_agree_with_the_identity() -> None:
    assert "subject" in refused(hand_made(subject_cn="bank-b"))


def test_unknown_critical_extension_is_refused() -> None:
    extra = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    assert "critical extension" in refused(hand_made(extra=extra))


def test_naive_time_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone"):
        pki.validate_chain(issue_sign(), ROOT, datetime(2030, 6, 1))  # noqa: DTZ001


# --- Interoperability: real X.509 path validation and a real mutual-TLS handshake ---------


def test_tls_certificate_passes_cryptography_server_and_client_verification() -> None:
    leaf = issue_sign()
    builder = PolicyBuilder().store(Store([ROOT])).time(NOW)
    for name in (DNSName("localhost"), IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = builder.build_server_verifier(name).verify(leaf, [])
        assert chain == [leaf, ROOT]
    client = builder.build_client_verifier().verify(leaf, [])
    assert client.chain == [leaf, ROOT]
    assert x509.UniformResourceIdentifier("urn:semops:processor:bank-a") in (client.subjects or [])


def test_server_verification_fails_for_another_host_or_root() -> None:
    leaf = issue_sign()
    builder = PolicyBuilder().store(Store([ROOT])).time(NOW)
    with pytest.raises(VerificationError):
        builder.build_server_verifier(DNSName("evil.example")).verify(leaf, [])
    stranger = issue_sign(ca_key=OTHER_ROOT_KEY, ca_cert=IMPOSTOR_ROOT)
    with pytest.raises(VerificationError):
        builder.build_client_verifier().verify(stranger, [])


def _tls_files(
    tmp_path: Path, root: x509.Certificate, name: str, key: ec.EllipticCurvePrivateKey
) -> tuple[str, str]:
    key_file, cert_file = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    key_file.write_bytes(pki.private_key_pem(key))
    role: pki.Role = "router" if name == "router" else "processor"
    cert = pki.issue_party_certificate(
        ROOT_KEY, root, key.public_key(), name, role, datetime.now(UTC), serial=9
    )
    cert_file.write_bytes(pki.certificate_pem(cert))
    return str(cert_file), str(key_file)


def test_mutual_tls_handshake_identifies_both_ends(tmp_path: Path) -> None:
    """OpenSSL, not just our validator, accepts the certificates on both ends."""
    # OpenSSL checks validity against the real clock, so this root starts today.
    root = pki.make_root_ca(ROOT_KEY, "SEMOPS Root CA", datetime.now(UTC), serial=1)
    root_file = tmp_path / "root-ca.crt"
    root_file.write_bytes(pki.certificate_pem(root))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(*_tls_files(tmp_path, root, "router", ROUTER_KEY))
    server_ctx.load_verify_locations(cafile=root_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_cert_chain(*_tls_files(tmp_path, root, "bank-a", PARTY_KEY))
    client_ctx.load_verify_locations(cafile=root_file)
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    for _ in range(10):
        for side, conn in (("client", client), ("server", server)):
            if not done[side]:
                try:
                    conn.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    # TLS 1.3 sends the client certificate after the server finishes; drain one record.
    client.write(b"ping")
    server_in.write(client_out.read())
    assert server.read(4) == b"ping"
    peer_der = server.getpeercert(binary_form=True)
    assert peer_der is not None
    assert pki.party_id_from_certificate(x509.load_der_x509_certificate(peer_der)) == (
        "processor",
        "bank-a",
    )
    router_der = client.getpeercert(binary_form=True)
    assert router_der is not None
    assert pki.party_id_from_certificate(x509.load_der_x509_certificate(router_der)) == (
        "router",
        "router",
    )


def test_party_id_from_certificate_refuses_encryption_certificates() -> None:
    with pytest.raises(SemopsError) as caught:
        pki.party_id_from_certificate(issue_enc())
    assert caught.value.spec is E.CERTIFICATE_INVALID


def test_party_id_from_certificate_refuses_a_certificate_without_identity() -> None:
    with pytest.raises(SemopsError) as caught:
        pki.party_id_from_certificate(ROOT)
    assert caught.value.spec is E.CERTIFICATE_INVALID


# --- PEM ----------------------------------------------------------------------------------


def test_pem_round_trips() -> None:
    pem = pki.private_key_pem(PARTY_KEY)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, not encrypted
    loaded = pki.load_private_key_pem(pem)
    assert loaded.private_numbers() == PARTY_KEY.private_numbers()
    cert = issue_sign()
    assert pki.load_certificate_pem(pki.certificate_pem(cert)) == cert


@pytest.mark.parametrize("key", [P384_KEY, RSA_KEY], ids=["p384", "rsa"])
def test_loading_refuses_private_keys_other_than_p256(key: object) -> None:
    pem = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="P-256"):
        pki.load_private_key_pem(pem)


def test_loading_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        pki.load_private_key_pem(b"not a key")
    with pytest.raises(ValueError):
        pki.load_certificate_pem(b"not a certificate")


def test_fingerprint_is_sha256_of_der() -> None:
    cert = issue_sign()
    expected = cert.fingerprint(hashes.SHA256()).hex().upper()
    assert pki.certificate_fingerprint(cert).replace(":", "") == expected


# --- Purity -------------------------------------------------------------------------------


def test_the_module_reads_no_clock_files_or_randomness() -> None:
    tree = ast.parse(inspect.getsource(pki))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert imported.isdisjoint({"os", "io", "time", "random", "secrets", "socket", "pathlib"})
    called = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert called.isdisjoint(
        {"now", "utcnow", "today", "random_serial_number", "generate_private_key", "open"}
    )
