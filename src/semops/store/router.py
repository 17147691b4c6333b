"""The router's tables and the queries on them. The only place the router's SQL lives.

participants  the scheme members (processors and the router itself), their certificates,
              endpoint, status and net-debit cap; the signed directory is built from here.
registrations changes to a participant that no key entitled to make them signed: held for
              the scheme operator (pending), then approved or rejected; kept for the record.
revocations   revoked kids and certificate serials: refused at registration, at TLS and in
              messages, and published in the directory (serials until the certificate
              they name has expired).
transfers     every payment and refund the router has seen, with its state at the commit
              point. The row is written RESERVED before the payee side is asked, and moves
              to COMMITTED or ABORTED exactly once (ROUTER_TRANSFER in protocol/states.py).
positions     each processor's net position per currency: + is owed to it, - it owes.
              A commit touches no position row: its transfer is marked unfolded, and a
              background pass folds such transfers into the rows; a position as booked
              (the row plus the unfolded transfers, one statement) always equals the sum
              of committed transfers.
outbox        router-signed status messages waiting to be delivered to a processor that
              did not answer; re-sent until acknowledged.
windows       settlement windows: exactly one is open; every committed transfer carries
              the id of the window that was open when it committed (`transfers.window_id`,
              set in the committing transaction). Closing stores the signed report.
window_positions  each processor's position per currency within one window, with sent
              and received totals and counts, folded in the same way: the net-debit cap
              is checked against the open window's, and the report against these, as
              booked.
audit_log     the hash-chained audit log, audit_pending the entries staged for it
              (semops.store.audit).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    literal,
    not_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from semops.core.limits import DIRECTORY_ENTRIES_MAX
from semops.store import outbox as outbox_queries
from semops.store import prepared
from semops.store.audit import audit_pending_table, audit_table
from semops.store.db import Connection, upsert

metadata = MetaData()

participants = Table(
    "participants",
    metadata,
    Column("participant_id", String(32), primary_key=True),
    Column("kind", String(8), nullable=False),  # bank | mno | router
    Column("display_name", String(40), nullable=False),
    Column("endpoint", String(256), nullable=False),
    Column("status", String(16), nullable=False),  # active | suspended
    Column("sign_certificate", Text, nullable=False),
    Column("enc_certificate", Text, nullable=False),
    Column("net_debit_cap_minor", BigInteger, nullable=True),  # None: no cap configured
    Column("registered_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

registrations = Table(
    "registrations",
    metadata,
    Column("registration_id", String(32), primary_key=True),
    Column("participant_id", String(32), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("display_name", String(40), nullable=False),
    Column("endpoint", String(256), nullable=False),
    Column("sign_certificate", Text, nullable=False),
    Column("enc_certificate", Text, nullable=False),
    Column("sign_kid", String(128), nullable=False),
    Column("enc_kid", String(128), nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | rejected
    Column("changes", String(128), nullable=False),  # the changed fields, comma-separated
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Column("decided_by", String(64), nullable=True),
    Index("ix_registrations_state", "state", "participant_id"),
)

revocations = Table(
    "revocations",
    metadata,
    Column("kind", String(8), primary_key=True),  # kid | serial
    Column("value", String(128), primary_key=True),  # the kid, or the serial in hex
    Column("participant_id", String(32), nullable=True),  # None: a serial nobody registered
    Column("revoked_at", BigInteger, nullable=False),
    # Until when a revoked serial is published: the certificate's expiry where the router
    # knows the certificate, else the longest a certificate issued before now can live.
    Column("listed_until", BigInteger, nullable=False),
    Column("revoked_by", String(64), nullable=False),
)

transfers = Table(
    "transfers",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # payment | refund
    Column("payer_processor", String(32), nullable=False),  # who sends the money
    Column("payee_processor", String(32), nullable=False),  # who receives it
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("condition", String(43), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("fulfilment", String(43), nullable=True),
    Column("reason_code", String(64), nullable=True),
    Column("original_transfer_id", String(64), nullable=True),
    Column("content_digest", String(43), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Column("window_id", BigInteger, nullable=True),  # set when committed
    # The signed RoutedPrepare forwarded to the payee processor (payments): sent again,
    # identical, until the payee answers or the transfer expires (a lost message or a
    # router restart must not fail a payment the payee would accept).
    Column("routed", Text, nullable=True),
    # False from the commit until the transfer is added to positions and window_positions
    # (`fold_positions`); true for every other row.
    Column("folded", Boolean, nullable=False, server_default=true()),
    Index("ix_transfers_state_expires", "state", "expires_at"),
    Index("ix_transfers_original", "original_transfer_id"),
    Index("ix_transfers_window", "window_id"),
    Index(
        "ix_transfers_unfolded",
        "window_id",
        sqlite_where=text("folded = 0"),
        postgresql_where=text("NOT folded"),
    ),
)

positions = Table(
    "positions",
    metadata,
    Column("participant_id", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("net_minor", BigInteger, nullable=False),
)

windows = Table(
    "windows",
    metadata,
    Column("window_id", BigInteger, primary_key=True, autoincrement=False),
    Column("state", String(8), nullable=False),  # open | closed
    Column("opened_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("closed_by", String(64), nullable=True),
    Column("transfers_count", BigInteger, nullable=True),
    Column("report_digest", String(43), nullable=True),
    Column("report", Text, nullable=True),  # the report's claims, canonical JSON
    Column("report_signature", Text, nullable=True),  # the router-signed JWS of the report
    # At most one open window, whatever races between workers (a partial unique index).
    Index(
        "uq_windows_open",
        "state",
        unique=True,
        sqlite_where=text("state = 'open'"),
        postgresql_where=text("state = 'open'"),
    ),
)

window_positions = Table(
    "window_positions",
    metadata,
    Column("window_id", BigInteger, primary_key=True),
    Column("participant_id", String(32), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("net_minor", BigInteger, nullable=False),
    Column("sent_minor", BigInteger, nullable=False),
    Column("received_minor", BigInteger, nullable=False),
    Column("sent_count", BigInteger, nullable=False),
    Column("received_count", BigInteger, nullable=False),
)

audit_log = audit_table(metadata)
audit_pending = audit_pending_table(metadata)

outbox = Table(
    "outbox",
    metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("destination", String(32), nullable=False),
    Column("path", String(128), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_outbox_due", "delivered_at", "next_attempt_at"),
)


# --- Queries ------------------------------------------------------------------------------
# Every function takes an open connection: the caller decides the transaction boundary.


async def save_participant(connection: Connection, row: dict[str, Any]) -> None:
    update = {
        key: value
        for key, value in row.items()
        if key not in ("participant_id", "registered_at", "status", "net_debit_cap_minor")
    }
    await connection.execute(upsert(connection, participants, row, ["participant_id"], update))


async def insert_participant(connection: Connection, row: dict[str, Any]) -> None:
    """A participant's first row (IntegrityError if it exists meanwhile)."""
    await connection.execute(insert(participants).values(**row))


async def list_participants(connection: Connection) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(participants).order_by(participants.c.participant_id).limit(DIRECTORY_ENTRIES_MAX)
    )
    return [dict(row) for row in result.mappings()]


async def get_participant(connection: Connection, participant_id: str) -> dict[str, Any] | None:
    result = await connection.execute(
        prepared.select_by_key(participants, False), {"b_key": participant_id}
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def update_participant_entry(
    connection: Connection, participant_id: str, values: dict[str, Any]
) -> bool:
    result = await connection.execute(
        update(participants).where(participants.c.participant_id == participant_id).values(values)
    )
    return bool(result.rowcount == 1)


async def get_participant_for_update(
    connection: Connection, participant_id: str
) -> dict[str, Any] | None:
    """The participant's row, locked until the transaction ends (PostgreSQL), so that two
    registrations of one participant, or two prepares against its cap, are decided one
    after the other."""
    query = prepared.select_by_key(participants, connection.dialect.name == "postgresql")
    row = (await connection.execute(query, {"b_key": participant_id})).mappings().first()
    return dict(row) if row is not None else None


# --- held registrations -------------------------------------------------------------------


async def get_registration(
    connection: Connection, registration_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = select(registrations).where(registrations.c.registration_id == registration_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


async def insert_registration(connection: Connection, row: dict[str, Any]) -> None:
    await connection.execute(insert(registrations).values(**row))


async def reopen_registration(connection: Connection, registration_id: str, now: int) -> None:
    """A decided proposal made again: pending once more, for the operator to decide again."""
    await connection.execute(
        update(registrations)
        .where(registrations.c.registration_id == registration_id)
        .values(state="pending", created_at=now, decided_at=None, decided_by=None)
    )


async def count_pending_registrations(
    connection: Connection, participant_id: str | None = None
) -> int:
    query = select(func.count()).where(registrations.c.state == "pending")
    if participant_id is not None:
        query = query.where(registrations.c.participant_id == participant_id)
    return int((await connection.execute(query)).scalar_one())


async def list_registrations(
    connection: Connection, *, state: str | None, limit: int
) -> list[dict[str, Any]]:
    """Held registrations, newest first, without their certificates' PEM text."""
    columns = [c for c in registrations.c if c.name not in ("sign_certificate", "enc_certificate")]
    query = select(*columns)
    if state is not None:
        query = query.where(registrations.c.state == state)
    result = await connection.execute(
        query.order_by(registrations.c.created_at.desc(), registrations.c.registration_id).limit(
            limit
        )
    )
    return [dict(row) for row in result.mappings()]


async def decide_registration(
    connection: Connection, registration_id: str, state: str, now: int, actor: str
) -> bool:
    """Move a pending registration to approved or rejected; False if it was not pending."""
    result = await connection.execute(
        update(registrations)
        .where(
            registrations.c.registration_id == registration_id,
            registrations.c.state == "pending",
        )
        .values(state=state, decided_at=now, decided_by=actor)
    )
    return bool(result.rowcount == 1)


# --- revocations --------------------------------------------------------------------------


async def insert_revocation(connection: Connection, row: dict[str, Any]) -> bool:
    """Record a revocation; False if that kid or serial was revoked already."""
    exists = await connection.execute(
        select(revocations.c.value).where(
            revocations.c.kind == row["kind"], revocations.c.value == row["value"]
        )
    )
    if exists.first() is not None:
        return False
    await connection.execute(insert(revocations).values(**row))
    return True


async def list_revocations(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest revocations first (the operator's list)."""
    result = await connection.execute(
        select(revocations)
        .order_by(revocations.c.revoked_at.desc(), revocations.c.kind, revocations.c.value)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


_REVOKED_AMONG: Final = select(revocations.c.value).where(
    revocations.c.kind == prepared.param(revocations.c.kind),
    revocations.c.value.in_(bindparam("b_values", expanding=True, type_=revocations.c.value.type)),
)


async def revoked_among(connection: Connection, kind: str, values: list[str]) -> set[str]:
    """Which of these kids (or hex serials) are revoked."""
    if not values:
        return set()
    result = await connection.execute(
        _REVOKED_AMONG, {"b_kind": kind, "b_values": sorted(set(values))}
    )
    return {str(row[0]) for row in result}


async def listed_serials(connection: Connection, now: int, limit: int) -> list[str]:
    """Revoked serials (hex) whose certificates may still be valid: the published list."""
    result = await connection.execute(
        select(revocations.c.value)
        .where(revocations.c.kind == "serial", revocations.c.listed_until > now)
        .order_by(revocations.c.value)
        .limit(limit)
    )
    return [str(row[0]) for row in result]


async def count_listed_serials(connection: Connection, now: int) -> int:
    result = await connection.execute(
        select(func.count()).where(revocations.c.kind == "serial", revocations.c.listed_until > now)
    )
    return int(result.scalar_one())


async def set_participant_status(
    connection: Connection, participant_id: str, status: str, now: int
) -> bool:
    result = await connection.execute(
        update(participants)
        .where(participants.c.participant_id == participant_id)
        .values(status=status, updated_at=now)
    )
    return bool(result.rowcount == 1)


async def set_net_debit_cap(
    connection: Connection, participant_id: str, cap_minor: int | None, now: int
) -> bool:
    result = await connection.execute(
        update(participants)
        .where(participants.c.participant_id == participant_id)
        .values(net_debit_cap_minor=cap_minor, updated_at=now)
    )
    return bool(result.rowcount == 1)


async def get_transfer(
    connection: Connection, transfer_id: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = prepared.select_by_key(
        transfers, for_update and connection.dialect.name == "postgresql"
    )
    row = (await connection.execute(query, {"b_key": transfer_id})).mappings().first()
    return dict(row) if row is not None else None


# What the sender's cap is, read in the insert's own statement: a payment without a cap (most
# of them) needs no second statement to learn it.
_INSERT_TRANSFER: Final = insert(transfers).returning(
    select(participants.c.net_debit_cap_minor)
    .where(participants.c.participant_id == bindparam("b_sender", type_=String()))
    .scalar_subquery()
)


async def insert_transfer(connection: Connection, row: dict[str, Any]) -> int | None:
    """Record a new transfer; its sender's (`payer_processor`) net-debit cap as it is now,
    None without one. IntegrityError if the transfer id exists."""
    result = await connection.execute(_INSERT_TRANSFER, {**row, "b_sender": row["payer_processor"]})
    cap = result.scalar_one()
    return int(cap) if cap is not None else None


@functools.cache
def _decide_transfer(dialect: str, in_window: bool) -> Any:
    """UPDATE a RESERVED transfer to its final state RETURNING the decided row; a commit
    takes the open window's id in the same statement, share-locking that window on
    PostgreSQL so that a close waits for this commit."""
    values: dict[str, Any] = {
        "state": prepared.param(transfers.c.state),
        "decided_at": prepared.param(transfers.c.decided_at),
        "fulfilment": prepared.param(transfers.c.fulfilment),
        "reason_code": prepared.param(transfers.c.reason_code),
    }
    if in_window:
        window = select(windows.c.window_id).where(windows.c.state == "open")
        if dialect == "postgresql":
            window = window.with_for_update(read=True)
        values["window_id"] = window.scalar_subquery()
        values["folded"] = False  # positions: `fold_positions` adds it
    return (
        update(transfers)
        .where(
            transfers.c.transfer_id == prepared.param(transfers.c.transfer_id),
            transfers.c.state == "reserved",
        )
        .values(values)
        .returning(*transfers.c)
    )


async def decide_transfer(
    connection: Connection,
    transfer_id: str,
    *,
    state: str,
    decided_at: int,
    fulfilment: str | None = None,
    reason_code: str | None = None,
    in_window: bool = False,
) -> dict[str, Any] | None:
    """Move a RESERVED transfer to its final state, and into the open window if
    `in_window` (a commit); the decided row, or None if it was not RESERVED (decided
    before). On PostgreSQL a close that committed while this statement waited for the
    window leaves the row's window_id NULL: the caller stamps it with `stamp_window`."""
    result = await connection.execute(
        _decide_transfer(connection.dialect.name, in_window),
        {
            "b_transfer_id": transfer_id,
            "b_state": state,
            "b_decided_at": decided_at,
            "b_fulfilment": fulfilment,
            "b_reason_code": reason_code,
        },
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


_STAMP_WINDOW: Final = (
    update(transfers)
    .where(transfers.c.transfer_id == prepared.param(transfers.c.transfer_id))
    .values(window_id=prepared.param(transfers.c.window_id))
)


async def stamp_window(connection: Connection, transfer_id: str, window_id: int) -> None:
    await connection.execute(
        _STAMP_WINDOW, {"b_transfer_id": transfer_id, "b_window_id": window_id}
    )


async def expired_reserved(connection: Connection, now: int, limit: int) -> list[str]:
    result = await connection.execute(
        select(transfers.c.transfer_id)
        .where(transfers.c.state == "reserved", transfers.c.expires_at <= now)
        .order_by(transfers.c.expires_at)
        .limit(limit)
    )
    return [row[0] for row in result]


async def undecided_payments(connection: Connection, now: int, limit: int) -> list[dict[str, Any]]:
    """RESERVED payments still inside their lifetime, with the routed prepare to resend."""
    result = await connection.execute(
        select(
            transfers.c.transfer_id,
            transfers.c.payee_processor,
            transfers.c.condition,
            transfers.c.expires_at,
            transfers.c.routed,
        )
        .where(
            transfers.c.state == "reserved",
            transfers.c.kind == "payment",
            transfers.c.routed.is_not(None),
            transfers.c.expires_at > now,
        )
        .order_by(transfers.c.expires_at)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


_REFUNDS_TOTAL: Final = select(func.coalesce(func.sum(transfers.c.amount_minor), 0)).where(
    transfers.c.original_transfer_id == prepared.param(transfers.c.original_transfer_id),
    transfers.c.kind == "refund",
    transfers.c.state.in_(("reserved", "committed")),
)


async def refunds_total(connection: Connection, original_transfer_id: str) -> int:
    """Refunds of a transfer that are committed or still in flight."""
    result = await connection.execute(
        _REFUNDS_TOTAL, {"b_original_transfer_id": original_transfer_id}
    )
    return int(result.scalar_one())


def _upsert(dialect: str, table: Table, keys: list[str], set_: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE with a `b_<column>` parameter per column, in
    the dialect's own construct (what `semops.store.db.upsert` builds with values)."""
    values = {column.key: prepared.param(column) for column in table.c}
    if dialect == "postgresql":
        return (
            pg_insert(table).values(**values).on_conflict_do_update(index_elements=keys, set_=set_)
        )
    return (
        sqlite_insert(table).values(**values).on_conflict_do_update(index_elements=keys, set_=set_)
    )


@functools.cache
def _adjust_position(dialect: str) -> Any:
    return _upsert(
        dialect,
        positions,
        ["participant_id", "currency"],
        {"net_minor": positions.c.net_minor + bindparam("b_delta", type_=BigInteger())},
    )


async def adjust_position(
    connection: Connection, participant_id: str, currency: str, delta_minor: int
) -> None:
    await connection.execute(
        _adjust_position(connection.dialect.name),
        {
            "b_participant_id": participant_id,
            "b_currency": currency,
            "b_net_minor": delta_minor,
            "b_delta": delta_minor,
        },
    )


@functools.cache
def _cap_exposure() -> Any:
    open_window = select(windows.c.window_id).where(windows.c.state == "open").scalar_subquery()
    participant_id = prepared.param(window_positions.c.participant_id)
    currency = prepared.param(window_positions.c.currency)
    w = window_positions.c
    kept = select(w.participant_id, w.currency, w.net_minor).where(w.window_id == open_window)
    sides = [side.subquery() for side in _unfolded_sides(open_window)]
    booked = union_all(
        kept, *(select(s.c.participant_id, s.c.currency, s.c.net_minor) for s in sides)
    ).subquery("booked")
    position = (
        select(func.coalesce(func.sum(booked.c.net_minor), 0))
        .where(booked.c.participant_id == participant_id, booked.c.currency == currency)
        .scalar_subquery()
    )
    in_flight = (
        select(func.coalesce(func.sum(transfers.c.amount_minor), 0))
        .where(
            transfers.c.payer_processor == participant_id,
            transfers.c.currency == currency,
            transfers.c.state == "reserved",
        )
        .scalar_subquery()
    )
    return select(position, in_flight)


async def cap_exposure(
    connection: Connection, participant_id: str, currency: str
) -> tuple[int, int]:
    """What counts against a processor's cap: its booked net position in the open window (0
    if no window is open) and what it may still owe for payments in flight. One statement,
    so one snapshot: read apart, a commit landing between the reads (reserved becomes
    position), or a fold (unfolded becomes the row), would be missed or counted twice
    under READ COMMITTED."""
    parameters = {"b_participant_id": participant_id, "b_currency": currency}
    row = (await connection.execute(_cap_exposure(), parameters)).one()
    return int(row[0]), int(row[1])


# --- settlement windows ---------------------------------------------------------------------


@functools.cache
def _open_window(lock: str | None) -> Any:
    query = select(windows).where(windows.c.state == "open")
    return query.with_for_update(read=lock == "share") if lock is not None else query


async def open_window(connection: Connection, *, lock: str | None = None) -> dict[str, Any] | None:
    """The open window. `lock`: "share" for a commit (many commits at once, no close
    meanwhile), "update" for a close (waits until those commits are done). PostgreSQL
    only; SQLite writers are serialised anyway."""
    query = _open_window(lock if connection.dialect.name == "postgresql" else None)
    row = (await connection.execute(query)).mappings().first()
    return dict(row) if row is not None else None


_CREATE_WINDOW: Final = insert(windows).values(
    window_id=prepared.param(windows.c.window_id),
    state="open",
    opened_at=prepared.param(windows.c.opened_at),
)


async def create_window(connection: Connection, window_id: int, now: int) -> None:
    """Open window `window_id`. IntegrityError if that id exists or another is open (a
    unique index holds "one open window" whatever races between workers)."""
    await connection.execute(_CREATE_WINDOW, {"b_window_id": window_id, "b_opened_at": now})


async def last_window_id(connection: Connection) -> int:
    result = await connection.execute(select(func.coalesce(func.max(windows.c.window_id), 0)))
    return int(result.scalar_one())


async def close_window(connection: Connection, window_id: int, values: dict[str, Any]) -> bool:
    result = await connection.execute(
        update(windows)
        .where(windows.c.window_id == window_id, windows.c.state == "open")
        .values(state="closed", **values)
    )
    return bool(result.rowcount == 1)


async def get_window(connection: Connection, window_id: int) -> dict[str, Any] | None:
    result = await connection.execute(select(windows).where(windows.c.window_id == window_id))
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def list_windows(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """The newest windows first, without their (large) reports."""
    columns = [column for column in windows.c if column.name not in ("report", "report_signature")]
    result = await connection.execute(
        select(*columns).order_by(windows.c.window_id.desc()).limit(limit)
    )
    return [dict(row) for row in result.mappings()]


async def window_transfers(
    connection: Connection, window_id: int, limit: int
) -> list[dict[str, Any]]:
    """The committed transfers of a window, in commit order."""
    result = await connection.execute(
        select(transfers)
        .where(transfers.c.window_id == window_id, transfers.c.state == "committed")
        .order_by(transfers.c.decided_at, transfers.c.transfer_id)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


@functools.cache
def _adjust_window_position(dialect: str) -> Any:
    """The upsert's DO UPDATE adds the row's own VALUES parameters (the same numbers)."""
    table = window_positions.c
    return _upsert(
        dialect,
        window_positions,
        ["window_id", "participant_id", "currency"],
        {
            name: table[name] + prepared.param(table[name])
            for name in (
                "net_minor",
                "sent_minor",
                "received_minor",
                "sent_count",
                "received_count",
            )
        },
    )


async def adjust_window_position(
    connection: Connection,
    window_id: int,
    participant_id: str,
    currency: str,
    *,
    sent_minor: int = 0,
    received_minor: int = 0,
) -> None:
    sent_count, received_count = int(sent_minor > 0), int(received_minor > 0)
    await connection.execute(
        _adjust_window_position(connection.dialect.name),
        {
            "b_window_id": window_id,
            "b_participant_id": participant_id,
            "b_currency": currency,
            "b_net_minor": received_minor - sent_minor,
            "b_sent_minor": sent_minor,
            "b_received_minor": received_minor,
            "b_sent_count": sent_count,
            "b_received_count": received_count,
        },
    )


async def reserved_outflows(connection: Connection, participant_id: str) -> dict[str, int]:
    """Per currency, what a processor has in flight (sent, not yet decided)."""
    result = await connection.execute(
        select(transfers.c.currency, func.sum(transfers.c.amount_minor))
        .where(transfers.c.payer_processor == participant_id, transfers.c.state == "reserved")
        .group_by(transfers.c.currency)
    )
    return {str(row[0]): int(row[1]) for row in result}


# --- positions, folded in from the committed transfers --------------------------------------
#
# A commit marks its transfer unfolded (`folded` false) and touches no row another commit
# touches. `fold_positions`, the background pass, adds unfolded transfers to `positions` and
# `window_positions` in batches and marks them folded. A position *is* ("booked") its row
# plus the transfers not folded into it yet, read in one statement: one snapshot, and a fold
# moves a transfer from one side to the other in one transaction, so nothing is counted
# twice or missed.

_SUMS: Final = ("net_minor", "sent_minor", "received_minor", "sent_count", "received_count")
# Transfers one fold transaction takes at most (bounded work under the rows' locks).
FOLD_BATCH_MAX: Final = 5000


def _unfolded_sides(window_id: Any | None) -> list[Select[Any]]:
    """Each unfolded transfer once per side, as window_positions columns (window_id,
    participant_id, currency and the sums), of one window or of all."""
    t = transfers.c
    zero, one = literal(0, BigInteger()), literal(1, BigInteger())
    sides = []
    for participant, sending in ((t.payer_processor, True), (t.payee_processor, False)):
        query = select(
            t.window_id.label("window_id"),
            participant.label("participant_id"),
            t.currency.label("currency"),
            (-t.amount_minor if sending else t.amount_minor).label("net_minor"),
            (t.amount_minor if sending else zero).label("sent_minor"),
            (zero if sending else t.amount_minor).label("received_minor"),
            (one if sending else zero).label("sent_count"),
            (zero if sending else one).label("received_count"),
        ).where(not_(t.folded))
        if window_id is not None:
            query = query.where(t.window_id == window_id)
        sides.append(query)
    return sides


@functools.cache
def _booked_window_positions(with_participant: bool) -> Select[Any]:
    window_id = bindparam("b_window_id", type_=BigInteger())
    w = window_positions.c
    kept = select(*(w[column.key] for column in window_positions.c)).where(w.window_id == window_id)
    booked = union_all(kept, *_unfolded_sides(window_id)).subquery("booked")
    query = select(
        booked.c.window_id,
        booked.c.participant_id,
        booked.c.currency,
        *(func.sum(booked.c[name]).label(name) for name in _SUMS),
    ).group_by(booked.c.window_id, booked.c.participant_id, booked.c.currency)
    if with_participant:
        query = query.where(
            booked.c.participant_id == bindparam("b_participant_id", type_=String())
        )
    return query.order_by(booked.c.participant_id, booked.c.currency).limit(
        DIRECTORY_ENTRIES_MAX * 8
    )


async def window_positions_of(
    connection: Connection, window_id: int, participant_id: str | None = None
) -> list[dict[str, Any]]:
    """Each processor's booked position per currency within one window (one statement)."""
    parameters: dict[str, Any] = {"b_window_id": window_id}
    if participant_id is not None:
        parameters["b_participant_id"] = participant_id
    result = await connection.execute(
        _booked_window_positions(participant_id is not None), parameters
    )
    return [{**row, **{name: int(row[name]) for name in _SUMS}} for row in result.mappings()]


@functools.cache
def _booked_positions() -> Select[Any]:
    kept = select(positions.c.participant_id, positions.c.currency, positions.c.net_minor)
    sides = [side.subquery() for side in _unfolded_sides(None)]
    unfolded = [select(s.c.participant_id, s.c.currency, s.c.net_minor) for s in sides]
    booked = union_all(kept, *unfolded).subquery("booked")
    return (
        select(booked.c.participant_id, booked.c.currency, func.sum(booked.c.net_minor))
        .group_by(booked.c.participant_id, booked.c.currency)
        .order_by(booked.c.participant_id, booked.c.currency)
    )


async def list_positions(connection: Connection) -> list[dict[str, Any]]:
    """Every processor's booked net position per currency (one statement)."""
    result = await connection.execute(_booked_positions())
    return [
        {"participant_id": str(row[0]), "currency": str(row[1]), "net_minor": int(row[2])}
        for row in result
    ]


@functools.cache
def _window_transfer_count() -> Select[Any]:
    window_id = bindparam("b_window_id", type_=BigInteger())
    kept = (
        select(func.coalesce(func.sum(window_positions.c.sent_count), 0))
        .where(window_positions.c.window_id == window_id)
        .scalar_subquery()
    )
    unfolded = (
        select(func.count())
        .select_from(transfers)
        .where(not_(transfers.c.folded), transfers.c.window_id == window_id)
        .scalar_subquery()
    )
    return select(kept + unfolded)


async def window_transfer_count(connection: Connection, window_id: int) -> int:
    """How many transfers a window holds (each is sent by exactly one processor)."""
    result = await connection.execute(_window_transfer_count(), {"b_window_id": window_id})
    return int(result.scalar_one())


async def fold_positions(connection: Connection, limit: int) -> int:
    """Add up to `limit` unfolded transfers to the positions and window positions and mark
    them folded, in the caller's write transaction; how many. Each transfer is folded
    exactly once: the UPDATE takes only rows still unfolded (on PostgreSQL a concurrent
    fold skips the rows another has locked), and a commit not yet committed is not seen,
    so the next fold takes it. The rows are moved in key order, so folds running side by
    side lock them in the same order. SQLite runs one writer at a time."""
    t = transfers.c
    pending = (
        select(t.transfer_id)
        .where(not_(t.folded))
        .order_by(t.transfer_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await connection.execute(
        update(transfers)
        .where(not_(t.folded), t.transfer_id.in_(pending))
        .values(folded=True)
        .returning(t.window_id, t.payer_processor, t.payee_processor, t.currency, t.amount_minor)
    )
    sums: dict[tuple[int, str, str], list[int]] = {}
    count = 0
    for window_id, sender, receiver, currency, amount in result:
        count += 1
        assert window_id is not None, "a committed transfer carries its window"
        for participant, sending in ((sender, True), (receiver, False)):
            moved = sums.setdefault((int(window_id), participant, currency), [0, 0, 0, 0, 0])
            moved[0] += -amount if sending else amount
            moved[1 if sending else 2] += amount
            moved[3 if sending else 4] += 1
    nets: dict[tuple[str, str], int] = {}  # a position moves by its windows' nets
    for (_, participant, currency), moved in sums.items():
        nets[(participant, currency)] = nets.get((participant, currency), 0) + moved[0]
    for (participant, currency), net in sorted(nets.items()):
        await adjust_position(connection, participant, currency, net)
    for (window_id, participant, currency), moved in sorted(sums.items()):
        await connection.execute(
            _adjust_window_position(connection.dialect.name),
            {
                "b_window_id": window_id,
                "b_participant_id": participant,
                "b_currency": currency,
                **{f"b_{name}": value for name, value in zip(_SUMS, moved, strict=True)},
            },
        )
    return count


# --- outbox -----------------------------------------------------------------------------------


async def enqueue(
    connection: Connection, destination: str, path: str, body: str, now: int
) -> dict[str, Any]:
    """Queue a status message; the row as stored, for the deliverer."""
    payload = {"destination": destination, "path": path, "body": body}
    return await outbox_queries.enqueue(connection, outbox, payload, now)


async def due_messages(connection: Connection, now: int, limit: int) -> list[dict[str, Any]]:
    return await outbox_queries.due_messages(connection, outbox, now, limit)


async def mark_delivered(connection: Connection, message_ids: list[int], now: int) -> None:
    await outbox_queries.mark_delivered(connection, outbox, message_ids, now)


async def mark_attempt(
    connection: Connection, message_id: int, attempts: int, next_attempt_at: int
) -> None:
    await outbox_queries.mark_attempt(connection, outbox, message_id, attempts, next_attempt_at)
