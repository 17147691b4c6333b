"""The back office's reads of the processor's database: lists for people, bounded.

Each function takes an open connection and returns plain rows. Every list has a LIMIT
(PAGE_ROWS per page, PAGES_MAX pages), and each selects named columns only: what an
operator may see under DESIGN.md §5 and nothing else. The PIN verification value, the
activation-code digests, device public keys, request fulfilments and tokens, receipts,
the one-time payer references and merchant API-key digests are never selected here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, Table, and_, func, or_, select

from semops.protocol import PayeeTransferState, PayerTransferState, RefundState, RequestState
from semops.store import processor as store
from semops.store.db import Connection

# Rows on one page of a list: fits a screen, and a phone scrolls it without pain.
PAGE_ROWS: Final = 25
# Pages one may walk forward (OFFSET stays below PAGE_ROWS * PAGES_MAX = 10 000 rows):
# beyond that, narrow the search or the state filter instead.
PAGES_MAX: Final = 400
# A search term: at most as long as the longest thing searched (a name, 40 characters).
SEARCH_MAX_CHARS: Final = 40
# Audit entries shown on the audit page, newest first.
AUDIT_ROWS: Final = 50
# The kinds of audit entry that record an operator's action.
OPERATOR_AUDIT_KINDS: Final = (
    "credential_unlocked",
    "credential_reset",
    "activation_code_issued",
    "device_revoked",
    "merchant_created",
)
_LIKE_ESCAPE: Final = "\\"
_REFUND_IN_STATES: Final = ("pending", "credited", "aborted", "rejected")


@dataclass(frozen=True, slots=True)
class TransferView:
    """One list of the transfers page: a table, its columns, its states."""

    name: str
    title: str
    table: Table
    columns: tuple[str, ...]
    states: tuple[str, ...]


TRANSFER_VIEWS: Final = {
    view.name: view
    for view in (
        TransferView(
            "payments",
            "Payments sent by our customers",
            store.orders,
            (
                "created_at", "order_id", "transfer_id", "account_id", "payee_name",
                "payee_processor", "amount_minor", "currency", "state", "reason_code", "on_us",
            ),
            tuple(state.value for state in PayerTransferState),
        ),
        TransferView(
            "inbound",
            "Payments received from other processors",
            store.inbound_transfers,
            (
                "created_at", "transfer_id", "request_id", "payee_id", "amount_minor",
                "currency", "state", "reason_code",
            ),
            tuple(state.value for state in PayeeTransferState),
        ),
        TransferView(
            "requests",
            "Payment requests of our merchants and persons",
            store.requests,
            (
                "created_at", "request_id", "payee_id", "reference", "amount_minor", "currency",
                "state", "expires_at", "transfer_id", "refunded_minor",
            ),
            tuple(state.value for state in RequestState),
        ),
        TransferView(
            "refunds_sent",
            "Refunds sent by our merchants",
            store.refunds_out,
            (
                "created_at", "refund_id", "transfer_id", "request_id", "payee_id",
                "amount_minor", "currency", "state", "reason_code", "on_us",
            ),
            tuple(state.value for state in RefundState),
        ),
        TransferView(
            "refunds_received",
            "Refunds received for our customers' payments",
            store.refunds_in,
            (
                "created_at", "refund_id", "transfer_id", "account_id", "amount_minor",
                "currency", "state", "reason_code",
            ),
            _REFUND_IN_STATES,
        ),
    )
}  # fmt: skip


def page_offset(page: int) -> int:
    assert 1 <= page <= PAGES_MAX, page
    return (page - 1) * PAGE_ROWS


def _like_pattern(term: str) -> str:
    escaped = (
        term.lower()
        .replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


def _customer_filter(term: str) -> Any:
    customers = store.customers
    pattern = _like_pattern(term)
    return or_(
        func.lower(customers.c.name).like(pattern, escape=_LIKE_ESCAPE),
        customers.c.phone.like(pattern, escape=_LIKE_ESCAPE),
        customers.c.account_id == term,
        customers.c.customer_id == term,
    )


def _customers_query() -> Select[Any]:
    customers, accounts, credentials = store.customers, store.accounts, store.credentials
    return select(
        customers.c.customer_id,
        customers.c.account_id,
        customers.c.name,
        customers.c.phone,
        customers.c.currency,
        customers.c.created_at,
        accounts.c.balance_minor,
        accounts.c.status,
        credentials.c.failures,
        credentials.c.locked,
    ).select_from(
        customers.join(accounts, accounts.c.account_id == customers.c.account_id).outerjoin(
            credentials, credentials.c.account_id == customers.c.account_id
        )
    )


async def search_customers(
    connection: Connection, term: str, page: int
) -> tuple[list[dict[str, Any]], bool]:
    """A page of customers, newest first, whose name or phone contains `term` (or whose
    account or customer id is `term`); and whether there is a next page."""
    assert len(term) <= SEARCH_MAX_CHARS, len(term)
    query = _customers_query()
    if term:
        query = query.where(_customer_filter(term))
    query = query.order_by(
        store.customers.c.created_at.desc(), store.customers.c.customer_id
    ).offset(page_offset(page))
    result = await connection.execute(query.limit(PAGE_ROWS + 1))
    rows = [_customer_row(row) for row in result.mappings()]
    return rows[:PAGE_ROWS], len(rows) > PAGE_ROWS


async def count_customers(connection: Connection, term: str) -> int:
    query = select(func.count()).select_from(store.customers)
    if term:
        query = query.where(_customer_filter(term))
    return int((await connection.execute(query)).scalar_one())


def _customer_row(row: Any) -> dict[str, Any]:
    found = dict(row)
    found["locked"] = bool(found["locked"]) if found["locked"] is not None else None
    return found


async def customer_of_account(connection: Connection, account_id: str) -> dict[str, Any] | None:
    query = _customers_query().where(store.customers.c.account_id == account_id)
    row = (await connection.execute(query)).mappings().first()
    return _customer_row(row) if row is not None else None


async def payee_of_account(connection: Connection, account_id: str) -> dict[str, Any] | None:
    payees = store.payees
    result = await connection.execute(
        select(payees.c.payee_id, payees.c.kind, payees.c.display_name, payees.c.currency).where(
            payees.c.account_id == account_id
        )
    )
    row = result.mappings().first()
    return dict(row) if row is not None else None


async def credential_state(connection: Connection, account_id: str) -> dict[str, Any] | None:
    """Whether a PIN is set, its failure count and lock: never its verification value."""
    credentials = store.credentials
    result = await connection.execute(
        select(credentials.c.failures, credentials.c.locked, credentials.c.updated_at).where(
            credentials.c.account_id == account_id
        )
    )
    row = result.mappings().first()
    if row is None:
        return None
    return {**dict(row), "locked": bool(row["locked"])}


async def locked_credentials(connection: Connection) -> tuple[list[dict[str, Any]], bool]:
    """Locked PIN credentials, the most recently locked first (one page, and whether more)."""
    credentials, customers = store.credentials, store.customers
    result = await connection.execute(
        select(
            credentials.c.account_id,
            credentials.c.failures,
            credentials.c.updated_at,
            customers.c.customer_id,
            customers.c.name,
            customers.c.phone,
        )
        .select_from(
            credentials.outerjoin(customers, customers.c.account_id == credentials.c.account_id)
        )
        .where(credentials.c.locked.is_(True))
        .order_by(credentials.c.updated_at.desc(), credentials.c.account_id)
        .limit(PAGE_ROWS + 1)
    )
    rows = [dict(row) for row in result.mappings()]
    return rows[:PAGE_ROWS], len(rows) > PAGE_ROWS


async def devices_of(connection: Connection, account_id: str) -> list[dict[str, Any]]:
    devices = store.devices
    result = await connection.execute(
        select(
            devices.c.kid,
            devices.c.device_name,
            devices.c.status,
            devices.c.created_at,
            devices.c.revoked_at,
        )
        .where(devices.c.account_id == account_id)
        .order_by(devices.c.created_at.desc(), devices.c.kid)
        .limit(PAGE_ROWS)
    )
    return [dict(row) for row in result.mappings()]


async def transfers(
    connection: Connection, view: TransferView, state: str | None, page: int
) -> tuple[list[dict[str, Any]], bool]:
    """A page of one transfer list, newest first, optionally in one state."""
    table = view.table
    query = select(*(table.c[name] for name in view.columns))
    if state is not None:
        assert state in view.states, state
        query = query.where(table.c.state == state)
    (key,) = table.primary_key.columns
    query = query.order_by(table.c.created_at.desc(), key).offset(page_offset(page))
    result = await connection.execute(query.limit(PAGE_ROWS + 1))
    rows = [dict(row) for row in result.mappings()]
    for row in rows:
        if "on_us" in row:
            row["on_us"] = bool(row["on_us"])
    return rows[:PAGE_ROWS], len(rows) > PAGE_ROWS


async def state_counts(connection: Connection, view: TransferView) -> dict[str, int]:
    table = view.table
    result = await connection.execute(select(table.c.state, func.count()).group_by(table.c.state))
    return {str(state): int(count) for state, count in result}


async def overview_counts(connection: Connection) -> dict[str, int]:
    """Counts for the overview: customers, locked PINs, payments not yet decided."""

    async def count(table: Table, *where: Any) -> int:
        query = select(func.count()).select_from(table)
        if where:
            query = query.where(and_(*where))
        return int((await connection.execute(query)).scalar_one())

    return {
        "customers": await count(store.customers),
        "merchants": await count(store.payees, store.payees.c.kind == "merchant"),
        "locked_credentials": await count(store.credentials, store.credentials.c.locked.is_(True)),
        "payments_in_flight": await count(
            store.orders, store.orders.c.state.in_(("reserved", "prepared", "in_doubt"))
        ),
        "payments_in_doubt": await count(store.orders, store.orders.c.state == "in_doubt"),
    }


def _audit_row(row: Any) -> dict[str, Any]:
    return {
        "seq": int(row["seq"]),
        "at": int(row["at"]),
        "kind": str(row["kind"]),
        "actor": str(row["actor"]),
        "data": json.loads(row["data"]),
        "hash": str(row["hash"]),
    }


async def recent_audit(
    connection: Connection, kinds: tuple[str, ...] | None = None
) -> list[dict[str, Any]]:
    """The newest audit entries (of `kinds`, or all but checkpoints), newest first."""
    table = store.audit_log
    query = select(table.c.seq, table.c.at, table.c.kind, table.c.actor, table.c.data, table.c.hash)
    query = query.where(table.c.kind.in_(kinds) if kinds else table.c.kind != "checkpoint")
    result = await connection.execute(query.order_by(table.c.seq.desc()).limit(AUDIT_ROWS))
    return [_audit_row(row) for row in result.mappings()]


async def newest_audit_entry(
    connection: Connection, kind: str, actor: str, **data: str
) -> dict[str, Any] | None:
    """The newest entry of `kind` by `actor` whose data has these values."""
    for entry in await recent_audit(connection, (kind,)):
        if entry["actor"] == actor and all(entry["data"].get(k) == v for k, v in data.items()):
            return entry
    return None
