"""The wallet's local state: one folder, one device key file, one small SQLite database.

Layout of the wallet folder (default `~/.semops/wallet`, mode 0700):

    device.key   the device's P-256 private key, PKCS#8 PEM, created 0600 with O_EXCL;
                 it never leaves this file except as signatures.
    wallet.db    SQLite (created 0600): `settings` holds the enrolment (account id,
                 processor URL and id, device kid) and the processor configuration (the
                 directory, router and pinned root certificates); `orders` holds every
                 order with its signed token and its ORDER state.

The rule that makes paying safe to retry: an order's id *and its signed token* are
committed here (with `synchronous=FULL`, so they survive a crash or power loss) before the
order is sent. A later attempt finds the order by its request and re-sends the stored
token, byte for byte, so the processor sees the same id with the same content and answers
the stored outcome instead of paying twice. Every state change goes through the ORDER
table of `semops.protocol.states` inside one write transaction.

This is a single-user tool, so the stdlib `sqlite3` is used directly. Writes hold a lock
from BEGIN to COMMIT, so the wallet service may run them in a worker thread (the COMMIT's
fsync then does not stop its event loop); reads run wherever they are called.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from semops.core.errors import E, SemopsError
from semops.core.limits import ORDERS_PAGE_MAX
from semops.crypto import PrivateKey
from semops.protocol import ORDER, OrderEvent, OrderState
from semops.service.files import SECRET_FILE_MODE, read_private_key, write_private_key
from semops.wallet.core import device_key_from

DEFAULT_WALLET_DIR: Final = Path("~/.semops/wallet")
DEVICE_KEY_FILE: Final = "device.key"
DATABASE_FILE: Final = "wallet.db"
WALLET_DIR_MODE: Final = 0o700
_ENROLMENT: Final = "enrolment"
_CONFIG: Final = "processor_config"
_ROOT: Final = "root_certificate"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    order_id        TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL,
    request_token   TEXT NOT NULL,
    token           TEXT NOT NULL,
    state           TEXT NOT NULL,
    payee_processor TEXT NOT NULL,
    payee_id        TEXT NOT NULL,
    payee_name      TEXT NOT NULL,
    amount_minor    INTEGER NOT NULL,
    currency        TEXT NOT NULL,
    reference       TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    receipt         TEXT,
    error_code      TEXT,
    error_detail    TEXT
);
CREATE INDEX IF NOT EXISTS ix_orders_request ON orders (request_id);
CREATE INDEX IF NOT EXISTS ix_orders_created ON orders (created_at);
"""


@dataclass(frozen=True, slots=True)
class Enrolled:
    """What the wallet remembers about its enrolment at its processor."""

    processor_url: str
    processor_id: str
    account_id: str
    device_kid: str
    device_name: str
    customer_name: str
    currency: str
    enrolled_at: int


@dataclass(frozen=True, slots=True)
class OrderRecord:
    order_id: str
    request_id: str
    request_token: str
    token: str
    state: OrderState
    payee_processor: str
    payee_id: str
    payee_name: str
    amount_minor: int
    currency: str
    reference: str | None
    created_at: int
    expires_at: int
    updated_at: int
    receipt: str | None = None
    error_code: str | None = None
    error_detail: str | None = None

    @property
    def is_terminal(self) -> bool:
        return ORDER.is_terminal(self.state)


def _record(row: sqlite3.Row) -> OrderRecord:
    values = dict(row)
    values["state"] = OrderState(values["state"])
    return OrderRecord(**values)


def _create_private(path: Path) -> None:
    """Create an empty file readable by its owner only, if it does not exist yet."""
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_FILE_MODE)
        os.close(descriptor)


class WalletStore:
    """The wallet folder. Open it with `WalletStore.open(path)`; close it when done."""

    def __init__(self, directory: Path, connection: sqlite3.Connection) -> None:
        self.directory = directory
        self._db = connection
        self._writing = threading.Lock()

    @classmethod
    def open(cls, directory: Path) -> WalletStore:
        directory = directory.expanduser()
        directory.mkdir(mode=WALLET_DIR_MODE, parents=True, exist_ok=True)
        database = directory / DATABASE_FILE
        _create_private(database)
        connection = sqlite3.connect(
            database, isolation_level=None, timeout=5.0, check_same_thread=False
        )
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed order id is on disk before the order leaves the device.
        connection.execute("PRAGMA synchronous=FULL")
        connection.executescript(_SCHEMA)
        return cls(directory, connection)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._writing:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- the device key -----------------------------------------------------------------

    @property
    def device_key_path(self) -> Path:
        return self.directory / DEVICE_KEY_FILE

    def has_device_key(self) -> bool:
        return self.device_key_path.exists()

    def save_device_key(self, key: PrivateKey) -> None:
        """Write the key 0600; an existing key is never overwritten (FileExistsError)."""
        write_private_key(self.device_key_path, key.key)

    def device_key(self) -> PrivateKey:
        return device_key_from(read_private_key(self.device_key_path))

    # --- settings -----------------------------------------------------------------------

    def _get(self, name: str) -> Any:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else json.loads(row["value"])

    def _put(self, name: str, value: Any) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, json.dumps(value, sort_keys=True)),
            )

    def enrolment(self) -> Enrolled | None:
        value = self._get(_ENROLMENT)
        return None if value is None else Enrolled(**value)

    def require_enrolment(self) -> Enrolled:
        enrolled = self.enrolment()
        if enrolled is None or not self.has_device_key():
            raise SemopsError(
                E.DEVICE_UNKNOWN, "this wallet is not enrolled: run `semops wallet enroll`"
            )
        return enrolled

    def save_enrolment(self, enrolled: Enrolled) -> None:
        self._put(
            _ENROLMENT, {name: getattr(enrolled, name) for name in Enrolled.__dataclass_fields__}
        )

    def processor_config(self) -> dict[str, Any] | None:
        text = self.processor_config_text()
        value = None if text is None else json.loads(text)
        return value if isinstance(value, dict) else None

    def processor_config_text(self) -> str | None:
        """The stored configuration as stored (canonical JSON): equal text, equal document.
        A cheap way to see whether this or another process stored another one."""
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (_CONFIG,)).fetchone()
        return None if row is None else str(row["value"])

    def save_processor_config(self, document: dict[str, Any]) -> None:
        self._put(_CONFIG, document)

    def pinned_root(self) -> str | None:
        value = self._get(_ROOT)
        return value if isinstance(value, str) else None

    def pin_root(self, root_pem: str) -> None:
        """Pin the scheme root once; a different root later is refused by the caller."""
        if self.pinned_root() is None:
            self._put(_ROOT, root_pem)

    # --- orders -------------------------------------------------------------------------

    def add_order(self, record: OrderRecord, *, sending_at: int | None = None) -> OrderRecord:
        """Store a new order (state CREATED) and its signed token, durably, before sending.

        With `sending_at`, the same transaction also moves it to SENT (one fsync where two
        would say the same: the token is on disk before it leaves the device)."""
        assert record.state is ORDER.initial
        with self._write() as db:
            db.execute(
                "INSERT INTO orders (order_id, request_id, request_token, token, state, "
                "payee_processor, payee_id, payee_name, amount_minor, currency, reference, "
                "created_at, expires_at, updated_at, receipt, error_code, error_detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.order_id,
                    record.request_id,
                    record.request_token,
                    record.token,
                    record.state.value,
                    record.payee_processor,
                    record.payee_id,
                    record.payee_name,
                    record.amount_minor,
                    record.currency,
                    record.reference,
                    record.created_at,
                    record.expires_at,
                    record.updated_at,
                    None,
                    None,
                    None,
                ),
            )
            if sending_at is not None:
                _move(db, record.order_id, OrderEvent.SEND, sending_at)
        return self.require_order(record.order_id)

    def order(self, order_id: str) -> OrderRecord | None:
        row = self._db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
        return None if row is None else _record(row)

    def require_order(self, order_id: str) -> OrderRecord:
        record = self.order(order_id)
        if record is None:
            raise SemopsError(E.NOT_FOUND, "this wallet has no order with that id")
        return record

    def orders_for_request(self, request_id: str) -> list[OrderRecord]:
        """Every order for one request, newest first."""
        rows = self._db.execute(
            "SELECT * FROM orders WHERE request_id = ? ORDER BY created_at DESC, rowid DESC "
            "LIMIT ?",
            (request_id, ORDERS_PAGE_MAX),
        ).fetchall()
        return [_record(row) for row in rows]

    def orders(self, limit: int = ORDERS_PAGE_MAX) -> list[OrderRecord]:
        rows = self._db.execute(
            "SELECT * FROM orders ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (min(limit, ORDERS_PAGE_MAX),),
        ).fetchall()
        return [_record(row) for row in rows]

    def apply(
        self,
        order_id: str,
        event: OrderEvent,
        now: int,
        *,
        receipt: str | None = None,
        error_code: str | None = None,
        error_detail: str | None = None,
    ) -> OrderRecord:
        """Move an order by one ORDER event, in one transaction; an illegal step raises."""
        with self._write() as db:
            _move(db, order_id, event, now, receipt, error_code, error_detail)
        return self.require_order(order_id)


def _move(
    db: sqlite3.Connection,
    order_id: str,
    event: OrderEvent,
    now: int,
    receipt: str | None = None,
    error_code: str | None = None,
    error_detail: str | None = None,
) -> None:
    """One ORDER step inside the caller's write transaction; an illegal step raises."""
    row = db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise SemopsError(E.NOT_FOUND, "this wallet has no order with that id")
    state = ORDER.next(_record(row).state, event)
    db.execute(
        "UPDATE orders SET state = ?, updated_at = ?, "
        "receipt = COALESCE(?, receipt), error_code = COALESCE(?, error_code), "
        "error_detail = COALESCE(?, error_detail) WHERE order_id = ?",
        (state.value, now, receipt, error_code, error_detail, order_id),
    )


__all__ = [
    "DEFAULT_WALLET_DIR",
    "Enrolled",
    "OrderRecord",
    "WalletStore",
]
