"""A processor's tables and the queries on them. The only place the processor's SQL lives.

One processor is both a payer processor (its customers pay) and a payee processor (its
merchants and persons are paid), so its tables fall in three groups:

ledger       accounts, entries and postings: the double-entry journal written only through
             `semops.ledger` planning functions. A customer's or merchant's balance is
             kept in its row with every posting; a system account's (suspense,
             settlement, funding: every payment touches them) is its row plus its
             postings not yet folded into it (`booked_balance`, `fold_system_postings`).
payer side   customers, activation codes, devices, PIN credentials, orders (an order and
             the outbound transfer it became, in PAYER_TRANSFER states), refunds received
             for those transfers (refunds_in), deposits.
payee side   payees (merchants and persons), requests (REQUEST states, with the fulfilment
             that only this processor knows), inbound transfers (PAYEE_TRANSFER states,
             holding only the one-time payer reference, never a payer identity), refunds
             sent (REFUND states) and the webhook outbox of signed payment notices.
audit        audit_log, the hash-chained audit log, and audit_pending, entries staged for it
             (semops.store.audit).

Every function takes an open connection: the caller decides the transaction boundary.
`for_update` locks the row on PostgreSQL and is a no-op on SQLite, whose writers are
serialised by `Database.write()`.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from semops.store import outbox as outbox_queries
from semops.store import prepared
from semops.store.audit import audit_pending_table, audit_table
from semops.store.db import Connection

metadata = MetaData()

# --- ledger ---------------------------------------------------------------------------------

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(34), primary_key=True),
    Column("kind", String(16), nullable=False),  # customer | merchant | suspense | ...
    Column("currency", String(3), nullable=False),
    Column("balance_minor", BigInteger, nullable=False),
    Column("overdraft_minor", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # open | blocked
    Column("created_at", BigInteger, nullable=False),
    Index("ix_accounts_kind_currency", "kind", "currency"),
)

entries = Table(
    "entries",
    metadata,
    # The order entries were written in (timestamps tie within a second).
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("entry_id", String(80), nullable=False),  # "<ref>:<kind>", see entry_id_for
    Column("kind", String(16), nullable=False),
    Column("transfer_ref", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("entry_id", name="uq_entries_entry_id"),
    Index("ix_entries_ref", "transfer_ref"),
    # A reservation is closed once: its post and its void share this key, so the closing
    # entry's INSERT itself finds an earlier closure (`check_closing` then tells a retry
    # from a conflict) instead of two lookups before every post.
    Index(
        "uq_entries_closure",
        "transfer_ref",
        unique=True,
        sqlite_where=text("kind IN ('post', 'void')"),
        postgresql_where=text("kind IN ('post', 'void')"),
    ),
)

postings = Table(
    "postings",
    metadata,
    Column("entry_id", String(80), ForeignKey("entries.entry_id"), primary_key=True),
    Column("account_id", String(34), ForeignKey("accounts.account_id"), primary_key=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Whether the amount is in the account's row. A customer's or merchant's posting is,
    # from the start (its row moves in the same transaction); a system account's is not
    # until `fold_system_postings` adds it, so no payment writes a row every payment shares.
    Column("folded", Boolean, nullable=False, server_default=true()),
    Index("ix_postings_account", "account_id", "created_at"),
    Index(
        "ix_postings_unfolded",
        "account_id",
        sqlite_where=text("folded = 0"),
        postgresql_where=text("NOT folded"),
    ),
)

# --- payer side -----------------------------------------------------------------------------

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(32), primary_key=True),
    Column("account_id", String(34), ForeignKey("accounts.account_id"), nullable=False),
    Column("name", String(40), nullable=False),
    Column("phone", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("account_id", name="uq_customers_account"),
)

activation_codes = Table(
    "activation_codes",
    metadata,
    Column("code_digest", String(43), primary_key=True),  # SHA-256 of the code, never the code
    Column("customer_id", String(32), nullable=False),
    Column("account_id", String(34), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # Whether enrolling with it may set the PIN of an account without one (a new account's
    # code, a reset's); a code for a further device never may (DESIGN.md §6).
    Column("sets_pin", Boolean, nullable=False, server_default=true()),
)

devices = Table(
    "devices",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("account_id", String(34), nullable=False),
    Column("jwk", Text, nullable=False),  # the public key only
    Column("device_name", String(40), nullable=False),
    Column("status", String(16), nullable=False),  # active | revoked
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_devices_account", "account_id"),
)

credentials = Table(
    "credentials",
    metadata,
    Column("account_id", String(34), primary_key=True),
    Column("pin_value", String(43), nullable=False),  # HMAC under the PIN key held apart
    Column("failures", Integer, nullable=False),
    Column("locked", Boolean, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("account_id", String(34), nullable=False),
    Column("device_kid", String(64), nullable=False),
    Column("content_digest", String(43), nullable=False),
    Column("transfer_id", String(64), nullable=False),
    Column("on_us", Boolean, nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("payee_processor", String(32), nullable=False),
    Column("payee_id", String(32), nullable=False),
    Column("payee_name", String(40), nullable=False),
    Column("reference", String(35), nullable=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("condition", String(43), nullable=False),
    Column("state", String(16), nullable=False),  # PayerTransferState
    Column("expires_at", BigInteger, nullable=False),
    Column("fulfilment", String(43), nullable=True),
    Column("reason_code", String(64), nullable=True),
    Column("receipt", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    # Routed orders: the signed TransferPrepare, sent again identical when the router has
    # no record of it (lost on the way, or the router restarted) while it can still commit.
    Column("prepare", Text, nullable=True),
    UniqueConstraint("transfer_id", name="uq_orders_transfer"),
    Index("ix_orders_state", "state", "expires_at"),
    Index("ix_orders_account", "account_id", "created_at"),
)

# Orders refused after the device signature checked out (wrong PIN, lack of funds, a request
# no longer payable, ...): the order id is single-use (DESIGN.md §6 "Replay"), so the same
# order sent again gets the same refusal instead of a second PIN attempt or a late payment.
# Kept until the order itself has expired; after that it is refused as expired anyway.
order_refusals = Table(
    "order_refusals",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("account_id", String(34), nullable=False),
    Column("content_digest", String(43), nullable=False),
    Column("code", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_order_refusals_expires", "expires_at"),
)

# Device-signed calls already seen (DESIGN.md §6 "Every signed call is single use"): the id
# of every DeviceAuth, and the digest of every Enrolment, kept until that message has
# expired (afterwards it is refused as expired anyway). A copy sent again meets its row: a
# DeviceAuth is refused (`replay`), an enrolment that was refused gets the same refusal
# again, never a second PIN attempt.
signed_calls = Table(
    "signed_calls",
    metadata,
    Column("call_id", String(80), primary_key=True),  # "auth:<auth_id>" | "enrolment:<digest>"
    Column("kid", String(64), nullable=False),  # the device key that signed it
    Column("code", String(64), nullable=True),  # a refused enrolment's error code
    Column("expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_signed_calls_expires", "expires_at"),
)

# What happened to an account's credentials, told to the account's devices (DESIGN.md §6):
# a code to add a device was issued, a device was added or revoked, the PIN was reset. A
# customer whose activation code leaked sees it here on the phone they still hold.
account_notices = Table(
    "account_notices",
    metadata,
    Column("notice_id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", String(34), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", String(16), nullable=False),  # customer | operator
    Column("device_name", String(40), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_account_notices_account", "account_id", "notice_id"),
)

refunds_in = Table(
    "refunds_in",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("transfer_id", String(64), nullable=False),
    Column("account_id", String(34), nullable=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("content_digest", String(43), nullable=False),
    Column("state", String(16), nullable=False),  # pending | credited | aborted | rejected
    Column("reason_code", String(64), nullable=True),
    Column("result", Text, nullable=False),  # the signed RefundResult we answered
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Index("ix_refunds_in_transfer", "transfer_id"),
)

deposits = Table(
    "deposits",
    metadata,
    Column("deposit_ref", String(64), primary_key=True),
    Column("account_id", String(34), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reference", String(35), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# --- payee side -----------------------------------------------------------------------------

payees = Table(
    "payees",
    metadata,
    Column("payee_id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),  # merchant | person
    Column("display_name", String(40), nullable=False),
    Column("account_id", String(34), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("api_key_digest", String(43), nullable=True),  # SHA-256 of the API key
    Column("webhook_url", String(256), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # semops.protocol.names.name_key: equal for names a payer could take for each other.
    Column("name_key", String(43), nullable=True),
    UniqueConstraint("api_key_digest", name="uq_payees_api_key"),
    UniqueConstraint("account_id", name="uq_payees_account"),
    Index("ix_payees_name_key", "name_key"),
)

requests = Table(
    "requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("payee_id", String(32), nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("content_digest", String(43), nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reference", String(35), nullable=True),
    Column("basket_digest", String(43), nullable=True),
    Column("condition", String(43), nullable=False),
    Column("fulfilment", String(43), nullable=False),
    Column("token", Text, nullable=False),
    Column("state", String(24), nullable=False),  # RequestState
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("transfer_id", String(64), nullable=True),
    Column("paid_at", BigInteger, nullable=True),
    Column("refunded_minor", BigInteger, nullable=False),
    Column("notice", Text, nullable=True),
    UniqueConstraint("payee_id", "idempotency_key", name="uq_requests_idempotency"),
    Index("ix_requests_transfer", "transfer_id"),
)

inbound_transfers = Table(
    "inbound_transfers",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("content_digest", String(43), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("payee_id", String(32), nullable=True),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("condition", String(43), nullable=False),
    Column("payer_ref", String(43), nullable=True),  # one-time pseudonym, never an identity
    Column("expires_at", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # PayeeTransferState
    Column("reason_code", String(64), nullable=True),
    Column("answer", Text, nullable=False),  # the signed fulfil or reject we answered
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Index("ix_inbound_state", "state", "expires_at"),
)

refunds_out = Table(
    "refunds_out",
    metadata,
    Column("refund_id", String(64), primary_key=True),  # ours: the id the network sees
    Column("merchant_refund_id", String(64), nullable=False),  # the merchant's own key
    Column("payee_id", String(32), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("transfer_id", String(64), nullable=False),  # the payment refunded
    Column("account_id", String(34), nullable=False),  # the payee account that pays it
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(200), nullable=True),
    Column("content_digest", String(43), nullable=False),
    Column("on_us", Boolean, nullable=False),
    Column("state", String(16), nullable=False),  # RefundState
    Column("reason_code", String(64), nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    UniqueConstraint("payee_id", "merchant_refund_id", name="uq_refunds_out_merchant"),
    Index("ix_refunds_out_request", "request_id"),
    Index("ix_refunds_out_state", "state", "expires_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("message_id", Integer, primary_key=True, autoincrement=True),
    Column("destination", String(256), nullable=False),  # the merchant's webhook URL
    Column("request_id", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_processor_outbox_due", "delivered_at", "next_attempt_at"),
)


audit_log = audit_table(metadata)
audit_pending = audit_pending_table(metadata)

# --- generic row access ---------------------------------------------------------------------


def _key_column(table: Table) -> Any:
    return prepared.key_column(table)


async def get_row(
    connection: Connection, table: Table, key: str, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The row of a single-column-key table, or None."""
    query = prepared.select_by_key(table, for_update and connection.dialect.name == "postgresql")
    row = (await connection.execute(query, {"b_key": key})).mappings().first()
    return dict(row) if row is not None else None


async def find_row(
    connection: Connection, table: Table, *, for_update: bool = False, **where: Any
) -> dict[str, Any] | None:
    """The first row whose columns equal `where`, or None."""
    names = tuple((name, value is None) for name, value in where.items())
    if not where or not prepared.columns_known(table, tuple(where)) or not prepared.plain(where):
        query = select(table).where(
            and_(*(table.c[name] == value for name, value in where.items()))
        )
        if for_update and connection.dialect.name == "postgresql":
            query = query.with_for_update()
        row = (await connection.execute(query.limit(1))).mappings().first()
        return dict(row) if row is not None else None
    query = prepared.select_where(
        table, names, for_update and connection.dialect.name == "postgresql"
    )
    parameters = {f"b_{name}": value for name, value in where.items() if value is not None}
    row = (await connection.execute(query, parameters)).mappings().first()
    return dict(row) if row is not None else None


# Payee names are checked against each other before one is added: on PostgreSQL a
# transaction-scoped advisory lock makes "no look-alike exists, add it" one step (SQLite
# runs one write transaction at a time anyway).
_PAYEE_NAMES_LOCK_KEY: Final = 0x5E0A9A7E


_LOCK_PAYEE_NAMES: Final = text("SELECT pg_advisory_xact_lock(:key)")


async def lock_payee_names(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        await connection.execute(_LOCK_PAYEE_NAMES, {"key": _PAYEE_NAMES_LOCK_KEY})


async def insert_row(connection: Connection, table: Table, row: dict[str, Any]) -> None:
    await prepared.insert_row(connection, table, row)


async def update_row(
    connection: Connection,
    table: Table,
    key: str,
    values: dict[str, Any],
    *,
    expected_state: str | None = None,
) -> bool:
    """Update one row; with `expected_state`, only if it is still in that state."""
    return await prepared.update_row(connection, table, key, values, expected_state) == 1


async def list_rows(
    connection: Connection, table: Table, limit: int, **where: Any
) -> list[dict[str, Any]]:
    query = select(table).where(and_(*(table.c[name] == value for name, value in where.items())))
    result = await connection.execute(query.order_by(table.c.created_at.desc()).limit(limit))
    return [dict(row) for row in result.mappings()]


# --- ledger ---------------------------------------------------------------------------------


async def system_account_id(connection: Connection, kind: str, currency: str) -> str | None:
    result = await connection.execute(
        select(accounts.c.account_id).where(
            accounts.c.kind == kind, accounts.c.currency == currency
        )
    )
    value = result.scalar_one_or_none()
    return str(value) if value is not None else None


_select_entry_postings: Final = select(postings.c.account_id, postings.c.amount_minor).where(
    postings.c.entry_id == prepared.param(postings.c.entry_id)
)


def _entry_if_new(dialect: str) -> Any:
    """INSERT the entry row from its `b_<column>` parameters ON CONFLICT DO NOTHING (its id,
    or for a post or void its reservation's closure, taken)."""
    insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
    columns = ("entry_id", "kind", "transfer_ref", "currency", "created_at")
    return (
        insert_for(entries)
        .values({name: prepared.param(entries.c[name]) for name in columns})
        .on_conflict_do_nothing()
    )


def _insert_entry_if_new(dialect: str) -> Any:
    return _entry_if_new(dialect).returning(entries.c.seq)


_INSERT_ENTRY_IF_NEW: Final = {
    name: _insert_entry_if_new(name) for name in ("postgresql", "sqlite")
}
_move_balance_within: Final = (
    update(accounts)
    .where(
        accounts.c.account_id == prepared.param(accounts.c.account_id),
        accounts.c.balance_minor.between(
            prepared.param(accounts.c.balance_minor, "low"),
            prepared.param(accounts.c.balance_minor, "high"),
        ),
    )
    .values(balance_minor=accounts.c.balance_minor + prepared.param(accounts.c.balance_minor))
    .returning(*accounts.c)
)
# The bounds of a 64-bit column: a balance plus a posting is computed in SQL, and must not
# overflow there (PostgreSQL raises, SQLite turns the sum into a float).
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


async def insert_entry_if_new(
    connection: Connection, entry_id: str, kind: str, transfer_ref: str, currency: str, now: int
) -> bool:
    """INSERT the entry row unless one with its id (or, for a post or void, another closure
    of its reservation) exists: True if inserted, in one statement either way."""
    result = await connection.execute(
        _INSERT_ENTRY_IF_NEW[connection.dialect.name],
        {
            "b_entry_id": entry_id,
            "b_kind": kind,
            "b_transfer_ref": transfer_ref,
            "b_currency": currency,
            "b_created_at": now,
        },
    )
    return result.first() is not None


async def move_balance(
    connection: Connection, account_id: str, amount_minor: int, balance_abs_max_minor: int
) -> dict[str, Any] | None:
    """Add `amount_minor` to an account's balance and return the row as it is after, in one
    statement; None (and nothing changed) if the account does not exist or the new balance
    would leave +-`balance_abs_max_minor`. On PostgreSQL the UPDATE locks the row."""
    low = max(_INT64_MIN, -balance_abs_max_minor - amount_minor)
    high = min(_INT64_MAX, balance_abs_max_minor - amount_minor)
    result = await connection.execute(
        _move_balance_within,
        {
            "b_account_id": account_id,
            "b_balance_minor": amount_minor,
            "b_low": low,
            "b_high": high,
        },
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


@functools.cache
def _insert_postings(count: int) -> Any:
    return insert(postings).from_select(
        [column.key for column in postings.c], prepared.bound_rows(postings, count)
    )


async def insert_postings(
    connection: Connection, entry_id: str, amounts: list[tuple[str, int, bool]], now: int
) -> None:
    """An entry's postings, in one INSERT: (account id, amount, folded) each, folded if the
    amount is already in the account's row (moved by `move_balance`)."""
    parameters: dict[str, Any] = {}
    for index, (account_id, amount_minor, folded) in enumerate(amounts):
        parameters[f"b_entry_id_{index}"] = entry_id
        parameters[f"b_account_id_{index}"] = account_id
        parameters[f"b_amount_minor_{index}"] = amount_minor
        parameters[f"b_created_at_{index}"] = now
        parameters[f"b_folded_{index}"] = folded
    await connection.execute(_insert_postings(len(amounts)), parameters)


@functools.cache
def _insert_entry_with_postings(count: int) -> Any:
    """PostgreSQL: the entry row (unless its key is taken) and its `count` postings in one
    statement, the entry as a data-modifying CTE the postings select from: if the entry
    is not inserted, neither are they. RETURNING one row per posting inserted."""
    entry = (
        _entry_if_new("postgresql").returning(entries.c.entry_id, entries.c.created_at).cte("entry")
    )
    rows = [
        select(
            entry.c.entry_id,
            bindparam(f"b_account_id_{index}", type_=postings.c.account_id.type),
            bindparam(f"b_amount_minor_{index}", type_=postings.c.amount_minor.type),
            entry.c.created_at,
            bindparam(f"b_folded_{index}", type_=postings.c.folded.type),
        ).select_from(entry)
        for index in range(count)
    ]
    names = ["entry_id", "account_id", "amount_minor", "created_at", "folded"]
    return (
        insert(postings)
        .from_select(names, union_all(*rows) if count > 1 else rows[0])
        .add_cte(entry)
        .returning(postings.c.entry_id)
    )


async def insert_entry_with_postings(
    connection: Connection,
    entry: tuple[str, str, str, str],
    amounts: list[tuple[str, int, bool]],
    now: int,
) -> bool:
    """The entry row (entry id, kind, transfer ref, currency) with its postings ((account
    id, amount, folded) each), unless the entry's id or its reservation's closure is taken:
    True if written. One statement on PostgreSQL; on SQLite (no INSERT in a CTE, and a
    statement costs no round trip) the entry and then the postings."""
    entry_id, kind, transfer_ref, currency = entry
    if connection.dialect.name != "postgresql":
        if not await insert_entry_if_new(connection, entry_id, kind, transfer_ref, currency, now):
            return False
        await insert_postings(connection, entry_id, amounts, now)
        return True
    parameters: dict[str, Any] = {
        "b_entry_id": entry_id,
        "b_kind": kind,
        "b_transfer_ref": transfer_ref,
        "b_currency": currency,
        "b_created_at": now,
    }
    for index, (account_id, amount_minor, folded) in enumerate(amounts):
        parameters[f"b_account_id_{index}"] = account_id
        parameters[f"b_amount_minor_{index}"] = amount_minor
        parameters[f"b_folded_{index}"] = folded
    result = await connection.execute(_insert_entry_with_postings(len(amounts)), parameters)
    return len(result.all()) == len(amounts)


async def entry_taken(connection: Connection, entry_id: str, kind: str, transfer_ref: str) -> bool:
    """Whether inserting this entry would find its key taken (its id, or for a post or void
    its reservation's closure): the check a refused money move makes, so that a retry of
    a move already made is told apart from a refusal."""
    closing = kind in ("post", "void")
    query = (
        select(literal(1))
        .where(
            or_(
                entries.c.entry_id == entry_id,
                and_(entries.c.transfer_ref == transfer_ref, entries.c.kind.in_(("post", "void")))
                if closing
                else false(),
            )
        )
        .limit(1)
    )
    result = await connection.execute(query)
    return result.first() is not None


async def entry_postings(connection: Connection, entry_id: str) -> list[tuple[str, int]]:
    result = await connection.execute(_select_entry_postings, {"b_entry_id": entry_id})
    return [(str(row[0]), int(row[1])) for row in result]


async def postings_total(connection: Connection, account_id: str) -> int:
    result = await connection.execute(
        select(func.coalesce(func.sum(postings.c.amount_minor), 0)).where(
            postings.c.account_id == account_id
        )
    )
    return int(result.scalar_one())


async def held_minor(connection: Connection, account_id: str) -> int:
    """Money reserved from the account for transfers or refunds still in flight."""
    closing = entries.alias("closing")
    open_reserve = and_(
        entries.c.kind == "reserve",
        ~exists().where(
            closing.c.transfer_ref == entries.c.transfer_ref,
            closing.c.kind.in_(("post", "void")),
        ),
    )
    result = await connection.execute(
        select(func.coalesce(func.sum(postings.c.amount_minor), 0))
        .select_from(postings.join(entries, postings.c.entry_id == entries.c.entry_id))
        .where(postings.c.account_id == account_id, open_reserve)
    )
    return -int(result.scalar_one())


async def account_history(
    connection: Connection, account_id: str, limit: int
) -> list[dict[str, Any]]:
    """The account's postings with their entry kind and reference, newest first."""
    result = await connection.execute(
        select(
            postings.c.amount_minor,
            postings.c.created_at,
            entries.c.kind,
            entries.c.transfer_ref,
            entries.c.currency,
        )
        .select_from(postings.join(entries, postings.c.entry_id == entries.c.entry_id))
        .where(postings.c.account_id == account_id)
        .order_by(entries.c.seq.desc())
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


def _unfolded_total(account_id: Any) -> Any:
    return (
        select(func.coalesce(func.sum(postings.c.amount_minor), 0))
        .where(postings.c.account_id == account_id, not_(postings.c.folded))
        .scalar_subquery()
    )


# An account's balance as booked: its row plus what is not folded into it yet (nothing for a
# customer or merchant; a system account's postings since the last fold). One expression
# in one statement, so it reads the row and the postings in the same snapshot.
booked_balance: Final = (accounts.c.balance_minor + _unfolded_total(accounts.c.account_id)).label(
    "balance_minor"
)


async def booked_accounts(connection: Connection) -> list[dict[str, Any]]:
    """Every account as booked (the devnet's checks and the tests)."""
    columns = [booked_balance if c.key == "balance_minor" else c for c in accounts.c]
    result = await connection.execute(select(*columns).order_by(accounts.c.account_id))
    return [{**dict(row), "balance_minor": int(row["balance_minor"])} for row in result.mappings()]


async def booked_balance_of(connection: Connection, account_id: str) -> int | None:
    """One account's booked balance, or None if there is no such account."""
    result = await connection.execute(
        select(booked_balance).where(accounts.c.account_id == account_id)
    )
    value = result.scalar_one_or_none()
    return None if value is None else int(value)


async def booked_balances_of_kind(connection: Connection, kind: str) -> dict[str, int]:
    """The booked balance of every account of one kind (meant for the system kinds)."""
    result = await connection.execute(
        select(accounts.c.account_id, booked_balance).where(accounts.c.kind == kind)
    )
    return {str(row[0]): int(row[1]) for row in result}


async def balances_by_kind(connection: Connection) -> list[dict[str, Any]]:
    """Per kind and currency, the sum of the booked balances and the number of accounts:
    the rows' sums and the unfolded postings' in one statement (one snapshot)."""
    rows = (
        select(
            accounts.c.kind,
            accounts.c.currency,
            accounts.c.balance_minor.label("amount_minor"),
            literal(1).label("is_account"),
        )
        .union_all(
            select(
                accounts.c.kind,
                accounts.c.currency,
                postings.c.amount_minor,
                literal(0),
            )
            .select_from(postings.join(accounts, postings.c.account_id == accounts.c.account_id))
            .where(not_(postings.c.folded))
        )
        .subquery()
    )
    result = await connection.execute(
        select(
            rows.c.kind,
            rows.c.currency,
            func.sum(rows.c.amount_minor).label("balance_minor"),
            func.sum(rows.c.is_account).label("accounts"),
        ).group_by(rows.c.kind, rows.c.currency)
    )
    return [
        {**dict(row), "balance_minor": int(row["balance_minor"]), "accounts": int(row["accounts"])}
        for row in result.mappings()
    ]


async def fold_system_postings(connection: Connection, limit: int) -> tuple[int, dict[str, int]]:
    """Add up to `limit` unfolded postings into their accounts' rows and mark them folded,
    in the caller's write transaction: how many, and the amount per account. Each posting is
    folded exactly once: the UPDATE takes only rows still unfolded (on PostgreSQL a
    concurrent fold skips the rows another has locked, and one that still meets them
    waits, then finds them folded), and a posting not yet committed is not seen, so the
    next fold takes it. SQLite runs one writer at a time."""
    pending = (
        select(postings.c.entry_id, postings.c.account_id)
        .where(not_(postings.c.folded))
        .order_by(postings.c.entry_id, postings.c.account_id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL: folds side by side take other rows
    )
    result = await connection.execute(
        update(postings)
        .where(
            not_(postings.c.folded),
            tuple_(postings.c.entry_id, postings.c.account_id).in_(pending),
        )
        .values(folded=True)
        .returning(postings.c.account_id, postings.c.amount_minor)
    )
    count, totals = 0, dict[str, int]()
    for account_id, amount_minor in result:
        count += 1
        totals[account_id] = totals.get(account_id, 0) + int(amount_minor)
    for account_id, amount_minor in sorted(totals.items()):
        await connection.execute(
            update(accounts)
            .where(accounts.c.account_id == account_id)
            .values(balance_minor=accounts.c.balance_minor + amount_minor)
        )
    return count, totals


# --- payer side -----------------------------------------------------------------------------


async def unresolved_orders(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """Routed orders whose outcome this processor does not know yet, oldest first."""
    result = await connection.execute(
        select(orders)
        .where(orders.c.state.in_(("reserved", "prepared", "in_doubt")), orders.c.on_us.is_(False))
        .order_by(orders.c.expires_at)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


_order_or_refusal: Final = (
    select(literal("order").label("source"))
    .where(orders.c.order_id == prepared.param(orders.c.order_id))
    .union_all(
        select(literal("refusal")).where(
            order_refusals.c.order_id == prepared.param(order_refusals.c.order_id)
        )
    )
)


async def order_or_refusal(
    connection: Connection, order_id: str, found: set[str] | None = None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The stored order with this id, else its stored refusal: one statement when there is
    neither (a new order), two otherwise; none when `found` says which there is (from
    `device_and_order_seen`)."""
    if found is None:
        result = await connection.execute(_order_or_refusal, {"b_order_id": order_id})
        found = {str(row[0]) for row in result}
    if "order" in found:
        return await get_row(connection, orders, order_id), None
    if "refusal" in found:
        return None, await get_row(connection, order_refusals, order_id)
    return None, None


_device_and_order_seen: Final = select(
    devices,
    exists().where(orders.c.order_id == prepared.param(orders.c.order_id)).label("order_seen"),
    exists()
    .where(order_refusals.c.order_id == prepared.param(order_refusals.c.order_id))
    .label("refusal_seen"),
).where(devices.c.kid == prepared.param(devices.c.kid))


async def device_and_order_seen(
    connection: Connection, kid: str, order_id: str
) -> tuple[dict[str, Any] | None, set[str]]:
    """A device by its kid, and whether an order with this id, or its refusal, is stored
    (for `order_or_refusal`): what a new order is checked against, in one statement."""
    result = await connection.execute(
        _device_and_order_seen, {"b_kid": kid, "b_order_id": order_id}
    )
    row = result.mappings().first()
    if row is None:
        return None, set()
    device = {column.key: row[column.key] for column in devices.c}
    found = {"order"} if row["order_seen"] else set()
    if row["refusal_seen"]:
        found.add("refusal")
    return device, found


async def prune_order_refusals(connection: Connection, before: int) -> int:
    """Forget refusals of orders that expired before `before`; returns how many."""
    result = await connection.execute(
        delete(order_refusals).where(order_refusals.c.expires_at < before)
    )
    return int(result.rowcount or 0)


async def prune_signed_calls(connection: Connection, before: int) -> int:
    """Forget device-signed calls that expired before `before`; returns how many."""
    result = await connection.execute(
        delete(signed_calls).where(signed_calls.c.expires_at < before)
    )
    return int(result.rowcount or 0)


async def notices_of(connection: Connection, account_id: str, limit: int) -> list[dict[str, Any]]:
    """An account's notices, newest first."""
    result = await connection.execute(
        select(account_notices)
        .where(account_notices.c.account_id == account_id)
        .order_by(account_notices.c.notice_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


async def reset_credentials(connection: Connection, account_id: str, now: int) -> int:
    """Remove the account's PIN, revoke its devices and void its unused activation codes,
    so that only a new activation code can set a PIN again; returns the devices revoked."""
    await connection.execute(delete(credentials).where(credentials.c.account_id == account_id))
    await connection.execute(
        update(activation_codes)
        .where(
            activation_codes.c.account_id == account_id,
            activation_codes.c.used_at.is_(None),
            activation_codes.c.expires_at > now,
        )
        .values(expires_at=now)
    )
    result = await connection.execute(
        update(devices)
        .where(devices.c.account_id == account_id, devices.c.status == "active")
        .values(status="revoked", revoked_at=now)
    )
    return int(result.rowcount or 0)


async def refunds_in_total(connection: Connection, transfer_id: str) -> int:
    """Refunds of one of our payments that were accepted (pending or credited)."""
    result = await connection.execute(
        select(func.coalesce(func.sum(refunds_in.c.amount_minor), 0)).where(
            refunds_in.c.transfer_id == transfer_id,
            refunds_in.c.state.in_(("pending", "credited")),
        )
    )
    return int(result.scalar_one())


# --- payee side -----------------------------------------------------------------------------


async def refunds_out_in_flight(connection: Connection, request_id: str) -> int:
    """Refunds of a request not yet finished: they count against the paid amount."""
    result = await connection.execute(
        select(func.coalesce(func.sum(refunds_out.c.amount_minor), 0)).where(
            refunds_out.c.request_id == request_id,
            refunds_out.c.state.in_(("requested", "sent", "in_doubt")),
        )
    )
    return int(result.scalar_one())


async def unresolved_refunds(connection: Connection, limit: int) -> list[dict[str, Any]]:
    """Routed refunds on their way: sent without a known outcome, or a new attempt waiting
    (`requested`; its decided_at is when the attempt before it was given up)."""
    result = await connection.execute(
        select(refunds_out)
        .where(
            refunds_out.c.state.in_(("requested", "sent", "in_doubt")),
            refunds_out.c.on_us.is_(False),
        )
        .order_by(refunds_out.c.expires_at)
        .limit(limit)
    )
    return [dict(row) for row in result.mappings()]


async def stale_inbound(connection: Connection, now: int, limit: int) -> list[str]:
    """Accepted inbound transfers past their expiry whose outcome never arrived."""
    result = await connection.execute(
        select(inbound_transfers.c.transfer_id)
        .where(
            inbound_transfers.c.state.in_(("accepted", "in_doubt")),
            inbound_transfers.c.expires_at <= now,
        )
        .order_by(inbound_transfers.c.expires_at)
        .limit(limit)
    )
    return [str(row[0]) for row in result]


# The request and the payee an inbound transfer pays, read with it: what the commit's
# notice says and where the money goes, known before the write that credits it.
_REQUEST_FIELDS: Final = (
    "request_id",
    "payee_id",
    "amount_minor",
    "currency",
    "reference",
    "state",
)
_PAYEE_FIELDS: Final = ("payee_id", "account_id", "webhook_url")
_INBOUND_WITH_REQUEST: Final = (
    select(
        inbound_transfers,
        *(requests.c[name].label(f"request_{name}") for name in _REQUEST_FIELDS),
        *(payees.c[name].label(f"payee_{name}") for name in _PAYEE_FIELDS),
    )
    .select_from(
        inbound_transfers.outerjoin(
            requests, requests.c.request_id == inbound_transfers.c.request_id
        ).outerjoin(payees, payees.c.payee_id == requests.c.payee_id)
    )
    .where(inbound_transfers.c.transfer_id == prepared.param(inbound_transfers.c.transfer_id))
)


async def inbound_with_request(
    connection: Connection, transfer_id: str
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None] | None:
    """An inbound transfer, the request it holds and that request's payee (each of the last
    two None where there is none), in one statement; None if the transfer is unknown."""
    found = (
        (await connection.execute(_INBOUND_WITH_REQUEST, {"b_transfer_id": transfer_id}))
        .mappings()
        .first()
    )
    if found is None:
        return None
    inbound = {column.key: found[column.key] for column in inbound_transfers.c}
    request = {name: found[f"request_{name}"] for name in _REQUEST_FIELDS}
    payee = {name: found[f"payee_{name}"] for name in _PAYEE_FIELDS}
    return (
        inbound,
        request if request["request_id"] is not None else None,
        payee if payee["payee_id"] is not None else None,
    )


async def enqueue(
    connection: Connection, destination: str, request_id: str, body: str, now: int
) -> dict[str, Any]:
    """Queue a payment notice; the row as stored, for the deliverer."""
    payload = {"destination": destination, "request_id": request_id, "body": body}
    return await outbox_queries.enqueue(connection, outbox, payload, now)


async def due_messages(connection: Connection, now: int, limit: int) -> list[dict[str, Any]]:
    return await outbox_queries.due_messages(connection, outbox, now, limit)


async def mark_delivered(connection: Connection, message_ids: list[int], now: int) -> None:
    await outbox_queries.mark_delivered(connection, outbox, message_ids, now)


async def mark_attempt(
    connection: Connection, message_id: int, attempts: int, next_attempt_at: int
) -> None:
    await outbox_queries.mark_attempt(connection, outbox, message_id, attempts, next_attempt_at)


async def undelivered_count(connection: Connection) -> int:
    result = await connection.execute(
        select(func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
    )
    return int(result.scalar_one())


# --- reconciliation -------------------------------------------------------------------------
# A processor's routed transfers in the terms of a settlement statement: (transfer id, kind,
# direction, amount, currency, committed?, decided at). On-us transfers never reach the
# router, so they are left out.

# Ids per IN (...) list: well under SQLite's bound on parameters in one statement.
_IDS_PER_QUERY = 500


def _routed_selects() -> list[Any]:
    return [
        select(
            orders.c.transfer_id.label("transfer_id"),
            literal("payment").label("kind"),
            literal("sent").label("direction"),
            orders.c.amount_minor,
            orders.c.currency,
            (orders.c.state == "committed").label("committed"),
            orders.c.decided_at,
        ).where(orders.c.on_us.is_(False)),
        select(
            inbound_transfers.c.transfer_id.label("transfer_id"),
            literal("payment").label("kind"),
            literal("received").label("direction"),
            inbound_transfers.c.amount_minor,
            inbound_transfers.c.currency,
            (inbound_transfers.c.state == "committed").label("committed"),
            inbound_transfers.c.decided_at,
        ),
        select(
            refunds_out.c.refund_id.label("transfer_id"),
            literal("refund").label("kind"),
            literal("sent").label("direction"),
            refunds_out.c.amount_minor,
            refunds_out.c.currency,
            (refunds_out.c.state == "completed").label("committed"),
            refunds_out.c.decided_at,
        ).where(refunds_out.c.on_us.is_(False)),
        select(
            refunds_in.c.refund_id.label("transfer_id"),
            literal("refund").label("kind"),
            literal("received").label("direction"),
            refunds_in.c.amount_minor,
            refunds_in.c.currency,
            (refunds_in.c.state == "credited").label("committed"),
            refunds_in.c.decided_at,
        ),
    ]


def _routed_row(row: Any) -> dict[str, Any]:
    return {**dict(row), "committed": bool(row["committed"])}


async def routed_decided_between(
    connection: Connection, start: int, end: int, limit: int
) -> list[dict[str, Any]]:
    """Routed transfers sent or received, decided locally between start and end."""
    found: list[dict[str, Any]] = []
    for query in _routed_selects():
        decided = query.selected_columns.decided_at
        result = await connection.execute(
            query.where(decided >= start, decided <= end).limit(limit)
        )
        found += [_routed_row(row) for row in result.mappings()]
    return found


async def routed_by_ids(connection: Connection, ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for offset in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[offset : offset + _IDS_PER_QUERY]
        for query in _routed_selects():
            key = query.selected_columns.transfer_id
            result = await connection.execute(query.where(key.in_(chunk)))
            found += [_routed_row(row) for row in result.mappings()]
    return found


async def settlement_movements(
    connection: Connection, refs: list[str]
) -> dict[str, tuple[str, int]]:
    """Per transfer reference, the currency and the sum of its postings to a settlement
    account, in the router's sign (+ owed to us: a posting out of settlement)."""
    moved: dict[str, tuple[str, int]] = {}
    join = postings.join(entries, postings.c.entry_id == entries.c.entry_id).join(
        accounts, postings.c.account_id == accounts.c.account_id
    )
    for offset in range(0, len(refs), _IDS_PER_QUERY):
        chunk = refs[offset : offset + _IDS_PER_QUERY]
        result = await connection.execute(
            select(entries.c.transfer_ref, accounts.c.currency, func.sum(postings.c.amount_minor))
            .select_from(join)
            .where(accounts.c.kind == "settlement", entries.c.transfer_ref.in_(chunk))
            .group_by(entries.c.transfer_ref, accounts.c.currency)
        )
        for ref, currency, total in result:
            moved[str(ref)] = (str(currency), -int(total))
    return moved
