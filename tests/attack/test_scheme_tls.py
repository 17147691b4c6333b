"""Scheme TLS accepts only the right certificates (issue 11, lower findings; DESIGN.md §6).

The attack found every scheme-root certificate accepted for TLS client auth, the
encryption-only one included; a processor able to connect to another processor's scheme
port; TLS 1.2 still offering CBC suites; and no way to refuse a leaked certificate. Here,
over the real processes: an encryption certificate cannot connect (OpenSSL refuses one of
today's at the handshake, the scheme check one issued before its EKU existed); a processor
certificate is refused at another processor's scheme port; TLS 1.2 is refused at both kinds
of scheme port; a revoked serial is refused at TLS; a participant's certificate cannot be
used to speak for another participant, nor to read another's transfers.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from semops.audit.report import SettlementQuery
from semops.crypto import sign_message
from semops.crypto.pki import (
    certificate_pem,
    load_certificate_pem,
    load_private_key_pem,
    serial_text,
)
from semops.service.files import write_secret
from semops.service.tls import TlsFiles, client_context
from tests.attack.attacker import processor_keys
from tests.attack.certificates import issue, serial_of
from tests.attack.conftest import Scene
from tests.attack.flows import refund_of, routed_payment
from tests.attack.test_router_participants import (
    directory_of,
    own_tls,
    router_call,
    scheme_call,
    semops_router,
)

pytestmark = pytest.mark.timeout(300)

REFUSED_AT_HANDSHAKE: Final = (httpx.TransportError, ssl.SSLError, ConnectionError)


def scheme_url(scene: Scene, processor_id: str, path: str) -> str:
    return f"https://127.0.0.1:{scene.layout.ports[f'{processor_id}-scheme']}{path}"


def encryption_tls(folder: Path, party: str) -> TlsFiles:
    """A participant's encryption certificate and key, presented as a TLS identity."""
    return TlsFiles(
        folder / f"{party}.enc.crt", folder / f"{party}.enc.key", folder / "root-ca.crt"
    )


def legacy_encryption_tls(scene: Scene, party: str, out: Path) -> TlsFiles:
    """The participant's encryption key with a certificate as issued before encryption
    certificates carried an EKU (an old data directory): OpenSSL takes it for TLS."""
    folder = scene.data_dir / party
    enc_cert = load_certificate_pem((folder / f"{party}.enc.crt").read_bytes())
    root_key = load_private_key_pem((scene.data_dir / "pki" / "root-ca.key").read_bytes())
    root = load_certificate_pem((scene.data_dir / "pki" / "root-ca.crt").read_bytes())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(enc_cert.subject)
        .issuer_name(root.subject)
        .public_key(enc_cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
    )
    for extension in enc_cert.extensions:
        if not isinstance(extension.value, x509.ExtendedKeyUsage):
            builder = builder.add_extension(extension.value, critical=extension.critical)
    legacy = builder.sign(root_key, hashes.SHA256())
    assert legacy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == party
    out.mkdir(parents=True, exist_ok=True)
    (out / "legacy.enc.crt").write_bytes(certificate_pem(legacy))
    write_secret(out / "legacy.enc.key", (folder / f"{party}.enc.key").read_bytes())
    (out / "root-ca.crt").write_bytes(certificate_pem(root))
    return TlsFiles(out / "legacy.enc.crt", out / "legacy.enc.key", out / "root-ca.crt")


def test_an_encryption_certificate_is_refused_as_a_tls_client(scene: Scene) -> None:
    before = scene.quiet()
    router_directory = scene.layout.router_url() + "/v1/directory"
    mno_b_status = scheme_url(scene, "mno-b", "/v1/scheme/status")
    # Today's encryption certificates: OpenSSL refuses them at the handshake (their EKU).
    for files, url in (
        (encryption_tls(scene.data_dir / "bank-a", "bank-a"), router_directory),
        (encryption_tls(scene.data_dir / "router", "router"), mno_b_status),
    ):
        with pytest.raises(REFUSED_AT_HANDSHAKE):
            scheme_call(files, "GET", url)
    # One issued before that EKU gets through OpenSSL; the scheme's own check refuses it.
    legacy = legacy_encryption_tls(scene, "bank-a", scene.data_dir / "attacker" / "legacy-a")
    answer = scheme_call(legacy, "GET", router_directory)
    assert (answer.status, answer.code) == (401, "certificate_invalid"), answer.body
    legacy = legacy_encryption_tls(scene, "router", scene.data_dir / "attacker" / "legacy-r")
    answer = scheme_call(legacy, "POST", mno_b_status, scene.early.status_push)
    assert (answer.status, answer.code) == (401, "certificate_invalid"), answer.body
    scene.assert_unchanged(before)


def test_a_processor_cannot_call_another_processors_scheme_port(scene: Scene) -> None:
    before = scene.quiet()
    bank_a = own_tls(scene, "bank-a")
    for path, token in (
        ("/v1/scheme/transfers", scene.early.routed),  # a captured routed prepare
        ("/v1/scheme/status", scene.early.status_push),
    ):
        answer = scheme_call(bank_a, "POST", scheme_url(scene, "mno-b", path), token)
        assert (answer.status, answer.code) == (403, "tls_peer_not_allowed"), answer.body
    answer = scheme_call(bank_a, "GET", scheme_url(scene, "mno-b", "/healthz"))
    assert (answer.status, answer.code) == (403, "tls_peer_not_allowed")
    # The router itself still gets through (the status it pushed once is acknowledged).
    router = own_tls(scene, "router")
    url = scheme_url(scene, "mno-b", "/v1/scheme/status")
    assert scheme_call(router, "POST", url, scene.early.status_push).status == 204
    scene.assert_unchanged(before)


def _handshake_version(files: TlsFiles, port: int, *, tls12_only: bool = False) -> str:
    context = client_context(files)
    if tls12_only:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = tls.recv(64)  # TLS 1.3: a refused certificate shows on the first read
        assert answer.startswith(b"HTTP/1.1"), answer
        version = tls.version()
    assert version is not None
    return version


def test_tls_1_2_is_refused_at_both_kinds_of_scheme_port(scene: Scene) -> None:
    ports = {
        "router": (own_tls(scene, "bank-a"), scene.layout.ports["router"]),
        "mno-b": (own_tls(scene, "router"), scene.layout.ports["mno-b-scheme"]),
    }
    for files, port in ports.values():
        assert _handshake_version(files, port) == "TLSv1.3"
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _handshake_version(files, port, tls12_only=True)


def test_a_revoked_certificate_serial_is_refused_at_tls(scene: Scene) -> None:
    network = scene.network
    # A leaked second certificate of bank-a, and a second router certificate.
    leaked = scene.data_dir / "attacker" / "leaked-bank-a"
    issue(scene.data_dir, "bank-a", leaked)
    rogue_router = scene.data_dir / "attacker" / "rogue-router"
    issue(scene.data_dir, "router", rogue_router, role="router")
    leaked_tls = TlsFiles.in_directory(leaked, "bank-a")
    rogue_tls = TlsFiles.in_directory(rogue_router, "router")
    status_url = scheme_url(scene, "mno-b", "/v1/scheme/status")
    assert router_call(scene, leaked_tls, "GET", "/v1/directory").status == 200
    # The rogue router certificate passes mno-b's TLS gate (only its messages are refused).
    forged = sign_message({"v": 1}, processor_keys(network, "bank-a").sign_key)
    assert scheme_call(rogue_tls, "POST", status_url, forged).code == "message_type_unexpected"

    for folder, party in ((leaked, "bank-a"), (rogue_router, "router")):
        serial = serial_text(serial_of(folder, party))
        assert serial in semops_router(scene, "revoke-certificate", "--serial", serial)
    listed = directory_of(scene).revoked_serials or ()
    assert serial_text(serial_of(leaked, "bank-a")) in listed
    assert serial_text(serial_of(rogue_router, "router")) in listed
    before = scene.quiet()
    answer = router_call(scene, leaked_tls, "GET", "/v1/directory")
    assert (answer.status, answer.code) == (401, "certificate_revoked"), answer.body
    # mno-b refuses the rogue router certificate once it holds the new directory.
    deadline = time.monotonic() + 30
    while True:
        httpx.get(network.layout.processor_url("mno-b") + "/v1/wallet/config", timeout=30)
        answer = scheme_call(rogue_tls, "POST", status_url, forged)
        if answer.code == "certificate_revoked" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (answer.status, answer.code) == (401, "certificate_revoked"), answer.body
    # bank-a's and the router's own certificates are untouched.
    assert router_call(scene, own_tls(scene, "bank-a"), "GET", "/v1/directory").status == 200
    scene.assert_unchanged(before)


def test_a_participants_certificate_cannot_speak_for_another(scene: Scene) -> None:
    """A leaked (old but unexpired) certificate of bank-a is no licence to act as mno-b."""
    network = scene.network
    bank_a = own_tls(scene, "bank-a")
    payment = routed_payment(scene, 95)  # fresh captures: valid in every other respect
    refund = refund_of(scene, payment, 5)
    before = scene.quiet()
    # mno-b's captured refund, re-sent over bank-a's TLS connection.
    answer = router_call(scene, bank_a, "POST", "/v1/refunds", refund)
    assert (answer.status, answer.code) == (403, "tls_peer_mismatch"), answer.body
    # bank-a's captured prepare, re-sent over mno-b's.
    answer = router_call(scene, own_tls(scene, "mno-b"), "POST", "/v1/transfers", payment.prepare)
    assert (answer.status, answer.code) == (403, "tls_peer_mismatch"), answer.body
    # mno-b's signed settlement query, over bank-a's connection.
    now = int(time.time())
    query = SettlementQuery(
        participant_id="mno-b", path="/v1/settlement/headroom", created_at=now, expires_at=now + 60
    )
    signed = sign_message(query.to_claims(), processor_keys(network, "mno-b").sign_key)
    with httpx.Client(verify=client_context(bank_a), timeout=30) as client:
        response = client.get(
            scene.layout.router_url() + "/v1/settlement/headroom",
            headers={"Authorization": f"SEMOPS-Participant {signed}"},
        )
    assert (response.status_code, json.loads(response.text)["code"]) == (403, "tls_peer_mismatch")
    # A transfer is told only to its two processors.
    stranger = scene.data_dir / "attacker" / "bank-e"
    if not (stranger / "bank-e.crt").exists():
        issue(scene.data_dir, "bank-e", stranger)
    path = f"/v1/transfers/{scene.early.transfer_id}"
    answer = router_call(scene, TlsFiles.in_directory(stranger, "bank-e"), "GET", path)
    assert (answer.status, answer.code) == (404, "not_found"), answer.body
    assert router_call(scene, bank_a, "GET", path).status == 200
    scene.assert_unchanged(before)
