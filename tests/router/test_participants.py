"""The participant lifecycle at the router, in process, on SQLite and PostgreSQL.

The real `Router` over a real database and the scheme's real PKI: certificates are issued
by `semops pki issue`, the way a second certificate reaches an attacker. What is checked:
a change not signed by the current key is held (once) and changes nothing else; the
operator's approve, reject and revoke do what they say and are audited; revoked kids and
serials are refused and published; a rotation endorsed by the current key goes through.
The same promises over real processes, with the wiretap, are in tests/attack.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from semops.core import IdKind, make_id
from semops.core.errors import E, SemopsError
from semops.crypto import KeyUse, condition_for, make_fulfilment, seal_for
from semops.crypto.pki import serial_text
from semops.devnet import ensure_pki
from semops.protocol import TransferDetails, TransferPrepare, sign
from semops.router.main import RouterSettings, load_identity
from semops.router.service import Router
from semops.service.clock import SystemClock
from semops.store import router as store
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade
from tests.attack.certificates import issue, registration, serial_of, sign_key
from tests.databases import BACKENDS, postgres_or_skip
from tests.router.test_windows import FulfillingPeer

pytestmark = pytest.mark.anyio

PARTIES = {"router": "router", "bank-a": "processor", "mno-b": "processor"}
ENDPOINT = "https://127.0.0.1:9"
ROGUE = "https://shop.attacker.example:8443"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("lifecycle")
    ensure_pki(data_dir, PARTIES)
    for name in ("second", "third", "fourth", "fifth", "sixth", "next"):
        issue(data_dir, "bank-a", data_dir / f"bank-a-{name}")
    return data_dir


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "router.db")
        return
    databases = postgres_or_skip()
    try:
        yield databases.make(["router"])["router"]
    finally:
        databases.drop()


class Scheme:
    def __init__(self, data_dir: Path, database: Database) -> None:
        self.data_dir = data_dir
        self.database = database
        identity = load_identity(RouterSettings(data_dir=data_dir / "router"))
        self.router = Router(identity, database, SystemClock(), FulfillingPeer(data_dir))  # type: ignore[arg-type]

    async def start(self) -> None:
        await upgrade(self.database, "router")
        await self.router.start()
        for party, kind in (("bank-a", "bank"), ("mno-b", "mno")):
            answer = await self.register(party, party, kind=kind)
            assert answer.held is None

    def folder(self, name: str) -> Path:
        return self.data_dir / name

    async def register(
        self, folder: str, party: str = "bank-a", *, tls_party: str | None = None, **kw: Any
    ) -> Any:
        kw.setdefault("endpoint", ENDPOINT)
        if party == "mno-b":
            kw.setdefault("display_name", "Beta Mobile")
        token = registration(self.folder(folder), party, **kw)
        return await self.router.register(token, tls_party=tls_party or party)

    def kids(self, party: str = "bank-a") -> dict[str, tuple[str, str]]:
        entry = self.router.directory.entry(party)
        return {key.use: (key.kid, key.status) for key in entry.keys}

    async def rows(self, table: Any) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            return [dict(row) for row in (await connection.execute(table.select())).mappings()]

    async def audit_kinds(self) -> list[str]:
        return [row["kind"] for row in await self.rows(store.audit_log)]

    async def prepare(self, key_folder: str, party: str = "bank-a", payee: str = "mno-b") -> Any:
        now = int(time.time())
        transfer_id = make_id(IdKind.TRANSFER, os.urandom(16))
        sealed = seal_for(
            TransferDetails(
                transfer_id=transfer_id,
                request_id=make_id(IdKind.REQUEST, os.urandom(16)),
                payee_id="corner-cafe",
                payer_ref="A" * 43,
            ).to_claims(),
            self.router.directory.entry(payee).current_key(KeyUse.ENCRYPT, now),
        )
        prepare = TransferPrepare(
            transfer_id=transfer_id,
            payer_processor=party,
            payee_processor=payee,
            amount_minor=7700,
            currency="EUR",
            condition=condition_for(make_fulfilment(b"f" * 32)),
            created_at=now,
            expires_at=now + 30,
            sealed=sealed,
        )
        token = sign(prepare, sign_key(self.folder(key_folder), party))
        return await self.router.prepare(token, tls_party=party)


@pytest.fixture
async def scheme(database_url: str, pki: Path) -> AsyncIterator[Scheme]:
    database = Database(database_url)
    made = Scheme(pki, database)
    try:
        await made.start()
        yield made
    finally:
        await database.dispose()


async def refused(call: Any) -> SemopsError:
    with pytest.raises(SemopsError) as caught:
        await call
    return caught.value


# --- H1: a second certificate ---------------------------------------------------------------


async def test_a_second_certificate_is_held_and_changes_nothing_else(scheme: Scheme) -> None:
    before = scheme.kids()
    serial = scheme.router.directory.serial
    participants = await scheme.rows(store.participants)
    answer = await scheme.register("bank-a-second", endpoint=ROGUE)
    assert answer.held is not None and answer.held.startswith("rg_")
    assert scheme.kids() == before and scheme.router.directory.serial == serial
    assert scheme.router.directory.entry("bank-a").endpoint == ENDPOINT
    assert await scheme.rows(store.participants) == participants
    held = await scheme.rows(store.registrations)
    assert [(row["participant_id"], row["state"], row["endpoint"]) for row in held] == [
        ("bank-a", "pending", ROGUE)
    ]
    assert held[0]["changes"] == "sign_certificate,enc_certificate,endpoint"
    assert (await scheme.audit_kinds())[-1] == "registration_held"
    # Sent again (a new message, the same proposal): the same id, nothing new.
    audit = await scheme.audit_kinds()
    again = await scheme.register("bank-a-second", endpoint=ROGUE, now=int(time.time()) + 1)
    assert again.held == answer.held
    assert len(await scheme.rows(store.registrations)) == 1
    assert await scheme.audit_kinds() == audit
    # Its key speaks for nobody: a prepare "from bank-a" signed with it.
    assert (await refused(scheme.prepare("bank-a-second"))).spec is E.KEY_UNKNOWN
    listed = await scheme.router.participants.held()
    assert [row["registration_id"] for row in listed] == [answer.held]
    assert listed[0]["changes"] == ["sign_certificate", "enc_certificate", "endpoint"]


async def test_the_operator_approves_or_rejects_a_held_change(scheme: Scheme) -> None:
    held = (await scheme.register("bank-a-second", endpoint=ROGUE)).held
    assert held is not None
    rejected = await scheme.router.participants.reject(held)
    assert rejected["state"] == "rejected" and rejected["decided_by"] == "operator"
    assert (await refused(scheme.router.participants.approve(held))).spec is (
        E.REGISTRATION_DECIDED
    )
    assert scheme.router.directory.entry("bank-a").endpoint == ENDPOINT
    # Proposed again after a rejection: pending again, for the operator to decide again.
    assert (await scheme.register("bank-a-second", endpoint=ROGUE)).held == held
    approved = await scheme.router.participants.approve(held)
    assert approved["state"] == "approved"
    entry = scheme.router.directory.entry("bank-a")
    assert entry.endpoint == ROGUE
    assert scheme.kids()["sig"][0] == approved["sign_kid"]
    kinds = await scheme.audit_kinds()
    assert kinds[-4:] == [
        "registration_held",
        "registration_rejected",
        "registration_held",
        "registration_approved",
    ]
    unknown = "rg_" + "x" * 22
    assert (await refused(scheme.router.participants.approve(unknown))).spec is E.NOT_FOUND


async def test_a_participant_cannot_flood_the_operator(scheme: Scheme) -> None:
    for index, name in enumerate(("second", "third", "fourth", "fifth")):
        answer = await scheme.register(f"bank-a-{name}", endpoint=f"{ROGUE}/{index}")
        assert answer.held is not None
    error = await refused(scheme.register("bank-a-sixth", endpoint=ROGUE))
    assert error.spec is E.REGISTRATIONS_PENDING_FULL
    assert len(await scheme.rows(store.registrations)) == 4


# --- changes the current key signs ----------------------------------------------------------


async def test_a_change_signed_by_the_current_key_takes_effect_at_once(scheme: Scheme) -> None:
    before = scheme.kids()
    answer = await scheme.register("bank-a", endpoint="https://127.0.0.1:10")
    assert answer.held is None
    entry = scheme.router.directory.entry("bank-a")
    assert entry.endpoint == "https://127.0.0.1:10"
    assert scheme.kids() == before
    assert await scheme.rows(store.registrations) == []


async def test_a_new_display_name_waits_for_the_operator_even_signed_by_the_current_key(
    scheme: Scheme,
) -> None:
    """Wallets show "payee id at <processor name>": what a processor is called is the
    scheme's to approve, not the processor's to change at will."""
    answer = await scheme.register("bank-a", display_name="Alpha Bank Plc")
    assert answer.held is not None
    assert scheme.router.directory.entry("bank-a").display_name != "Alpha Bank Plc"
    await scheme.router.participants.approve(answer.held)
    assert scheme.router.directory.entry("bank-a").display_name == "Alpha Bank Plc"


async def test_a_display_name_like_another_participants_is_refused(scheme: Scheme) -> None:
    """Found in review: mno-b renamed itself to bank-a's name with its own key, so both
    wallets showed "corner-cafe at <that name>" for two different shops."""
    taken = scheme.router.directory.entry("bank-a").display_name
    lookalike = taken.replace("l", "1").replace("o", "0")  # one script: passes UTS #39 alone
    assert lookalike != taken
    for name in (taken, taken.upper(), lookalike):
        error = await refused(scheme.register("mno-b", "mno-b", display_name=name))
        assert error.spec is E.NAME_CONFUSABLE, name
    assert await scheme.rows(store.registrations) == []
    assert scheme.router.directory.entry("mno-b").display_name != taken


async def test_a_rotation_endorsed_by_the_current_key_goes_through(scheme: Scheme) -> None:
    old_kid = scheme.kids()["sig"][0]
    current = sign_key(scheme.folder("bank-a"), "bank-a")
    answer = await scheme.register("bank-a-next", current_key=current)
    assert answer.held is None
    new_kid = scheme.kids()["sig"][0]
    assert new_kid != old_kid and new_kid == sign_key(scheme.folder("bank-a-next"), "bank-a").kid
    audit = (await scheme.rows(store.audit_log))[-1]
    assert audit["kind"] == "participant_registered"
    assert '"endorsed":true' in audit["data"] and f'"previous_kid":"{old_kid}"' in audit["data"]
    # The retired key signs nothing any more; the new one pays.
    assert (await refused(scheme.prepare("bank-a"))).spec is E.KEY_UNKNOWN
    assert (await scheme.prepare("bank-a-next")).decided


async def test_an_endorsement_by_the_wrong_key_leaves_the_rotation_held(scheme: Scheme) -> None:
    thief = sign_key(scheme.folder("bank-a-second"), "bank-a")
    answer = await scheme.register("bank-a-next", current_key=thief)
    assert answer.held is not None
    # Sent again, endorsed by the right key: it takes effect, and the held row is done.
    current = sign_key(scheme.folder("bank-a"), "bank-a")
    assert (await scheme.register("bank-a-next", current_key=current)).held is None
    (row,) = await scheme.rows(store.registrations)
    assert (row["state"], row["decided_by"]) == ("approved", "bank-a")


# --- refused before anything is stored ------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:9", "https://127.0.0.1:9/?x=", "https://127.0.0.1:9/#f", "https://u@h:1"],
)
async def test_an_endpoint_the_router_may_not_call_is_refused(
    scheme: Scheme, endpoint: str
) -> None:
    participants = await scheme.rows(store.participants)
    for folder in ("bank-a", "bank-a-second"):  # signed by the current key, or not
        error = await refused(scheme.register(folder, endpoint=endpoint))
        assert error.spec is E.URL_NOT_ALLOWED
    assert await scheme.rows(store.participants) == participants
    assert await scheme.rows(store.registrations) == []


async def test_a_registration_over_another_participants_tls_is_refused(scheme: Scheme) -> None:
    error = await refused(scheme.register("bank-a", tls_party="mno-b"))
    assert error.spec is E.TLS_PEER_MISMATCH


async def test_a_prepare_over_another_participants_tls_is_refused(scheme: Scheme) -> None:
    now = int(time.time())
    prepare = TransferPrepare(
        transfer_id=make_id(IdKind.TRANSFER, os.urandom(16)),
        payer_processor="bank-a",
        payee_processor="mno-b",
        amount_minor=100,
        currency="EUR",
        condition=condition_for(make_fulfilment(b"f" * 32)),
        created_at=now,
        expires_at=now + 30,
        sealed="a.b.c.d.e",
    )
    token = sign(prepare, sign_key(scheme.folder("bank-a"), "bank-a"))
    error = await refused(scheme.router.prepare(token, tls_party="mno-b"))
    assert error.spec is E.TLS_PEER_MISMATCH


async def test_a_transfer_is_told_only_to_its_two_processors(scheme: Scheme) -> None:
    outcome = await scheme.prepare("bank-a")
    assert outcome.decided
    rows = await scheme.rows(store.transfers)
    transfer_id = rows[-1]["transfer_id"]
    for party in ("bank-a", "mno-b"):
        await scheme.router.transfer_status(transfer_id, tls_party=party)
    error = await refused(scheme.router.transfer_status(transfer_id, tls_party="bank-c"))
    assert error.spec is E.NOT_FOUND


# --- revocation -----------------------------------------------------------------------------


async def test_a_revoked_kid_is_refused_and_comes_back_only_through_the_operator(
    scheme: Scheme,
) -> None:
    kid = scheme.kids()["sig"][0]
    result = await scheme.router.participants.revoke_key("bank-a", kid)
    assert result["newly_revoked"] is True
    assert scheme.kids()["sig"] == (kid, "revoked")
    assert (await refused(scheme.prepare("bank-a"))).spec is E.KEY_REVOKED
    # Paying *to* a participant that cannot sign its answer is refused up front.
    paid = scheme.prepare("mno-b", "mno-b", payee="bank-a")
    assert (await refused(paid)).spec is E.PROCESSOR_SUSPENDED
    # Its certificate was revoked with it, by serial (so it cannot open TLS either).
    assert (await refused(scheme.register("bank-a"))).spec is E.CERTIFICATE_REVOKED
    serial = serial_of(scheme.folder("bank-a"), "bank-a")
    assert serial in scheme.router.revoked_serials
    # A new key endorsed by the revoked one is not vouched for: held.
    current = sign_key(scheme.folder("bank-a"), "bank-a")
    held = (await scheme.register("bank-a-next", current_key=current)).held
    assert held is not None
    await scheme.router.participants.approve(held)
    assert scheme.kids()["sig"][1] == "active" and scheme.kids()["sig"][0] != kid
    assert (await scheme.prepare("bank-a-next")).decided
    again = await scheme.router.participants.revoke_key("bank-a", kid)
    assert again["newly_revoked"] is False
    kinds = await scheme.audit_kinds()
    assert kinds.count("key_revoked") == 1 and "registration_approved" in kinds


async def test_a_revoked_serial_is_published_and_refused(scheme: Scheme) -> None:
    serial = serial_of(scheme.folder("bank-a-second"), "bank-a")
    result = await scheme.router.participants.revoke_certificate(serial)
    assert (result["serial"], result["participant_id"]) == (serial_text(serial), None)
    assert serial in scheme.router.revoked_serials
    assert scheme.router.directory.revoked_serials == (serial_text(serial),)
    error = await refused(scheme.register("bank-a-second", endpoint=ROGUE))
    assert error.spec is E.CERTIFICATE_REVOKED
    assert await scheme.rows(store.registrations) == []
    # bank-a's current certificate, revoked by serial: its key is listed as revoked.
    current = serial_of(scheme.folder("bank-a"), "bank-a")
    result = await scheme.router.participants.revoke_certificate(current)
    assert result["participant_id"] == "bank-a"
    assert scheme.kids()["sig"][1] == "revoked"
    assert (await refused(scheme.prepare("bank-a"))).spec is E.KEY_REVOKED
    assert scheme.router.directory.revoked_serials == tuple(
        sorted([serial_text(serial), serial_text(current)], key=lambda s: (len(s), s))
    )


async def test_an_approval_checks_the_certificates_again(scheme: Scheme) -> None:
    held = (await scheme.register("bank-a-second", endpoint=ROGUE)).held
    assert held is not None
    await scheme.router.participants.revoke_certificate(
        serial_of(scheme.folder("bank-a-second"), "bank-a")
    )
    error = await refused(scheme.router.participants.approve(held))
    assert error.spec is E.CERTIFICATE_REVOKED
    assert scheme.router.directory.entry("bank-a").endpoint == ENDPOINT


async def test_the_router_keeps_its_own_entry(scheme: Scheme) -> None:
    router_kid = scheme.kids("router")["sig"][0]
    error = await refused(scheme.router.participants.revoke_key("router", router_kid))
    assert error.spec is E.FORBIDDEN
    router_serial = scheme.router.identity.sign_certificate.serial_number
    error = await refused(scheme.router.participants.revoke_certificate(router_serial))
    assert error.spec is E.FORBIDDEN
    error = await refused(scheme.router.participants.revoke_key("bank-a", router_kid))
    assert error.spec is E.VALIDATION_FAILED  # not one of bank-a's kids


async def test_another_worker_publishes_a_revocation_within_its_reload(
    scheme: Scheme, pki: Path
) -> None:
    other = Router(
        scheme.router.identity,
        scheme.database,
        SystemClock(),
        FulfillingPeer(pki),  # type: ignore[arg-type]
    )
    await other.rebuild_directory()
    assert not await other.rebuild_directory(only_if_changed=True)  # nothing changed
    kid = scheme.kids()["sig"][0]
    await scheme.router.participants.revoke_key("bank-a", kid)
    assert await other.rebuild_directory(only_if_changed=True)
    statuses = {key.kid: key.status for key in other.directory.entry("bank-a").keys}
    assert statuses[kid] == "revoked"
