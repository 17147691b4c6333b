"""What a scheme port accepts as its TLS client (crypto/pki.py `check_scheme_peer`), and
what OpenSSL itself already refuses at the handshake.

Issue 11 found every scheme-root certificate accepted as a TLS client, the encryption-only
one included, and a processor able to call another processor's scheme port. Now only a
signing certificate with EKU clientAuth, of the role the port serves, and not revoked by
serial, is a scheme peer; an encryption certificate carries an EKU of its own that keeps
OpenSSL from using it for TLS at all, and one issued before that EKU is refused by the
scheme check instead. TLS 1.2 is not offered on either side.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from semops.core.errors import E, SemopsError
from semops.crypto import KeyUse, make_kid, pki, public_jwk
from semops.service.tls import TlsFiles, client_context

NOW = datetime.now(UTC).replace(microsecond=0)  # OpenSSL checks against the real clock
ROOT_KEY = ec.derive_private_key(0x5EED_1001, ec.SECP256R1())
ROOT = pki.make_root_ca(ROOT_KEY, "SEMOPS Root CA", NOW, serial=1)
BANK_KEY = ec.derive_private_key(0x5EED_1002, ec.SECP256R1())
BANK_ENC_KEY = ec.derive_private_key(0x5EED_1003, ec.SECP256R1())
ROUTER_KEY = ec.derive_private_key(0x5EED_1004, ec.SECP256R1())


def sign_cert(
    party: str = "bank-a", role: pki.Role = "processor", serial: int = 100
) -> x509.Certificate:
    key = ROUTER_KEY if role == "router" else BANK_KEY
    return pki.issue_party_certificate(ROOT_KEY, ROOT, key.public_key(), party, role, NOW, serial)


def enc_cert(party: str = "bank-a", serial: int = 101) -> x509.Certificate:
    return pki.issue_encryption_certificate(
        ROOT_KEY, ROOT, BANK_ENC_KEY.public_key(), party, "processor", NOW, serial
    )


def legacy_enc_cert(party: str = "bank-a", serial: int = 102) -> x509.Certificate:
    """An encryption certificate as issued before it carried an EKU (old data dirs)."""
    usage = x509.KeyUsage(
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
    public = BANK_ENC_KEY.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, party),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SEMOPS"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "processor"),
                ]
            )
        )
        .issuer_name(ROOT.subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:semops:processor:{party}:enc")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ROOT_KEY.public_key()),
            critical=False,
        )
        .sign(ROOT_KEY, hashes.SHA256())
    )


def refused(cert: x509.Certificate, **kwargs: object) -> SemopsError:
    role = kwargs.pop("role", "processor")
    with pytest.raises(SemopsError) as caught:
        pki.check_scheme_peer(cert, ROOT, NOW, role=role, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- the scheme's rule ----------------------------------------------------------------------


def test_a_processor_signing_certificate_is_a_peer_of_the_router() -> None:
    identity = pki.check_scheme_peer(sign_cert(), ROOT, NOW, role="processor")
    assert (identity.party_id, identity.role, identity.usage, identity.serial) == (
        "bank-a",
        "processor",
        "sign",
        100,
    )


def test_only_the_router_is_a_peer_of_a_processor() -> None:
    assert pki.check_scheme_peer(sign_cert("router", "router"), ROOT, NOW, role="router")
    error = refused(sign_cert(), role="router")
    assert error.spec is E.TLS_PEER_NOT_ALLOWED


def test_an_encryption_certificate_is_never_a_peer() -> None:
    for cert in (enc_cert(), legacy_enc_cert()):
        assert refused(cert).spec is E.CERTIFICATE_INVALID


def test_a_revoked_serial_is_refused() -> None:
    error = refused(sign_cert(serial=4242), revoked_serials=frozenset({4242}))
    assert error.spec is E.CERTIFICATE_REVOKED
    pki.check_scheme_peer(sign_cert(), ROOT, NOW, role="processor", revoked_serials={4242})


def test_an_expired_or_foreign_certificate_is_refused() -> None:
    later = NOW + timedelta(days=400)
    with pytest.raises(SemopsError) as caught:
        pki.check_scheme_peer(sign_cert(), ROOT, later, role="processor")
    assert caught.value.spec is E.CERTIFICATE_INVALID
    other_root = pki.make_root_ca(ROUTER_KEY, "Other Root", NOW, serial=1)
    with pytest.raises(SemopsError):
        pki.check_scheme_peer(sign_cert(), other_root, NOW, role="processor")


def test_encryption_certificates_old_and_new_still_serve_for_sealing() -> None:
    for cert in (enc_cert(), legacy_enc_cert()):
        identity = pki.validate_chain(cert, ROOT, NOW, expected_usage="encrypt")
        assert identity.usage == "encrypt"


def test_an_encryption_certificate_with_a_tls_eku_is_refused() -> None:
    """Neither the old form (no EKU) nor the new one (SEMOPS's own EKU) may be mixed with a
    TLS usage: a key agreement key with clientAuth is not an encryption certificate."""
    builder_cert = legacy_enc_cert()
    eku = x509.ExtendedKeyUsage([pki.SEMOPS_ENCRYPTION_EKU_OID, ExtendedKeyUsageOID.CLIENT_AUTH])
    mixed = (
        x509.CertificateBuilder()
        .subject_name(builder_cert.subject)
        .issuer_name(ROOT.subject)
        .public_key(BANK_ENC_KEY.public_key())
        .serial_number(103)
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=30))
    )
    for extension in builder_cert.extensions:
        mixed = mixed.add_extension(extension.value, critical=extension.critical)
    mixed = mixed.add_extension(eku, critical=False)
    with pytest.raises(SemopsError) as caught:
        pki.validate_chain(mixed.sign(ROOT_KEY, hashes.SHA256()), ROOT, NOW)
    assert "key usage" in caught.value.detail


def test_the_key_record_of_a_certificate_is_the_directorys() -> None:
    record = pki.certificate_key_record("bank-a", sign_cert(), KeyUse.SIGN)
    assert record.kid == make_kid("bank-a", public_jwk(BANK_KEY.public_key()))
    assert record.not_after == int(sign_cert().not_valid_after_utc.timestamp())


def test_serials_are_written_in_hex_and_read_back() -> None:
    assert pki.serial_text(0xA0C3) == "a0c3"
    assert pki.parse_serial("A0:C3") == pki.parse_serial("0xa0c3") == 0xA0C3
    for bad in ("", "0", "xyz", "1" * 41, "-1"):
        with pytest.raises(ValueError):
            pki.parse_serial(bad)
    with pytest.raises(ValueError):
        pki.serial_text(pki.SERIAL_MAX + 1)


# --- what OpenSSL does at the handshake -----------------------------------------------------


def _files(tmp_path: Path, name: str, cert: x509.Certificate, key: object) -> TlsFiles:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "c.crt").write_bytes(pki.certificate_pem(cert))
    (folder / "c.key").write_bytes(pki.private_key_pem(key))  # type: ignore[arg-type]
    (folder / "root.crt").write_bytes(pki.certificate_pem(ROOT))
    return TlsFiles(folder / "c.crt", folder / "c.key", folder / "root.crt")


def _server_context(files: TlsFiles) -> ssl.SSLContext:
    """The scheme server's context, built as uvicorn builds it from server_options."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(files.certificate), str(files.private_key))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(str(files.root_ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes | None:
    """The client certificate (DER) the server saw, or None if the handshake failed."""
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(server_in, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_in, client_out, server_hostname="localhost")
    done = {"server": False, "client": False}
    try:
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
        # TLS 1.3 sends the client certificate after the server finished: one record more.
        client.write(b"ping")
        server_in.write(client_out.read())
        assert server.read(4) == b"ping"
    except ssl.SSLError:
        return None
    return server.getpeercert(binary_form=True)


def test_openssl_refuses_an_encryption_certificate_as_a_tls_client(tmp_path: Path) -> None:
    server = _server_context(_files(tmp_path, "router", sign_cert("router", "router"), ROUTER_KEY))
    good = client_context(_files(tmp_path, "bank", sign_cert(), BANK_KEY))
    assert handshake(server, good) is not None
    # The encryption key signs the handshake, but its certificate's EKU is not clientAuth.
    enc = client_context(_files(tmp_path, "enc", enc_cert(), BANK_ENC_KEY))
    assert handshake(server, enc) is None
    # One issued before that EKU gets through OpenSSL: the scheme check stops it.
    legacy = client_context(_files(tmp_path, "legacy", legacy_enc_cert(), BANK_ENC_KEY))
    der = handshake(server, legacy)
    assert der is not None
    with pytest.raises(SemopsError):
        pki.check_scheme_peer(x509.load_der_x509_certificate(der), ROOT, NOW, role="processor")


def test_a_tls_1_2_client_is_refused_and_our_clients_never_offer_it(tmp_path: Path) -> None:
    server = _server_context(_files(tmp_path, "router", sign_cert("router", "router"), ROUTER_KEY))
    bank = _files(tmp_path, "bank", sign_cert(), BANK_KEY)
    old = client_context(bank)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(server, old) is None
    assert client_context(bank).minimum_version is ssl.TLSVersion.TLSv1_3
