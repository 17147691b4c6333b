"""Settlement windows at the router, in process, on SQLite and PostgreSQL.

The router is the real `Router` and `Settlement` over a real database; the payee processor
is a stand-in that fulfils every routed prepare (signed with mno-b's real key). What is
checked: commits land in the open window and a close starts the next one atomically, even
with payments committing while it closes; the net-debit cap counts only the open window;
processors read their own statement and headroom with a query they signed; every
operator action leaves an audit entry and the router's log verifies.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import text

from semops.audit.chain import verify_chain
from semops.audit.report import SettlementHeadroom, SettlementQuery, SettlementStatement
from semops.core import IdKind, make_id
from semops.core.errors import SemopsError
from semops.crypto import (
    KeyUse,
    PrivateKey,
    condition_for,
    make_fulfilment,
    private_key_for,
    read_unverified_claims,
    seal_for,
    sign_message,
)
from semops.protocol import (
    ParticipantRegistration,
    RefundTransfer,
    TransferDetails,
    TransferFulfil,
    TransferPrepare,
    TransferStatus,
    open_signed,
    sign,
)
from semops.router.main import RouterSettings, load_identity
from semops.router.service import Outcome, Router
from semops.router.settlement import Settlement
from semops.service.clock import SystemClock
from semops.service.files import read_private_key
from semops.store import router as store
from semops.store.db import Database
from semops.store.migrate import alembic_config, upgrade

pytestmark = pytest.mark.anyio

PARTIES = {"router": "router", "bank-a": "processor", "mno-b": "processor"}
FULFILMENT = make_fulfilment(b"f" * 32)


def _key(data_dir: Path, party: str) -> PrivateKey:
    return private_key_for(party, KeyUse.SIGN, read_private_key(data_dir / party / f"{party}.key"))


class FulfillingPeer:
    """The router's outbound calls: every routed prepare is fulfilled by its payee."""

    def __init__(self, data_dir: Path) -> None:
        self.keys = {party: _key(data_dir, party) for party in ("bank-a", "mno-b")}

    async def call_jose(
        self,
        method: str,
        url: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        headers: Any = None,
    ) -> str:
        if not url.endswith("/v1/scheme/transfers"):
            return ""  # status deliveries are acknowledged
        assert jose is not None
        claims = read_unverified_claims(jose)
        payee = claims["payee_processor"]
        fulfil = TransferFulfil(
            transfer_id=claims["transfer_id"],
            payee_processor=payee,
            fulfilment=FULFILMENT,
            fulfilled_at=int(time.time()),
        )
        return sign(fulfil, self.keys[payee])

    async def close(self) -> None:
        return None


class Scheme:
    def __init__(self, data_dir: Path, database: Database) -> None:
        self.data_dir = data_dir
        self.database = database
        identity = load_identity(RouterSettings(data_dir=data_dir / "router"))
        self.router = Router(identity, database, SystemClock(), FulfillingPeer(data_dir))  # type: ignore[arg-type]
        self.settlement = Settlement(self.router)
        self.keys = {party: _key(data_dir, party) for party in ("bank-a", "mno-b")}
        self.last_outcome: Outcome | None = None

    async def start(self) -> None:
        await upgrade(self.database, "router")
        await self.router.start()
        for party in ("bank-a", "mno-b"):
            await self.router.register(self._registration(party), tls_party=party)

    def _registration(self, party: str) -> str:
        folder, now = self.data_dir / party, int(time.time())
        message = ParticipantRegistration(
            participant_id=party,
            kind="bank" if party.startswith("bank") else "mno",
            display_name=party.upper(),
            endpoint="https://127.0.0.1:9",
            sign_certificate=(folder / f"{party}.crt").read_text(),
            enc_certificate=(folder / f"{party}.enc.crt").read_text(),
            created_at=now,
            expires_at=now + 60,
        )
        return sign(message, self.keys[party])

    async def pay(
        self, amount: int, payer: str = "bank-a", payee: str = "mno-b"
    ) -> tuple[str, str]:
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
            payer_processor=payer,
            payee_processor=payee,
            amount_minor=amount,
            currency="EUR",
            condition=condition_for(FULFILMENT),
            created_at=now,
            expires_at=now + 30,
            sealed=sealed,
        )
        outcome = await self.router.prepare(sign(prepare, self.keys[payer]), tls_party=payer)
        self.last_outcome = outcome
        state = open_signed(outcome.token, TransferStatus, self.router.ring, now + 1).message.state
        return transfer_id, state

    def query(self, party: str, path: str, *, signer: str | None = None) -> str:
        """The Authorization header of a settlement read (signed by `signer` if given)."""
        now = int(time.time())
        message = SettlementQuery(
            participant_id=party, path=path, created_at=now, expires_at=now + 60
        )
        return "SEMOPS-Participant " + sign_message(message.to_claims(), self.keys[signer or party])

    async def statement(self, window_id: int, party: str) -> SettlementStatement:
        token = await self.settlement.statement(window_id, party)
        return open_signed(token, SettlementStatement, self.router.ring, int(time.time())).message


async def test_commits_fall_in_the_open_window_and_a_close_starts_the_next(
    scheme: Scheme,
) -> None:
    ids = [(await scheme.pay(amount))[0] for amount in (100, 200, 300)]
    closed = await scheme.settlement.close_window()
    assert (closed["window_id"], closed["next_window_id"], closed["transfers_count"]) == (1, 2, 3)
    statement = await scheme.statement(1, "bank-a")
    assert sorted(line.transfer_id for line in statement.settlement.transfers) == sorted(ids)
    assert statement.settlement.positions[0].net_minor == -600
    assert (await scheme.statement(1, "mno-b")).settlement.positions[0].net_minor == 600
    later, _ = await scheme.pay(50)
    window = await scheme.settlement.window(2)
    assert window["state"] == "open"
    positions = {row["participant_id"]: row["net_minor"] for row in window["positions"]}
    assert positions == {"bank-a": -50, "mno-b": 50}
    async with scheme.database.read() as connection:
        assert (await store.get_transfer(connection, later))["window_id"] == 2  # type: ignore[index]
        assert (await store.get_transfer(connection, ids[0]))["window_id"] == 1  # type: ignore[index]
    with pytest.raises(SemopsError) as refused:
        await scheme.settlement.statement(2, "bank-a")  # still open: no statement yet
    assert refused.value.code == "not_found"


async def test_the_net_debit_cap_counts_only_the_open_window(scheme: Scheme) -> None:
    await scheme.router.set_cap("bank-a", 500)
    assert (await scheme.pay(400))[1] == "committed"
    with pytest.raises(SemopsError) as refused:
        await scheme.pay(200)
    assert refused.value.code == "net_debit_cap_exceeded"
    assert (await scheme.pay(100, payer="mno-b", payee="bank-a"))[1] == "committed"
    assert (await scheme.pay(200))[1] == "committed"  # money received is headroom too
    token = await scheme.settlement.headroom("bank-a")
    now = int(time.time())
    headroom = open_signed(token, SettlementHeadroom, scheme.router.ring, now).message
    (line,) = headroom.lines
    assert (headroom.window_id, line.position_minor, line.headroom_minor) == (1, -500, 0)
    await scheme.settlement.close_window()
    assert (await scheme.pay(450))[1] == "committed"  # a new window: the cap starts over


async def test_a_refund_counts_against_its_senders_cap(scheme: Scheme) -> None:
    """A refund moves money from the payee's processor back: its own amount counts against
    that processor's cap, as a payment's does (the check once ran before the refund was
    recorded and so left its amount out). A refused refund leaves nothing recorded."""
    await scheme.router.set_cap("mno-b", 100)
    paid, _ = await scheme.pay(500)
    await scheme.pay(500, payer="mno-b", payee="bank-a")  # mno-b's position is 0 again

    def refund(amount: int) -> tuple[str, str]:
        now = int(time.time())
        message = RefundTransfer(
            refund_id=make_id(IdKind.REFUND, os.urandom(16)),
            transfer_id=paid,
            payee_processor="mno-b",
            amount_minor=amount,
            currency="EUR",
            created_at=now,
            expires_at=now + 30,
        )
        return message.refund_id, sign(message, scheme.keys["mno-b"])

    refused_id, token = refund(400)
    with pytest.raises(SemopsError) as refused:
        await scheme.router.refund(token, tls_party="mno-b")
    assert refused.value.code == "net_debit_cap_exceeded"
    async with scheme.database.read() as connection:
        assert await store.get_transfer(connection, refused_id) is None
    # Up to the cap it goes (the stand-in payer side does not answer: it stays in flight).
    allowed_id, token = refund(100)
    await scheme.router.refund(token, tls_party="mno-b")
    async with scheme.database.read() as connection:
        allowed = await store.get_transfer(connection, allowed_id)
    assert allowed is not None and allowed["state"] == "reserved"
    _, token = refund(1)
    with pytest.raises(SemopsError) as refused:
        await scheme.router.refund(token, tls_party="mno-b")
    assert refused.value.code == "net_debit_cap_exceeded"


async def test_no_commit_falls_between_windows_while_they_close(scheme: Scheme) -> None:
    async def pay_some(count: int, amount: int) -> list[str]:
        return [(await scheme.pay(amount))[0] for _ in range(count)]

    async def close_twice() -> None:
        for _ in range(2):
            await asyncio.sleep(0.05)
            await scheme.settlement.close_window()

    first, second, _ = await asyncio.gather(pay_some(15, 10), pay_some(15, 20), close_twice())
    await scheme.settlement.close_window()
    statements = [await scheme.statement(window_id, "bank-a") for window_id in (1, 2, 3)]
    listed = [line.transfer_id for s in statements for line in s.settlement.transfers]
    assert sorted(listed) == sorted(first + second)  # each commit in exactly one window
    nets = [s.settlement.positions[0].net_minor for s in statements if s.settlement.positions]
    assert sum(nets) == -(15 * 10 + 15 * 20)
    assert len(nets) >= 2  # the closes really fell between payments


async def test_a_commit_waiting_on_a_close_lands_in_the_window_the_close_opened(
    scheme: Scheme,
) -> None:
    """PostgreSQL: the statement deciding a commit waits for the window a close holds; when
    the close commits, that statement finds no open window (the new one is not in its
    snapshot), and the commit goes to the new window in a later statement."""
    if scheme.database.sqlite:
        pytest.skip("SQLite serialises writers: a commit never waits inside a close")
    closing = asyncio.Event()
    release = asyncio.Event()

    async def close_slowly() -> None:
        async with scheme.database.write() as connection:
            assert await store.open_window(connection, lock="update") is not None
            assert await store.close_window(connection, 1, {"closed_at": int(time.time())})
            await store.create_window(connection, 2, int(time.time()))
            closing.set()
            await release.wait()

    closer = asyncio.create_task(close_slowly())
    await closing.wait()
    payment = asyncio.create_task(scheme.pay(100))
    for _ in range(200):  # until the commit waits on the window's lock
        async with scheme.database.read() as connection:
            waiting = (
                await connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                )
            ).scalar_one()
        if waiting:
            break
        await asyncio.sleep(0.02)
    assert waiting, "the commit never waited for the close"
    release.set()
    await closer
    transfer_id, state = await payment
    assert state == "committed"
    async with scheme.database.read() as connection:
        row = await store.get_transfer(connection, transfer_id)
        positions = await store.window_positions_of(connection, 2)
    assert row is not None and row["window_id"] == 2
    assert {(p["participant_id"], p["net_minor"]) for p in positions} == {
        ("bank-a", -100),
        ("mno-b", 100),
    }


async def test_settlement_reads_need_a_query_signed_by_the_participant_for_that_path(
    scheme: Scheme,
) -> None:
    authenticate = scheme.settlement.authenticate
    path = "/v1/settlement/headroom"
    assert authenticate(scheme.query("bank-a", path), path) == "bank-a"
    for header, code in (
        (None, "unauthenticated"),
        ("Bearer something", "unauthenticated"),
        (scheme.query("bank-a", "/v1/settlement/windows/1"), "forbidden"),
        (scheme.query("bank-a", path, signer="mno-b"), "signer_mismatch"),
    ):
        with pytest.raises(SemopsError) as refused:
            authenticate(header, path)
        assert refused.value.code == code


async def test_operator_actions_and_transfers_are_audited_and_the_log_verifies(
    scheme: Scheme,
) -> None:
    await scheme.router.set_status("bank-a", "suspended")
    await scheme.router.set_status("bank-a", "active")
    await scheme.router.set_cap("bank-a", 10_000)
    await scheme.pay(123)
    await scheme.settlement.close_window()
    await scheme.router.start()  # a restart: re-registering unchanged keys is not news
    for party in ("bank-a", "mno-b"):
        await scheme.router.register(scheme._registration(party), tls_party=party)
    async with scheme.database.read() as connection:
        result = await connection.execute(store.audit_log.select().order_by(store.audit_log.c.seq))
        rows = [dict(row) for row in result.mappings()]
    assert [row["kind"] for row in rows] == [
        "participant_registered",
        "participant_registered",
        "participant_suspended",
        "participant_resumed",
        "cap_changed",
        "transfer_committed",
        "window_closed",
        "checkpoint",
    ]
    assert rows[2]["actor"] == "operator" and '"participant_id":"bank-a"' in rows[2]["data"]
    assert '"amount_minor":123' in rows[5]["data"] and '"window_id":1' in rows[5]["data"]
    report = verify_chain("router", rows, scheme.router.ring)
    assert report.ok and report.unsigned_tail == 0


async def test_the_cap_holds_against_concurrent_prepares(scheme: Scheme) -> None:
    """Forty prepares of 100 at once against a cap of 1,000: exactly ten get through, on
    PostgreSQL (READ COMMITTED, many connections) as on SQLite."""
    await scheme.router.set_cap("bank-a", 1_000)

    async def attempt() -> str:
        try:
            return (await scheme.pay(100))[1]
        except SemopsError as refused:
            return refused.code

    outcomes = await asyncio.gather(*(attempt() for _ in range(40)))
    assert sorted(set(outcomes)) == ["committed", "net_debit_cap_exceeded"]
    assert outcomes.count("committed") == 10
    window = await scheme.settlement.window(1)
    positions = {row["participant_id"]: row["net_minor"] for row in window["positions"]}
    assert positions["bank-a"] == -1_000


async def _booked(database: Database) -> tuple[Any, ...]:
    async with database.read() as connection:
        return (
            await store.list_positions(connection),
            await store.window_positions_of(connection, 1),
            await store.window_positions_of(connection, 2),
            await store.window_transfer_count(connection, 2),
            await store.cap_exposure(connection, "bank-a", "EUR"),
        )


async def _kept(database: Database) -> tuple[Any, ...]:
    async with database.read() as connection:
        positions = (await connection.execute(text("SELECT * FROM positions"))).all()
        windows = (await connection.execute(text("SELECT * FROM window_positions"))).all()
        unfolded = (
            await connection.execute(text("SELECT transfer_id FROM transfers WHERE NOT folded"))
        ).all()
    return sorted(positions), sorted(windows), len(unfolded)


async def test_commits_leave_the_position_rows_alone_and_each_is_folded_in_once(
    scheme: Scheme, database_url: str
) -> None:
    """A commit touches no position row; the fold adds each committed transfer to its
    window's and both processors' rows once, and no booked position moves when it does.
    Two folds at once (two workers) fold each transfer once: on PostgreSQL each skips the
    rows the other holds."""
    for amount in (100, 200, 300):
        await scheme.pay(amount)
    await scheme.pay(40, payer="mno-b", payee="bank-a")
    assert (await _kept(scheme.database))[2] == 4  # no commit touched a position row
    await scheme.settlement.close_window()  # folds first, then checks the report on rows
    await scheme.pay(50)
    booked = await _booked(scheme.database)
    positions, window_1, window_2, count_2, exposure = booked
    assert [(p["participant_id"], p["net_minor"]) for p in positions] == [
        ("bank-a", -610),
        ("mno-b", 610),
    ]
    assert [(w["participant_id"], w["net_minor"], w["sent_count"]) for w in window_1] == [
        ("bank-a", -560, 3),
        ("mno-b", 560, 1),
    ]
    assert [(w["participant_id"], w["sent_minor"]) for w in window_2] == [
        ("bank-a", 50),
        ("mno-b", 0),
    ]
    assert (count_2, exposure) == (1, (-50, 0))
    positions_rows, window_rows, unfolded = await _kept(scheme.database)
    assert positions_rows == [("bank-a", "EUR", -560), ("mno-b", "EUR", 560)]
    assert len(window_rows) == 2 and unfolded == 1  # window 2's one payment
    for amount in (60, 70, 80, 90):
        await scheme.pay(amount)
    booked = await _booked(scheme.database)

    second = Database(database_url)
    try:

        async def fold(database: Database) -> int:
            async with database.write() as connection:
                return await store.fold_positions(connection, 100)

        assert sum(await asyncio.gather(fold(scheme.database), fold(second))) == 5
        assert await fold(second) == 0
    finally:
        await second.dispose()
    assert await _booked(scheme.database) == booked
    positions_rows, window_rows, unfolded = await _kept(scheme.database)
    assert positions_rows == [("bank-a", "EUR", -910), ("mno-b", "EUR", 910)]
    assert len(window_rows) == 4 and unfolded == 0
    assert await scheme.router.fold_positions() == 0


def _downgrade_then_upgrade(connection: Any) -> None:
    config = alembic_config("router")
    config.attributes["connection"] = connection
    command.downgrade(config, "a7c1e5d9b3f2")  # before the fold: positions kept at commit
    positions = connection.execute(text("SELECT * FROM positions")).all()
    windows = connection.execute(text("SELECT * FROM window_positions")).all()
    connection.info["downgraded"] = (sorted(positions), sorted(windows))
    command.upgrade(config, "head")


async def test_a_downgrade_folds_the_unfolded_transfers_into_the_rows(scheme: Scheme) -> None:
    """Going back to the revision before the fold leaves every position in its row."""
    await scheme.pay(100)
    await scheme.pay(30, payer="mno-b", payee="bank-a")
    await scheme.router.fold_positions()
    await scheme.pay(200)  # left unfolded
    booked = await _booked(scheme.database)
    async with scheme.database.engine.begin() as connection:
        await connection.run_sync(_downgrade_then_upgrade)
        positions, windows = connection.info.pop("downgraded")
    assert positions == [("bank-a", "EUR", -270), ("mno-b", "EUR", 270)]
    assert windows == [
        (1, "bank-a", "EUR", -270, 300, 30, 2, 1),
        (1, "mno-b", "EUR", 270, 30, 300, 1, 2),
    ]
    assert await _booked(scheme.database) == booked  # and up again: folded, the same
