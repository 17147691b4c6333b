"""The audit log of one running service: append entries to its database, sign checkpoints.

The shell around `semops.audit.chain`. `append` writes inside the caller's transaction, so
an action and its audit entry commit together or not at all; `record` is the same in a
transaction of its own, for actions whose transaction belongs to code that does not know
about auditing (`record_once` when the same outcome may be reported twice at once). A
checkpoint follows every CHECKPOINT_EVERY-th entry in the same transaction; `seal` adds
one on demand (window close, shutdown, a quiet minute) so the unsigned tail stays short.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import structlog
from sqlalchemy import Table

from semops.audit.chain import (
    CHECKPOINT_EVERY,
    CHECKPOINT_KIND,
    AuditEntry,
    checkpoint_due,
    make_checkpoint,
    next_entry,
)
from semops.core.clock import Clock
from semops.crypto import PrivateKey
from semops.store import audit as store
from semops.store.db import Connection, Database

log = structlog.get_logger("semops.audit")

# A quiet service seals its log when the newest entry is this old and not yet signed:
# a minute is how long a database writer could rewrite the tail unnoticed.
SEAL_AFTER_S: Final = 60
# `record_once` looks this far back for the same event: two reports of one outcome (the
# router's reply and its outbox delivery) arrive within moments of each other.
RECENT_DEDUPE_ENTRIES: Final = 50


class AuditLog:
    def __init__(
        self,
        service_id: str,
        table: Table,
        database: Database,
        sign_key: PrivateKey,
        clock: Clock,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.service_id = service_id
        self.table = table
        self.database = database
        self.sign_key = sign_key
        self.clock = clock
        self.checkpoint_every = checkpoint_every
        self._unsealed_since: int | None = None
        # (seq, hash) of the newest entry this process wrote or read: the next append names
        # it and goes in with one statement if it is still the head (`store.insert_after`);
        # if not (another writer, or a transaction that rolled back), the head is read.
        self._head: tuple[int, str] | None = None

    async def append(
        self, connection: Connection, kind: str, actor: str, data: Mapping[str, Any]
    ) -> AuditEntry:
        """Append an entry in the caller's transaction (and a checkpoint when one is due)."""
        now = self.clock.now()
        entry = await self._append(connection, kind, actor, data, now)
        if checkpoint_due(entry, self.checkpoint_every):
            await self._checkpoint(connection, entry, now)
        elif self._unsealed_since is None:
            self._unsealed_since = now
        return entry

    async def _append(
        self, connection: Connection, kind: str, actor: str, data: Mapping[str, Any], now: int
    ) -> AuditEntry:
        head = self._head
        if head is not None:
            entry = next_entry(head, at=now, kind=kind, actor=actor, data=data)
            if await store.insert_after(connection, self.table, entry.row(), head):
                self._head = (entry.seq, entry.hash)
                return entry
        await store.lock_for_append(connection)
        last = await store.last_entry(connection, self.table)
        entry = next_entry(last[:2] if last else None, at=now, kind=kind, actor=actor, data=data)
        await store.insert_entry(connection, self.table, entry.row())
        self._head = (entry.seq, entry.hash)
        return entry

    async def record(self, kind: str, actor: str, data: Mapping[str, Any]) -> AuditEntry:
        """Append an entry in a transaction of its own."""
        async with self.database.write() as connection:
            return await self.append(connection, kind, actor, data)

    async def record_once(
        self, kind: str, actor: str, data: Mapping[str, Any], key: str
    ) -> AuditEntry | None:
        """`record`, unless one of the newest entries is this kind for the same `key` value:
        for an outcome the caller may learn twice at once, outside the action's
        transaction (the caller has already checked it was not decided before)."""
        async with self.database.write() as connection:
            await store.lock_for_append(connection)
            for recent_kind, text in await store.recent_entries(
                connection, self.table, RECENT_DEDUPE_ENTRIES
            ):
                if recent_kind == kind and json.loads(text).get(key) == data.get(key):
                    return None
            return await self.append(connection, kind, actor, data)

    async def _checkpoint(self, connection: Connection, covered: AuditEntry, now: int) -> None:
        checkpoint = make_checkpoint(self.service_id, covered, self.sign_key, now)
        await store.insert_entry(connection, self.table, checkpoint.row())
        self._head = (checkpoint.seq, checkpoint.hash)
        self._unsealed_since = None

    async def seal(self, connection: Connection | None = None) -> int | None:
        """Sign the newest entry now unless it is a checkpoint; the seq signed, or None."""
        if connection is None:
            async with self.database.write() as own:
                return await self.seal(own)
        await store.lock_for_append(connection)
        last = await store.last_entry(connection, self.table)
        if last is None or last[2] == CHECKPOINT_KIND:
            self._unsealed_since = None
            return None
        seq, hash_, kind = last
        # Only seq and hash are signed; kind, actor and data are covered by the hash.
        covered = AuditEntry(seq, 0, kind, "-", {}, "", hash_)
        await self._checkpoint(connection, covered, self.clock.now())
        return seq

    async def seal_if_quiet(self) -> None:
        """The background pass: seal a tail that has waited SEAL_AFTER_S unsigned."""
        since = self._unsealed_since
        if since is not None and self.clock.now() - since >= SEAL_AFTER_S:
            sealed = await self.seal()
            log.info("audit_log_sealed", serial=sealed)
