"""The audit log of one running service: stage, chain and append entries, sign checkpoints.

The shell around `semops.audit.chain`. An action that happens many times a second (a
transfer decided, an order committed) `stage`s its entry inside its own transaction: one
INSERT into audit_pending, so the action and its entry commit together or not at all, and
no two payments wait on the log's head. `chain_pending`, in the background every
CHAIN_INTERVAL_S, appends the staged entries to the log in the order they were staged,
in batches, each under the log's lock in a short transaction of its own. Until then an
entry is exactly as protected as one in the unsigned tail: the chain alone never stopped a
database writer, the checkpoints do, and a tail waits up to SEAL_AFTER_S for one anyway.

`append` writes in place inside the caller's transaction (rare actions: operator actions,
window closes), chaining whatever is staged first; `record` is the same in a transaction
of its own (`record_once` when the same outcome may be reported twice at once). A
checkpoint follows every CHECKPOINT_EVERY-th entry; `seal` adds one on demand (window
close, start, shutdown, a quiet minute) so the unsigned tail stays short. A service seals
when it starts and stops, so nothing stays staged across a restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import structlog
from sqlalchemy import Table

from semops.audit.chain import (
    CHECKPOINT_EVERY,
    CHECKPOINT_KIND,
    AuditDataError,
    AuditEntry,
    check_data,
    check_kind_actor,
    checkpoint_due,
    make_checkpoint,
    next_entry,
)
from semops.core.clock import Clock
from semops.core.encoding import canonical_json
from semops.crypto import PrivateKey
from semops.service.loops import every, in_batches
from semops.store import audit as store
from semops.store.db import Connection, Database

log = structlog.get_logger("semops.audit")

# A quiet service seals its log when the newest entry is this old and not yet signed:
# a minute is how long a database writer could rewrite the tail unnoticed.
SEAL_AFTER_S: Final = 60
# `record_once` looks this far back for the same event: two reports of one outcome (the
# router's reply and its outbox delivery) arrive within moments of each other.
RECENT_DEDUPE_ENTRIES: Final = 50
# Staged entries are chained this often: at 150 payments/s a batch of ~40 entries costs
# four statements, and a reader of the log sees an entry a quarter of a second late (an
# entry staged by another worker: at the next look-anyway pass).
CHAIN_INTERVAL_S: Final = 0.25
# One chaining transaction takes at most this many entries (bounded work under the lock).
CHAIN_BATCH_MAX: Final = 1000
# Every this many passes the chainer looks even if this process staged nothing (another
# worker on the same database may have).
CHAIN_LOOK_ANYWAY_EVERY: Final = 20
# The chainer keeps looking this long after this process last staged an entry: a pass can
# run between a stage and its transaction's commit, and must not leave that entry for the
# look-anyway pass.
CHAIN_AFTER_STAGE_S: Final = 1.0
# The kind of the entry that takes the place of a staged row that is not an entry this
# code would write (a database writer's, or one from an older allowlist): chaining goes on.
STAGED_REFUSED_KIND: Final = "staged_entry_refused"


class AuditLog:
    def __init__(
        self,
        service_id: str,
        table: Table,
        pending: Table,
        database: Database,
        sign_key: PrivateKey,
        clock: Clock,
        *,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        self.service_id = service_id
        self.table = table
        self.pending = pending
        self.database = database
        self.sign_key = sign_key
        self.clock = clock
        self.checkpoint_every = checkpoint_every
        self._unsealed_since: int | None = None
        # When this process last staged an entry (monotonic): `chain_pending` skips its
        # transaction unless that was within CHAIN_AFTER_STAGE_S.
        self._staged_at: float | None = None
        self._passes = 0

    async def stage(
        self, connection: Connection, kind: str, actor: str, data: Mapping[str, Any]
    ) -> None:
        """Stage an entry in the caller's transaction: chained after it commits."""
        check_kind_actor(kind, actor)
        text = canonical_json(check_data(kind, data)).decode("utf-8")
        await store.stage(connection, self.pending, self.clock.now(), kind, actor, text)
        self._staged_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Chain staged entries every CHAIN_INTERVAL_S until `stop` is set."""
        await every(stop, CHAIN_INTERVAL_S, self._chain_pass)

    async def _chain_pass(self) -> None:
        self._passes += 1
        await self.chain_pending(anyway=self._passes % CHAIN_LOOK_ANYWAY_EVERY == 0)

    async def chain_pending(self, *, anyway: bool = True) -> int:
        """Append every staged entry to the log; how many. Without `anyway`, nothing is
        read unless this process staged an entry since the last pass."""
        staged_at = self._staged_at
        recent = staged_at is not None and time.monotonic() - staged_at < CHAIN_AFTER_STAGE_S
        if not (recent or anyway):
            return 0
        return await in_batches(self.database, self._chain_locking, CHAIN_BATCH_MAX)

    async def _chain_locking(self, connection: Connection) -> int:
        await store.lock_for_append(connection)
        return await self._chain(connection)

    async def _chain(self, connection: Connection) -> int:
        """Under the append lock: the oldest staged entries (up to a batch) appended."""
        staged = await store.take_pending(connection, self.pending, CHAIN_BATCH_MAX)
        if not staged:
            return 0
        now = self.clock.now()
        items = []
        for staged_id, at, kind, actor, data in staged:
            try:
                check_kind_actor(kind, actor)
                items.append((at, kind, actor, check_data(kind, json.loads(data))))
            except (AuditDataError, ValueError) as error:  # not an entry we would write
                log.error(
                    "audit_staged_entry_refused", staged_id=staged_id, error=type(error).__name__
                )
                items.append((now, STAGED_REFUSED_KIND, self.service_id, {}))
        await self._write(connection, items, now)
        return len(staged)

    async def _write(
        self,
        connection: Connection,
        items: Sequence[tuple[int, str, str, Mapping[str, Any]]],
        now: int,
    ) -> list[AuditEntry]:
        """Under the append lock: (at, kind, actor, data) entries after the newest one, each
        followed by a checkpoint when one is due, in one INSERT; the entries."""
        last = await store.last_entry(connection, self.table)
        head = last[:2] if last is not None else None
        entries, rows = [], []
        for at, kind, actor, data in items:
            entry = next_entry(head, at=at, kind=kind, actor=actor, data=data)
            entries.append(entry)
            rows.append(entry.row())
            head = (entry.seq, entry.hash)
            if checkpoint_due(entry, self.checkpoint_every):
                checkpoint = make_checkpoint(self.service_id, entry, self.sign_key, now)
                rows.append(checkpoint.row())
                head = (checkpoint.seq, checkpoint.hash)
        await store.insert_entries(connection, self.table, rows)
        self._note_tail(rows[-1]["kind"], now)
        return entries

    def _note_tail(self, kind: str, now: int) -> None:
        if kind == CHECKPOINT_KIND:
            self._unsealed_since = None
        elif self._unsealed_since is None:
            self._unsealed_since = now

    async def _chain_all(self, connection: Connection) -> None:
        """Under the append lock: every staged entry appended (before an in-place append)."""
        while await self._chain(connection) == CHAIN_BATCH_MAX:
            pass

    async def append(
        self, connection: Connection, kind: str, actor: str, data: Mapping[str, Any]
    ) -> AuditEntry:
        """Append an entry in the caller's transaction, after every entry staged before it
        (and a checkpoint when one is due). Takes the log's lock to COMMIT on PostgreSQL:
        for rare actions; a payment stages its entry instead."""
        await store.lock_for_append(connection)
        await self._chain_all(connection)
        return await self._append_locked(connection, kind, actor, data)

    async def _append_locked(
        self, connection: Connection, kind: str, actor: str, data: Mapping[str, Any]
    ) -> AuditEntry:
        now = self.clock.now()
        (entry,) = await self._write(connection, [(now, kind, actor, data)], now)
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
            await self._chain_all(connection)
            for recent_kind, text in await store.recent_entries(
                connection, self.table, RECENT_DEDUPE_ENTRIES
            ):
                if recent_kind == kind and json.loads(text).get(key) == data.get(key):
                    return None
            return await self._append_locked(connection, kind, actor, data)

    async def _checkpoint(self, connection: Connection, covered: AuditEntry, now: int) -> None:
        checkpoint = make_checkpoint(self.service_id, covered, self.sign_key, now)
        await store.insert_entry(connection, self.table, checkpoint.row())
        self._unsealed_since = None

    async def seal(self, connection: Connection | None = None) -> int | None:
        """Chain what is staged, then sign the newest entry unless it is a checkpoint; the
        seq signed, or None."""
        if connection is None:
            async with self.database.write() as own:
                return await self.seal(own)
        await store.lock_for_append(connection)
        await self._chain_all(connection)
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
