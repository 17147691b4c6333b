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
              Updated in the same transaction as the commit, so positions always equal
              the sum of committed transfers.
outbox        router-signed status messages waiting to be delivered to a processor that
              did not answer; re-sent until acknowledged.
windows       settlement windows: exactly one is open; every committed transfer carries
              the id of the window that was open when it committed (`transfers.window_id`,
              set in the committing transaction). Closing stores the signed report.
window_positions  each processor's position per currency within one window, with sent
              and received totals and counts: the net-debit cap is checked against the
              open window's row, and the report is checked against these rows.
audit_log     the hash-chained audit log, audit_pending the entries staged for it
              (semops.store.audit).
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
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
    Index("ix_transfers_state_expires", "state", "expires_at"),
    Index("ix_transfers_original", "original_transfer_id"),
    Index("ix_transfers_window", "window_id"),
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
def _adjust_positions(dialect: str, count: int) -> Any:
    """`count` participants' positions in one upsert: each row's DO UPDATE adds its own
    VALUES (`excluded`), so the rows may carry different deltas."""
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert_for(positions).from_select(
        [column.key for column in positions.c], prepared.bound_rows(positions, count)
    )
    return statement.on_conflict_do_update(
        index_elements=["participant_id", "currency"],
        set_={"net_minor": positions.c.net_minor + statement.excluded.net_minor},
    )


async def adjust_positions(
    connection: Connection, currency: str, deltas: list[tuple[str, int]]
) -> None:
    """Move several participants' positions (distinct ids, locked in the order given) in
    one statement."""
    assert len({participant for participant, _ in deltas}) == len(deltas), deltas
    parameters: dict[str, Any] = {}
    for index, (participant_id, delta_minor) in enumerate(deltas):
        parameters[f"b_participant_id_{index}"] = participant_id
        parameters[f"b_currency_{index}"] = currency
        parameters[f"b_net_minor_{index}"] = delta_minor
    await connection.execute(_adjust_positions(connection.dialect.name, len(deltas)), parameters)


async def get_position(connection: Connection, participant_id: str, currency: str) -> int:
    result = await connection.execute(
        select(positions.c.net_minor).where(
            positions.c.participant_id == participant_id, positions.c.currency == currency
        )
    )
    value = result.scalar_one_or_none()
    return int(value) if value is not None else 0


@functools.cache
def _cap_exposure() -> Any:
    window = window_positions.c
    open_window = select(windows.c.window_id).where(windows.c.state == "open").scalar_subquery()
    position = (
        select(window.net_minor)
        .where(
            window.window_id == open_window,
            window.participant_id == prepared.param(window.participant_id),
            window.currency == prepared.param(window.currency),
        )
        .scalar_subquery()
    )
    in_flight = (
        select(func.coalesce(func.sum(transfers.c.amount_minor), 0))
        .where(
            transfers.c.payer_processor == prepared.param(window.participant_id),
            transfers.c.currency == prepared.param(window.currency),
            transfers.c.state == "reserved",
        )
        .scalar_subquery()
    )
    return select(func.coalesce(position, 0), in_flight)


async def cap_exposure(
    connection: Connection, participant_id: str, currency: str
) -> tuple[int, int]:
    """What counts against a processor's cap: its net position in the open window (0 if no
    window is open) and what it may still owe for payments in flight. One statement, so
    one snapshot: read apart, a commit landing between the reads (reserved becomes
    position) would be missed by both under READ COMMITTED."""
    parameters = {"b_participant_id": participant_id, "b_currency": currency}
    row = (await connection.execute(_cap_exposure(), parameters)).one()
    return int(row[0]), int(row[1])


async def list_positions(connection: Connection) -> list[dict[str, Any]]:
    result = await connection.execute(
        select(positions).order_by(positions.c.participant_id, positions.c.currency)
    )
    return [dict(row) for row in result.mappings()]


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


_WINDOW_SUMS: Final = ("net_minor", "sent_minor", "received_minor", "sent_count", "received_count")


@functools.cache
def _adjust_window_positions(dialect: str, count: int) -> Any:
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert_for(window_positions).from_select(
        [column.key for column in window_positions.c],
        prepared.bound_rows(window_positions, count),
    )
    return statement.on_conflict_do_update(
        index_elements=["window_id", "participant_id", "currency"],
        set_={name: window_positions.c[name] + statement.excluded[name] for name in _WINDOW_SUMS},
    )


async def adjust_window_positions(
    connection: Connection, window_id: int, currency: str, moves: list[tuple[str, int, int]]
) -> None:
    """`adjust_window_position` for several participants, (id, sent, received) each, in one
    statement (distinct ids, locked in the order given)."""
    assert len({participant for participant, _, _ in moves}) == len(moves), moves
    parameters: dict[str, Any] = {}
    for index, (participant_id, sent_minor, received_minor) in enumerate(moves):
        parameters.update(
            {
                f"b_window_id_{index}": window_id,
                f"b_participant_id_{index}": participant_id,
                f"b_currency_{index}": currency,
                f"b_net_minor_{index}": received_minor - sent_minor,
                f"b_sent_minor_{index}": sent_minor,
                f"b_received_minor_{index}": received_minor,
                f"b_sent_count_{index}": int(sent_minor > 0),
                f"b_received_count_{index}": int(received_minor > 0),
            }
        )
    await connection.execute(
        _adjust_window_positions(connection.dialect.name, len(moves)), parameters
    )


async def window_positions_of(
    connection: Connection, window_id: int, participant_id: str | None = None
) -> list[dict[str, Any]]:
    query = select(window_positions).where(window_positions.c.window_id == window_id)
    if participant_id is not None:
        query = query.where(window_positions.c.participant_id == participant_id)
    result = await connection.execute(
        query.order_by(window_positions.c.participant_id, window_positions.c.currency).limit(
            DIRECTORY_ENTRIES_MAX * 8
        )
    )
    return [dict(row) for row in result.mappings()]


async def window_transfer_count(connection: Connection, window_id: int) -> int:
    """How many transfers a window holds (each is sent by exactly one processor)."""
    result = await connection.execute(
        select(func.coalesce(func.sum(window_positions.c.sent_count), 0)).where(
            window_positions.c.window_id == window_id
        )
    )
    return int(result.scalar_one())


async def reserved_outflows(connection: Connection, participant_id: str) -> dict[str, int]:
    """Per currency, what a processor has in flight (sent, not yet decided)."""
    result = await connection.execute(
        select(transfers.c.currency, func.sum(transfers.c.amount_minor))
        .where(transfers.c.payer_processor == participant_id, transfers.c.state == "reserved")
        .group_by(transfers.c.currency)
    )
    return {str(row[0]): int(row[1]) for row in result}


# --- outbox -----------------------------------------------------------------------------------


_ENQUEUE: Final = (
    insert(outbox)
    .values(
        destination=prepared.param(outbox.c.destination),
        path=prepared.param(outbox.c.path),
        body=prepared.param(outbox.c.body),
        attempts=0,
        next_attempt_at=prepared.param(outbox.c.next_attempt_at),
        delivered_at=None,
        created_at=prepared.param(outbox.c.created_at),
    )
    .returning(outbox.c.message_id)
)


async def enqueue(
    connection: Connection, destination: str, path: str, body: str, now: int
) -> dict[str, Any]:
    """Queue a message; the row as stored (its id from the insert), for the deliverer."""
    row = {
        "destination": destination,
        "path": path,
        "body": body,
        "attempts": 0,
        "next_attempt_at": now,
        "delivered_at": None,
        "created_at": now,
    }
    result = await connection.execute(
        _ENQUEUE,
        {
            "b_destination": destination,
            "b_path": path,
            "b_body": body,
            "b_next_attempt_at": now,
            "b_created_at": now,
        },
    )
    return {"message_id": int(result.scalar_one()), **row}


async def due_messages(connection: Connection, now: int, limit: int) -> list[dict[str, Any]]:
    return await outbox_queries.due_messages(connection, outbox, now, limit)


async def mark_delivered(connection: Connection, message_ids: list[int], now: int) -> None:
    await outbox_queries.mark_delivered(connection, outbox, message_ids, now)


async def mark_attempt(
    connection: Connection, message_id: int, attempts: int, next_attempt_at: int
) -> None:
    await outbox_queries.mark_attempt(connection, outbox, message_id, attempts, next_attempt_at)
