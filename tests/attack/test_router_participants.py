"""Participants and keys have a lifecycle at the router (issue 11, H1; DESIGN.md §6).

The attack: registration was last-writer-wins, so any unexpired certificate the scheme
root issued for bank-a re-registered bank-a's keys and endpoint. With a second bank-a
certificate a prepare "from bank-a" paid 77.00 EUR to the attacker's shop against bank-a's
position, bank-a's own customers got `key_unknown`, and bank-a never noticed.

Here, over the real processes of the tapped network: the very attack is held for the
operator and changes nothing but that one held row and its audit entry; an approved rogue
change makes the victim raise its alarm (log line, metric, back-office banner); a revoked
key is refused at the router and at the processors and its owner comes back only through
the operator; a rotation signed by the current key needs nobody; an endpoint the router
may not call is refused. Tests that change a participant use a third processor, bank-c,
started here, so the shared network's bank-a and mno-b stay as they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from semops.crypto import KeyUse, condition_for, make_fulfilment, read_unverified_claims
from semops.devnet.actors import Customer, create_customer, enrol, request_payment
from semops.devnet.network import Network
from semops.devnet.processes import free_port
from semops.protocol import (
    Directory,
    OrderState,
    RefundTransfer,
    TransferDetails,
    TransferPrepare,
    parse_claims,
    seal,
    sign,
)
from semops.service.tls import TlsFiles, client_context
from tests.attack.attacker import Answer, pay
from tests.attack.certificates import issue, registration, sign_key
from tests.attack.conftest import PIN, Scene
from tests.attack.state import Snapshot

pytestmark = pytest.mark.timeout(600)

CALL_TIMEOUT_S: Final = 30.0
ALARM_WAIT_S: Final = 30.0
JOSE: Final = {"Content-Type": "application/jose"}
_BACKOFFICE_LOGIN_CSRF: Final = re.compile(r'name="login_csrf" value="([^"]+)"')


# --- the channels ---------------------------------------------------------------------------


def scheme_call(
    files: TlsFiles, method: str, url: str, token: str | None = None, **headers: str
) -> Answer:
    """A call over mutual TLS with the certificate in `files` (whoever holds it)."""
    with httpx.Client(verify=client_context(files), timeout=CALL_TIMEOUT_S) as client:
        body = token.encode("ascii") if token is not None else None
        response = client.request(
            method, url, content=body, headers={**(JOSE if token else {}), **headers}
        )
    return Answer(response.status_code, response.text)


def router_call(
    scene: Scene, files: TlsFiles, method: str, path: str, token: str | None = None
) -> Answer:
    return scheme_call(files, method, scene.layout.router_url() + path, token)


def own_tls(scene: Scene, party: str) -> TlsFiles:
    return TlsFiles.in_directory(scene.data_dir / party, party)


def directory_of(scene: Scene) -> Directory:
    """The router's directory as any participant reads it (the signature is the router's;
    what is checked here is its content)."""
    answer = router_call(scene, own_tls(scene, "mno-b"), "GET", "/v1/directory")
    assert answer.status == 200, answer.body
    token = json.loads(answer.body)["directory"]
    return parse_claims(read_unverified_claims(token), Directory)


def kids_of(scene: Scene, party: str) -> dict[str, tuple[str, str]]:
    entry = directory_of(scene).entry(party)
    return {key.use: (key.kid, key.status) for key in entry.keys}


def semops_router(scene: Scene, *args: str) -> str:
    """The scheme operator's CLI on the router's loopback operator port."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "semops",
            "router",
            *args,
            "--data-dir",
            str(scene.data_dir / "router"),
            "--operator-port",
            str(scene.layout.ports["router-operator"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def held_registrations(scene: Scene, party: str) -> list[dict[str, Any]]:
    listed = scene.network.router_admin("GET", "/v1/admin/registrations")["registrations"]
    return [row for row in listed if row["participant_id"] == party]


# --- state: exactly what may change ---------------------------------------------------------


def added_rows(before: Snapshot, after: Snapshot) -> dict[str, list[tuple[Any, ...]]]:
    """'service.table' -> rows added; fails on any row removed or changed."""
    added: dict[str, list[tuple[Any, ...]]] = {}
    for service in sorted(set(before) | set(after)):
        old, new = before.get(service, {}), after.get(service, {})
        for table in sorted(set(old) | set(new)):
            old_rows, new_rows = set(old.get(table, [])), set(new.get(table, []))
            assert old_rows <= new_rows, f"{service}.{table}: rows changed or removed"
            if new_rows - old_rows:
                added[f"{service}.{table}"] = sorted(new_rows - old_rows, key=repr)
    return added


# --- the attacker's payment -----------------------------------------------------------------


def prepare_from(scene: Scene, payer: str, key_folder: Path, amount_minor: int) -> str:
    """A prepare "from `payer`" for a real corner-cafe request, signed with the key in
    `key_folder`: what the attacker sends once it holds a certificate of `payer`."""
    created = request_payment(scene.network, scene.shops["cafe"], amount_minor)
    request = read_unverified_claims(created["token"])
    now = int(time.time())
    transfer_id = "tr_" + secrets.token_urlsafe(16)[:22]
    mno_b = directory_of(scene).entry("mno-b").current_key(KeyUse.ENCRYPT, now)
    details = TransferDetails(
        transfer_id=transfer_id,
        request_id=request["rid"],
        payee_id="corner-cafe",
        payer_ref=condition_for(make_fulfilment(secrets.token_bytes(32))),
    )
    prepare = TransferPrepare(
        transfer_id=transfer_id,
        payer_processor=payer,
        payee_processor="mno-b",
        amount_minor=amount_minor,
        currency="EUR",
        condition=request["cnd"],
        created_at=now,
        expires_at=now + 30,
        sealed=seal(details, mno_b),
    )
    return sign(prepare, sign_key(key_folder, payer))


# --- a third processor of our own -----------------------------------------------------------


@dataclass
class BankC:
    scene: Scene
    customer: Customer

    @property
    def folder(self) -> Path:
        return self.scene.data_dir / "bank-c"

    @property
    def network(self) -> Network:
        return self.scene.network

    def public(self, path: str) -> str:
        return f"http://127.0.0.1:{self.scene.layout.ports['bank-c']}{path}"

    def pays(self) -> None:
        created = request_payment(self.network, self.scene.shops["cafe"], 125)
        outcome = pay(self.customer, created["token"])
        assert outcome.state is OrderState.COMPLETED, outcome.order

    def rotate(self, name: str) -> None:
        """A new signing key and certificate from the root (`semops pki issue` into a folder
        of its own), the key the router knows kept as bank-c.previous.key. The encryption
        key stays: wallets keep the one they were given until their directory expires."""
        new = self.scene.data_dir / f"bank-c-{name}"
        issue(self.scene.data_dir, "bank-c", new)
        os.replace(self.folder / "bank-c.key", self.folder / "bank-c.previous.key")
        for file in ("bank-c.key", "bank-c.crt"):
            os.replace(new / file, self.folder / file)

    def restart(self) -> None:
        self.network.restart("bank-c")

    def refresh(self) -> None:
        """A wallet reading the configuration makes the processor re-read the directory."""
        httpx.get(self.public("/v1/wallet/config"), timeout=CALL_TIMEOUT_S)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        path = self.folder / "logs" / "bank-c.log"
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        found = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == event:
                found.append(record)
        return found

    def mismatch_gauge(self) -> float:
        # The processor's metrics: its loopback operator port, with the operator's token.
        text = self.network.metrics("bank-c")
        (value,) = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("semops_processor_directory_entry_mismatch ")
        ]
        return value

    def overview(self) -> str:
        """The back office's overview page, signed in with the operator token."""
        with httpx.Client(base_url=self.public(""), timeout=CALL_TIMEOUT_S) as browser:
            form = browser.get("/backoffice/login")
            (csrf,) = _BACKOFFICE_LOGIN_CSRF.findall(form.text)
            token = self.network.operator_token("bank-c")
            signed_in = browser.post("/backoffice/login", data={"login_csrf": csrf, "token": token})
            assert signed_in.status_code == 303, signed_in.text
            page = browser.get("/backoffice/")
            assert page.status_code == 200
            return page.text

    def wait_for(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + ALARM_WAIT_S
        while not check():
            assert time.monotonic() < deadline, "bank-c did not get there in time"
            self.refresh()
            time.sleep(0.5)


@pytest.fixture(scope="module")
def bank_c(scene: Scene) -> Iterator[BankC]:
    network, layout = scene.network, scene.layout
    issue(scene.data_dir, "bank-c", scene.data_dir / "bank-c")
    layout.ports["bank-c"] = free_port()
    layout.ports["bank-c-scheme"] = free_port()
    layout.ports["bank-c-operator"] = free_port()
    # The untapped devnet processor (its own SQLite database, whatever the scene's backend).
    process = Network.processor_process(network, "bank-c", "bank", "Gamma Bank")
    network.processes["bank-c"] = process  # stopped with the scene's network
    process.start()
    process.wait_ready()
    customer, code = create_customer(
        network, "bank-c", f"Gina Gamma {scene.backend}", "+4915112349999", 20_000, PIN
    )
    asyncio.run(enrol(network, customer, code))
    made = BankC(scene, customer)
    made.pays()
    yield made
    scene.quiet()  # nothing owed to bank-c is left on its way


# --- H1: the exact attack -------------------------------------------------------------------


def test_a_second_certificate_of_bank_a_takes_nothing_from_bank_a(scene: Scene) -> None:
    network = scene.network
    attacker = scene.data_dir / "attacker" / "bank-a"
    issue(scene.data_dir, "bank-a", attacker)  # the root issued a second bank-a certificate
    stolen = TlsFiles.in_directory(attacker, "bank-a")
    real = kids_of(scene, "bank-a")
    endpoint = directory_of(scene).entry("bank-a").endpoint
    shop = f"https://127.0.0.1:{free_port()}"
    before = scene.quiet()

    answer = router_call(
        scene, stolen, "POST", "/v1/participants", registration(attacker, "bank-a", endpoint=shop)
    )
    assert answer.status == 202, answer.body  # held for the operator, not applied
    held = json.loads(answer.body)
    assert held["registration"] == "held" and held["registration_id"].startswith("rg_")
    assert kids_of(scene, "bank-a") == real
    assert directory_of(scene).entry("bank-a").endpoint == endpoint
    # The prepare "from bank-a" for 77.00 EUR, signed with the second certificate's key.
    prepare = prepare_from(scene, "bank-a", attacker, 7700)
    before_prepare = scene.quiet()
    refused = router_call(scene, stolen, "POST", "/v1/transfers", prepare)
    assert (refused.status, refused.code) == (401, "key_unknown"), refused.body
    scene.assert_unchanged(before_prepare)

    # Nothing changed anywhere but the one held registration and its audit entry (the
    # cafe's request for the attacker's prepare is the payee's, and unpaid).
    added = added_rows(before, scene.quiet())
    (row,) = added.pop("router.registrations")
    assert held["registration_id"] in row and "bank-a" in row and shop in row
    (entry,) = added.pop("router.audit_log")
    assert "registration_held" in entry
    assert set(added) <= {"mno-b.requests", "mno-b.audit_log"}, added
    # bank-a's own customers still pay, with bank-a's own key.
    created = request_payment(network, scene.shops["cafe"], 300)
    assert pay(scene.people["alice"], created["token"]).state is OrderState.COMPLETED
    # The operator sees it, and rejects it (audited); the directory never changed.
    assert held["registration_id"] in semops_router(scene, "registrations")
    semops_router(scene, "reject", held["registration_id"])
    assert held_registrations(scene, "bank-a") == []
    assert kids_of(scene, "bank-a") == real


# --- M4 at the router -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["https://127.0.0.1:9/?x=", "http://127.0.0.1:9", "https://user@127.0.0.1:9", "https://h/#f"],
)
def test_an_endpoint_the_router_may_not_call_is_refused_at_registration(
    scene: Scene, endpoint: str
) -> None:
    newcomer = scene.data_dir / "newcomers" / "bank-d"
    if not (newcomer / "bank-d.crt").exists():
        issue(scene.data_dir, "bank-d", newcomer)
    before = scene.quiet()
    # bank-a itself, signed with its current key (a change that would take effect) ...
    own = registration(scene.data_dir / "bank-a", "bank-a", endpoint=endpoint)
    answer = router_call(scene, own_tls(scene, "bank-a"), "POST", "/v1/participants", own)
    assert (answer.status, answer.code) == (422, "url_not_allowed"), answer.body
    # ... and a newcomer's first registration.
    first = registration(newcomer, "bank-d", endpoint=endpoint)
    answer = router_call(
        scene, TlsFiles.in_directory(newcomer, "bank-d"), "POST", "/v1/participants", first
    )
    assert (answer.status, answer.code) == (422, "url_not_allowed"), answer.body
    scene.assert_unchanged(before)


# --- a rotation by the current key ----------------------------------------------------------


def test_a_key_rotation_signed_by_the_current_key_needs_no_operator(bank_c: BankC) -> None:
    scene = bank_c.scene
    old = kids_of(scene, "bank-c")["sig"][0]
    bank_c.rotate("rotated")
    # Without the key the router knows, the new certificate is just another certificate
    # of bank-c: held for the operator, the directory keeps the current key.
    previous = bank_c.folder / "bank-c.previous.key"
    aside = bank_c.folder.parent / "bank-c.previous.key.aside"
    os.replace(previous, aside)
    bank_c.restart()
    (held,) = held_registrations(scene, "bank-c")
    assert kids_of(scene, "bank-c")["sig"] == (old, "active")
    # With it, the registration is endorsed by the current key and takes effect at once.
    os.replace(aside, previous)
    bank_c.restart()
    new = sign_key(bank_c.folder, "bank-c").kid
    assert kids_of(scene, "bank-c")["sig"] == (new, "active") and new != old
    assert held_registrations(scene, "bank-c") == []  # the held one is done: by bank-c
    decided = scene.network.router_admin("GET", "/v1/admin/registrations?state=approved")
    assert [row["decided_by"] for row in decided["registrations"]] == ["bank-c"]
    assert held["registration_id"] == decided["registrations"][0]["registration_id"]
    bank_c.pays()
    bank_c.refresh()
    assert bank_c.mismatch_gauge() == 0
    assert len(bank_c.log_events("registration_held")) == 1  # the first restart's, only


# --- the victim notices ---------------------------------------------------------------------


def test_an_approved_rogue_change_raises_the_victims_alarm(bank_c: BankC) -> None:
    scene = bank_c.scene
    attacker = scene.data_dir / "attacker" / "bank-c"
    issue(scene.data_dir, "bank-c", attacker)
    shop = f"https://127.0.0.1:{free_port()}"
    answer = router_call(
        scene,
        TlsFiles.in_directory(attacker, "bank-c"),
        "POST",
        "/v1/participants",
        registration(attacker, "bank-c", endpoint=shop, display_name="Gamma Bank"),
    )
    assert answer.status == 202, answer.body
    rogue = json.loads(answer.body)["registration_id"]
    alarms = len(bank_c.log_events("directory_entry_mismatch"))
    semops_router(scene, "approve", rogue)  # the operator is fooled
    # At its next directory refresh bank-c sees someone else's keys and endpoint.
    bank_c.wait_for(lambda: len(bank_c.log_events("directory_entry_mismatch")) > alarms)
    raised = {event["kind"] for event in bank_c.log_events("directory_entry_mismatch")}
    assert {"sign_key", "enc_key", "endpoint"} <= raised
    assert all(event["level"] == "error" for event in bank_c.log_events("directory_entry_mismatch"))
    assert bank_c.mismatch_gauge() == 3
    page = bank_c.overview()
    assert 'id="directory-alarm"' in page and "sign_key, enc_key, endpoint" in page

    # bank-c restarts: its own registration (its key is no longer the current one) is held,
    # and only the operator can put it back.
    bank_c.restart()
    (own,) = held_registrations(scene, "bank-c")
    assert own["sign_kid"] == sign_key(bank_c.folder, "bank-c").kid
    semops_router(scene, "approve", own["registration_id"])
    bank_c.wait_for(lambda: bank_c.mismatch_gauge() == 0)
    assert 'id="directory-alarm"' not in bank_c.overview()
    assert bank_c.log_events("directory_entry_restored")
    bank_c.pays()


# --- revocation -----------------------------------------------------------------------------


def test_a_revoked_kid_is_refused_at_the_router_and_at_the_processors(bank_c: BankC) -> None:
    scene, network = bank_c.scene, bank_c.network
    kid = kids_of(scene, "bank-c")["sig"][0]
    refund = RefundTransfer(
        refund_id="rf_" + secrets.token_urlsafe(16)[:22],
        transfer_id="tr_" + secrets.token_urlsafe(16)[:22],
        payee_processor="bank-c",
        amount_minor=150,
        currency="EUR",
        created_at=int(time.time()),
        expires_at=int(time.time()) + 600,
    )
    revoked_refund = sign(refund, sign_key(bank_c.folder, "bank-c"))
    assert "revoked" in semops_router(scene, "revoke", "bank-c", "--kid", kid)
    assert kids_of(scene, "bank-c")["sig"] == (kid, "revoked")
    # mno-b re-reads the directory (a wallet asks for its configuration).
    httpx.get(network.layout.processor_url("mno-b") + "/v1/wallet/config", timeout=30)
    # At the router: a prepare signed with the revoked key, over the TLS identity of the
    # same certificate, is refused already at TLS: revoking the key revoked its
    # certificate's serial too (found in review: the key's certificate kept TLS access).
    prepare = prepare_from(scene, "bank-c", bank_c.folder, 150)
    before = scene.quiet()
    at_router = router_call(scene, own_tls(scene, "bank-c"), "POST", "/v1/transfers", prepare)
    assert (at_router.status, at_router.code) == (401, "certificate_revoked"), at_router.body
    # At a processor: mno-b's key ring, built from the directory, refuses it too.
    at_mno_b = scheme_call(
        own_tls(scene, "router"),
        "POST",
        f"https://127.0.0.1:{scene.layout.ports['mno-b-scheme']}/v1/scheme/refunds",
        revoked_refund,
    )
    assert (at_mno_b.status, at_mno_b.code) == (401, "key_revoked"), at_mno_b.body
    scene.assert_unchanged(before)
    # bank-c itself raises its alarm: the router now refuses its certificate.
    bank_c.refresh()
    bank_c.wait_for(lambda: bank_c.mismatch_gauge() >= 1)
    kinds = {e["kind"] for e in bank_c.log_events("directory_entry_mismatch")}
    assert kinds & {"sign_key_revoked", "certificate_revoked"}, kinds

    # It comes back only through the operator: a new key, endorsed by the revoked one, is
    # held until approved.
    bank_c.rotate("after-revocation")
    bank_c.restart()
    (own,) = held_registrations(scene, "bank-c")
    assert own["sign_kid"] == sign_key(bank_c.folder, "bank-c").kid
    semops_router(scene, "approve", own["registration_id"])
    assert kids_of(scene, "bank-c")["sig"] == (own["sign_kid"], "active")
    bank_c.wait_for(lambda: bank_c.mismatch_gauge() == 0)
    bank_c.pays()
