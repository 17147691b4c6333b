"""The router as a real process on loopback, spoken to over mutual TLS.

A processor here is the test itself, holding certificates issued by the scheme root: it
registers, reads the signed directory and sends transfers. What a real payee processor
answers is tested end to end with real processors in tests/e2e; here the router's own
promises are checked: who may connect, what it signs, what it refuses without recording,
and that an unanswered transfer is aborted at its expiry.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from semops.core import IdKind, make_id
from semops.crypto import KeyRing, KeyUse, condition_for, make_fulfilment, private_key_for, seal_for
from semops.crypto.pki import certificate_pem, load_certificate_pem, validate_chain
from semops.devnet import ServiceProcess, ensure_pki, free_port
from semops.protocol import (
    Directory,
    ParticipantRegistration,
    TransferDetails,
    TransferPrepare,
    TransferStatus,
    open_signed,
    sign,
)
from semops.service.files import read_private_key
from semops.service.tls import TlsFiles, client_context
from tests.databases import BACKENDS, postgres_or_skip


@dataclass
class RouterUnderTest:
    data_dir: Path
    process: ServiceProcess
    port: int
    operator_port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def context(self, party: str) -> ssl.SSLContext:
        return client_context(TlsFiles.in_directory(self.data_dir / party, party))

    def call(self, party: str, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        request = urllib.request.Request(
            self.url + path,
            data=body.encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/jose"} if body is not None else {},
        )
        try:
            with urllib.request.urlopen(
                request, context=self.context(party), timeout=15
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def operator(self, method: str, path: str, body: object = None) -> int:
        token = (self.data_dir / "router" / "operator.token").read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.operator_port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)


@pytest.fixture(scope="module", params=BACKENDS)
def router(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RouterUnderTest]:
    data_dir = tmp_path_factory.mktemp("net")
    databases = postgres_or_skip() if request.param == "postgresql" else None
    db_args = ["--db", databases.make(["router"])["router"]] if databases else []
    ensure_pki(data_dir, {"router": "router", "bank-a": "processor", "mno-b": "processor"})
    port, operator_port = free_port(), free_port()
    context = client_context(TlsFiles.in_directory(data_dir / "bank-a", "bank-a"))
    process = ServiceProcess(
        name="router",
        args=[
            "router",
            "serve",
            "--data-dir",
            str(data_dir / "router"),
            "--port",
            str(port),
            "--operator-port",
            str(operator_port),
            *db_args,
        ],
        output=data_dir / "router.out",
        health_url=f"https://127.0.0.1:{port}/healthz",
        ssl_context=context,
    )
    process.start()
    try:
        process.wait_ready()
        yield RouterUnderTest(data_dir, process, port, operator_port)
    finally:
        process.stop()
        if databases is not None:
            databases.drop()


def _registration(router: RouterUnderTest, party: str, *, claim: str | None = None) -> str:
    folder = router.data_dir / party
    now = int(time.time())
    message = ParticipantRegistration(
        participant_id=claim or party,
        kind="bank" if party.startswith("bank") else "mno",
        display_name=party.upper(),
        endpoint="https://127.0.0.1:9",  # nobody listens: the payee never answers
        sign_certificate=(folder / f"{party}.crt").read_text(),
        enc_certificate=(folder / f"{party}.enc.crt").read_text(),
        created_at=now,
        expires_at=now + 60,
    )
    key = private_key_for(claim or party, KeyUse.SIGN, read_private_key(folder / f"{party}.key"))
    return sign(message, key)


def _directory(router: RouterUnderTest) -> Directory:
    status, body = router.call("bank-a", "GET", "/v1/directory")
    assert status == 200
    document = json.loads(body)
    router_cert = load_certificate_pem(document["router_certificate"].encode())
    root = load_certificate_pem((router.data_dir / "pki" / "root-ca.crt").read_bytes())
    identity = validate_chain(router_cert, root, datetime.now(UTC), expected_usage="sign")
    assert identity.role == "router"
    from semops.router.service import certificate_key_record

    ring = KeyRing([certificate_key_record(identity.party_id, router_cert, KeyUse.SIGN)])
    return open_signed(document["directory"], Directory, ring, int(time.time())).message


def _prepare(router: RouterUnderTest, *, amount: int = 500, ttl: int = 30) -> tuple[str, str]:
    directory = _directory(router)
    now = int(time.time())
    transfer_id = make_id(IdKind.TRANSFER, __import__("os").urandom(16))
    payee_key = directory.entry("mno-b").current_key(KeyUse.ENCRYPT, now)
    sealed = seal_for(
        TransferDetails(
            transfer_id=transfer_id,
            request_id=make_id(IdKind.REQUEST, b"r" * 16),
            payee_id="corner-cafe",
            payer_ref="A" * 43,
        ).to_claims(),
        payee_key,
    )
    prepare = TransferPrepare(
        transfer_id=transfer_id,
        payer_processor="bank-a",
        payee_processor="mno-b",
        amount_minor=amount,
        currency="EUR",
        condition=condition_for(make_fulfilment(b"f" * 32)),
        created_at=now,
        expires_at=now + ttl,
        sealed=sealed,
    )
    folder = router.data_dir / "bank-a"
    key = private_key_for("bank-a", KeyUse.SIGN, read_private_key(folder / "bank-a.key"))
    return transfer_id, sign(prepare, key)


def test_a_client_without_a_scheme_certificate_cannot_connect(router: RouterUnderTest) -> None:
    anonymous = ssl.create_default_context(cafile=str(router.data_dir / "pki" / "root-ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(router.url + "/v1/directory", context=anonymous, timeout=5)


def test_a_certificate_from_another_root_cannot_connect(
    router: RouterUnderTest, tmp_path: Path
) -> None:
    ensure_pki(tmp_path, {"bank-a": "processor"})  # same name, different root
    rogue = client_context(TlsFiles.in_directory(tmp_path / "bank-a", "bank-a"))
    rogue.load_verify_locations(cafile=str(router.data_dir / "pki" / "root-ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(router.url + "/v1/directory", context=rogue, timeout=5)


def test_the_directory_is_signed_by_the_router_and_lists_registered_processors(
    router: RouterUnderTest,
) -> None:
    for party in ("bank-a", "mno-b"):
        status, _ = router.call(party, "POST", "/v1/participants", _registration(router, party))
        assert status == 200
    directory = _directory(router)
    assert {entry.participant_id for entry in directory.entries} >= {"router", "bank-a", "mno-b"}
    bank = directory.entry("bank-a")
    cert = load_certificate_pem((router.data_dir / "bank-a" / "bank-a.crt").read_bytes())
    assert certificate_pem(cert).decode() and bank.kind == "bank"


def test_a_registration_in_another_participants_name_is_refused(router: RouterUnderTest) -> None:
    token = _registration(router, "bank-a", claim="mno-b")
    # Over bank-a's own TLS connection it cannot even speak for mno-b ...
    status, body = router.call("bank-a", "POST", "/v1/participants", token)
    assert status == 403 and json.loads(body)["code"] == "tls_peer_mismatch"
    # ... and over mno-b's, bank-a's certificate does not name mno-b.
    status, body = router.call("mno-b", "POST", "/v1/participants", token)
    assert status == 401 and json.loads(body)["code"] == "certificate_invalid"


def test_a_prepare_with_a_bad_signature_over_valid_tls_is_refused_and_not_recorded(
    router: RouterUnderTest,
) -> None:
    test_the_directory_is_signed_by_the_router_and_lists_registered_processors(router)
    transfer_id, token = _prepare(router)
    header, payload, signature = token.split(".")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    status, body = router.call("bank-a", "POST", "/v1/transfers", f"{header}.{payload}.{flipped}")
    assert status == 401 and json.loads(body)["code"] == "signature_invalid"
    status, body = router.call("bank-a", "GET", f"/v1/transfers/{transfer_id}")
    assert status == 404 and json.loads(body)["code"] == "not_found"


def test_an_unanswered_transfer_stays_reserved_then_aborts_at_expiry(
    router: RouterUnderTest,
) -> None:
    test_the_directory_is_signed_by_the_router_and_lists_registered_processors(router)
    transfer_id, token = _prepare(router, ttl=8)
    status, body = router.call("bank-a", "POST", "/v1/transfers", token)
    assert status == 202
    directory = _directory(router)
    ring = KeyRing(directory.key_records())
    pending = open_signed(body, TransferStatus, ring, int(time.time()), expected_signer="router")
    assert pending.message.state == "reserved"
    # A retry of the same prepare is answered from the record, not executed again.
    assert router.call("bank-a", "POST", "/v1/transfers", token)[0] in (200, 202)
    deadline = time.monotonic() + 20
    state = "reserved"
    while time.monotonic() < deadline and state == "reserved":
        time.sleep(0.5)
        status, body = router.call("bank-a", "GET", f"/v1/transfers/{transfer_id}")
        status_message = open_signed(body, TransferStatus, ring, int(time.time())).message
        state = status_message.state
    assert state == "aborted" and status_message.reason_code == "transfer_expired"


def test_a_suspended_processor_is_refused_and_a_cap_limits_what_it_may_owe(
    router: RouterUnderTest,
) -> None:
    test_the_directory_is_signed_by_the_router_and_lists_registered_processors(router)
    assert router.operator("POST", "/v1/admin/participants/bank-a/suspend") == 204
    try:
        _, token = _prepare(router)
        status, body = router.call("bank-a", "POST", "/v1/transfers", token)
        assert status == 403 and json.loads(body)["code"] == "processor_suspended"
    finally:
        assert router.operator("POST", "/v1/admin/participants/bank-a/resume") == 204
    assert (
        router.operator("PUT", "/v1/admin/participants/bank-a/cap", {"net_debit_cap_minor": 1000})
        == 204
    )
    try:
        transfer_id, token = _prepare(router, amount=5000)
        status, body = router.call("bank-a", "POST", "/v1/transfers", token)
        assert status == 403 and json.loads(body)["code"] == "net_debit_cap_exceeded"
        assert router.call("bank-a", "GET", f"/v1/transfers/{transfer_id}")[0] == 404
    finally:
        router.operator("PUT", "/v1/admin/participants/bank-a/cap", {"net_debit_cap_minor": None})
