"""Shared test configuration: which database servers the real-process tests run on.

Every real-process test runs on SQLite and on PostgreSQL. PostgreSQL is reached at
SEMOPS_TEST_POSTGRES_URL (default: the local server with trust auth). When the server is
not reachable the PostgreSQL cases are skipped -- unless SEMOPS_REQUIRE_POSTGRES=1, which
CI sets, and which turns that skip into a failure so CI can never pass without it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Collection
from typing import Any, Final

import pytest

from semops.devnet.postgres import create_databases, drop_databases, server_available
from semops.store import db, postgres

POSTGRES_URL = os.environ.get(
    "SEMOPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")


def require_postgres() -> bool:
    return os.environ.get("SEMOPS_REQUIRE_POSTGRES") == "1"


class PostgresDatabases:
    """Creates fresh databases for one test module and drops them afterwards."""

    def __init__(self) -> None:
        self.prefix = f"semops_t{uuid.uuid4().hex[:10]}"
        self.names: list[str] = []

    def make(self, services: list[str]) -> dict[str, str]:
        names = [f"{self.prefix}_{service.replace('-', '_')}" for service in services]
        self.names.extend(names)
        urls = asyncio.run(create_databases(POSTGRES_URL, names))
        return {service: urls[name] for service, name in zip(services, names, strict=True)}

    def drop(self) -> None:
        if self.names:
            asyncio.run(drop_databases(POSTGRES_URL, self.names))


def postgres_or_skip() -> PostgresDatabases:
    if not asyncio.run(server_available(POSTGRES_URL)):
        message = f"PostgreSQL is not reachable at {POSTGRES_URL}"
        if require_postgres():
            pytest.fail(message + " and SEMOPS_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    return PostgresDatabases()


class CompiledPerCall:
    """The statements run while this watches that SQLAlchemy cannot cache (no cache key:
    compiled again on every call, ~0.3 ms of CPU each; a multi-row VALUES is one), on
    either backend. A payment's path should have none."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements: list[str] = []
        sqlite_execute = db._SqliteConnection.execute
        postgres_compiled = postgres.PostgresBackend.compiled

        async def execute(connection: Any, statement: Any, parameters: Any = None) -> Any:
            self._check(statement)
            return await sqlite_execute(connection, statement, parameters)

        def compiled(backend: Any, statement: Any, parameters: Any, many: bool) -> Any:
            self._check(statement)
            return postgres_compiled(backend, statement, parameters, many)

        monkeypatch.setattr(db._SqliteConnection, "execute", execute)
        monkeypatch.setattr(postgres.PostgresBackend, "compiled", compiled)

    def _check(self, statement: Any) -> None:
        key = getattr(statement, "_generate_cache_key", None)
        if key is not None and key() is None:
            self.statements.append(" ".join(str(statement).split())[:100])


# A processor's accounts with their balances as booked, read from outside the service: a
# system account's row plus its postings not folded into it yet (the SQL of
# semops.store.processor.booked_balance), the columns in the table's order.
BOOKED_ACCOUNTS_SQL: Final = (
    "SELECT a.account_id, a.kind, a.currency, a.balance_minor + COALESCE("
    "(SELECT SUM(p.amount_minor) FROM postings p WHERE p.account_id = a.account_id"
    " AND NOT p.folded), 0) AS balance_minor, a.overdraft_minor, a.status, a.created_at"
    " FROM accounts a"
)
# What "unchanged" reads of a processor's ledger, as booked: a fold of system postings into
# their rows (semops.processor.accounts.fold) states no new fact, so accounts are read with
# their booked balances and postings without their `folded` flag.
_LEDGER_AS_BOOKED: Final = {
    "accounts": BOOKED_ACCOUNTS_SQL,
    "postings": "SELECT entry_id, account_id, amount_minor, created_at FROM postings",
}


# What "unchanged" reads of the router's positions, as booked: a fold of committed transfers
# into the position rows (semops.store.router.fold_positions) states no new fact, so the
# positions and window positions are read as their rows plus the unfolded transfers, and
# transfers without their `folded` flag (the SQL of semops.store.router's booked reads).
_UNFOLDED_SIDES: Final = (
    "SELECT window_id, payer_processor AS participant_id, currency, -amount_minor AS net_minor,"
    " amount_minor AS sent_minor, 0 AS received_minor, 1 AS sent_count, 0 AS received_count"
    " FROM transfers WHERE NOT folded UNION ALL"
    " SELECT window_id, payee_processor, currency, amount_minor, 0, amount_minor, 0, 1"
    " FROM transfers WHERE NOT folded"
)
_POSITIONS_AS_BOOKED: Final = {
    "positions": (
        "SELECT participant_id, currency, SUM(net_minor) FROM ("
        "SELECT participant_id, currency, net_minor FROM positions UNION ALL"
        f" SELECT participant_id, currency, net_minor FROM ({_UNFOLDED_SIDES}) AS unfolded"
        ") AS booked GROUP BY participant_id, currency"
    ),
    "window_positions": (
        "SELECT window_id, participant_id, currency, SUM(net_minor), SUM(sent_minor),"
        " SUM(received_minor), SUM(sent_count), SUM(received_count) FROM ("
        "SELECT * FROM window_positions UNION ALL"
        f" SELECT * FROM ({_UNFOLDED_SIDES}) AS unfolded"
        ") AS booked GROUP BY window_id, participant_id, currency"
    ),
    "transfers": (
        "SELECT transfer_id, kind, payer_processor, payee_processor, amount_minor, currency,"
        " condition, expires_at, state, fulfilment, reason_code, original_transfer_id,"
        " content_digest, created_at, decided_at, window_id, routed FROM transfers"
    ),
}
# What "unchanged" reads of an audit log: its entries, chained or still staged
# (semops.audit.log.AuditLog.chain_pending moves them from one table to the other and adds
# checkpoints: neither states a new fact), without checkpoints, seq or hashes.
_AUDIT_AS_ENTRIES: Final = {
    "audit_log": (
        "SELECT at, kind, actor, data FROM audit_log WHERE kind <> 'checkpoint'"
        " UNION ALL SELECT at, kind, actor, data FROM audit_pending"
    ),
    "audit_pending": "SELECT * FROM audit_pending WHERE 1 = 0",
}


def select_as_booked(table: str, tables: Collection[str]) -> str:
    """The SELECT that reads every row of `table` for a before/after comparison: a
    processor's ledger as booked (it has `postings`), the router's positions as booked
    (it has `window_positions`), an audit log as its entries (it has `audit_pending`), any
    other table as stored."""
    if table in _LEDGER_AS_BOOKED and "postings" in tables:
        return _LEDGER_AS_BOOKED[table]
    if table in _POSITIONS_AS_BOOKED and "window_positions" in tables:
        return _POSITIONS_AS_BOOKED[table]
    if table in _AUDIT_AS_ENTRIES and "audit_pending" in tables:
        return _AUDIT_AS_ENTRIES[table]
    return f'SELECT * FROM "{table}"'
