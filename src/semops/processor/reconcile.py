"""A processor reconciles a closed settlement window: the router's word against its own.

`semops settlement reconcile --processor-data-dir DIR --window ID` runs this next to the
processor (same folder, same database, its scheme certificate). It

1. fetches the router's signed directory and checks it from the scheme root down
   (`verify_directory_document`), which yields the router's key;
2. fetches its own statement of the window (and of the windows either side, whose
   transfers may carry local times inside this one) with a signed SettlementQuery, over
   mutual TLS, and verifies the router's signature;
3. reads its routed transfers and settlement postings from its database and hands both to
   the pure `semops.audit.reconcile`, which lists every difference.

Also `fetch_headroom`: what the router says the processor may still send in the open
window. Both are reads; nothing here changes the processor's state.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp

from semops.audit.reconcile import Difference, LocalTransfer, reconcile
from semops.audit.report import (
    REPORT_TRANSFERS_MAX,
    SettlementHeadroom,
    SettlementQuery,
    SettlementStatement,
)
from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.limits import DIRECTORY_MAX_BYTES, ROUTER_QUERY_TIMEOUT_S
from semops.processor.directory import DirectorySnapshot, verify_directory_document
from semops.processor.keys import ProcessorKeys, load_keys
from semops.protocol import Message, open_signed, sign
from semops.service.http import error_from_problem
from semops.service.tls import TlsFiles, client_context
from semops.store import processor as store
from semops.store.db import Database, sqlite_url

M = TypeVar("M", bound=Message)

# A signed query is used at once; a minute covers a slow link and clock skew.
QUERY_TTL_S: Final = 60
# Fetching a statement of a full window (several MiB) takes longer than a status query.
STATEMENT_TIMEOUT_S: Final = 60.0
AUTH_SCHEME: Final = "SEMOPS-Participant"


@dataclass(frozen=True, slots=True)
class ProcessorLocation:
    """What reconciliation needs to know about a processor: where its things are."""

    processor_id: str
    data_dir: Path
    router_url: str
    db_url: str

    @classmethod
    def from_folder(
        cls,
        data_dir: Path,
        processor_id: str | None = None,
        router_url: str | None = None,
        db_url: str | None = None,
    ) -> ProcessorLocation:
        """Defaults from the folder and, for a `semops up` network, DATA/network.json."""
        name = processor_id or data_dir.name
        layout_file = data_dir.parent / "network.json"
        layout: dict[str, Any] = json.loads(layout_file.read_text()) if layout_file.exists() else {}
        ports = layout.get("ports") or {}
        default_router = f"https://127.0.0.1:{ports.get('router', 8400)}"
        return cls(
            processor_id=name,
            data_dir=data_dir,
            router_url=(router_url or default_router).rstrip("/"),
            db_url=db_url
            or (layout.get("db_urls") or {}).get(name)
            or sqlite_url(data_dir / f"{name}.db"),
        )


@dataclass(frozen=True, slots=True)
class Reconciliation:
    statement: SettlementStatement
    differences: list[Difference]
    local_transfers: int


class RouterReader:
    """Signed reads from the router's scheme port, as one processor, over mutual TLS."""

    def __init__(self, location: ProcessorLocation, keys: ProcessorKeys, clock: Clock) -> None:
        self.location = location
        self.keys = keys
        self.clock = clock
        self._context: ssl.SSLContext = client_context(
            TlsFiles.in_directory(location.data_dir, location.processor_id)
        )
        self._snapshot: DirectorySnapshot | None = None

    async def _get(
        self, path: str, *, signed: bool, max_bytes: int, timeout_s: float
    ) -> tuple[int, str, bytes]:
        headers = {}
        if signed:
            now = self.clock.now()
            query = SettlementQuery(
                participant_id=self.location.processor_id,
                path=path,
                created_at=now,
                expires_at=now + QUERY_TTL_S,
            )
            headers["Authorization"] = f"{AUTH_SCHEME} {sign(query, self.keys.sign_key)}"
        connector = aiohttp.TCPConnector(ssl=self._context)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(
                    self.location.router_url + path, headers=headers, allow_redirects=False
                ) as response,
            ):
                body = await response.content.read(max_bytes + 1)
                if len(body) > max_bytes:
                    raise SemopsError(E.TOO_LARGE, "the router's answer is too large")
                return response.status, response.content_type, body
        except TimeoutError as error:
            raise SemopsError(E.TIMEOUT, f"GET {path} timed out") from error
        except (aiohttp.ClientError, OSError) as error:
            raise SemopsError(E.UNAVAILABLE, f"GET {path} failed") from error

    async def directory(self) -> DirectorySnapshot:
        if self._snapshot is None:
            status, content_type, body = await self._get(
                "/v1/directory",
                signed=False,
                max_bytes=DIRECTORY_MAX_BYTES * 2,
                timeout_s=ROUTER_QUERY_TIMEOUT_S,
            )
            if status != 200:
                raise error_from_problem(status, content_type, body)
            self._snapshot = verify_directory_document(
                json.loads(body), self.keys, self.clock.now()
            )
        return self._snapshot

    async def signed(self, path: str, expected: type[M]) -> M | None:
        """A router-signed answer to a signed query; None when the router has none (404)."""
        snapshot = await self.directory()
        status, content_type, body = await self._get(
            path,
            signed=True,
            max_bytes=expected.TOKEN_MAX_BYTES,
            timeout_s=STATEMENT_TIMEOUT_S,
        )
        if status == 404:
            return None
        if status != 200:
            raise error_from_problem(status, content_type, body)
        token = body.decode("ascii", errors="replace").strip()
        return open_signed(
            token, expected, snapshot.ring, self.clock.now(), expected_signer=snapshot.router_id
        ).message

    async def statement(self, window_id: int) -> SettlementStatement | None:
        statement = await self.signed(f"/v1/settlement/windows/{window_id}", SettlementStatement)
        if statement is not None and (
            statement.window_id != window_id
            or statement.settlement.participant_id != self.location.processor_id
        ):
            raise SemopsError(E.TRANSFER_STATE_CONFLICT, "the statement is for another window")
        return statement


async def _local_records(
    database: Database, statement: SettlementStatement
) -> tuple[list[LocalTransfer], dict[str, tuple[str, int]]]:
    listed = [line.transfer_id for line in statement.settlement.transfers]
    async with database.read() as connection:
        rows = await store.routed_decided_between(
            connection, statement.opened_at, statement.closed_at, REPORT_TRANSFERS_MAX * 2
        )
        known = {row["transfer_id"] for row in rows}
        rows += await store.routed_by_ids(connection, [ref for ref in listed if ref not in known])
        refs = sorted(set(listed) | {row["transfer_id"] for row in rows})
        movements = await store.settlement_movements(connection, refs)
    records = [
        LocalTransfer(
            transfer_id=row["transfer_id"],
            kind=row["kind"],
            direction=row["direction"],
            amount_minor=int(row["amount_minor"]),
            currency=row["currency"],
            committed=row["committed"],
            decided_at=row["decided_at"],
        )
        for row in rows
    ]
    return records, movements


async def reconcile_window(
    location: ProcessorLocation, window_id: int, clock: Clock
) -> Reconciliation:
    keys = load_keys(location.data_dir, location.processor_id, clock.now())
    reader = RouterReader(location, keys, clock)
    statement = await reader.statement(window_id)
    if statement is None:
        raise SemopsError(E.NOT_FOUND, f"the router has no closed window {window_id}")
    elsewhere: set[str] = set()
    previous = await reader.statement(window_id - 1) if window_id > 1 else None
    following = await reader.statement(window_id + 1)
    for neighbour in (previous, following):
        if neighbour is not None:
            elsewhere |= {line.transfer_id for line in neighbour.settlement.transfers}
    database = Database(location.db_url)
    try:
        local, movements = await _local_records(database, statement)
    finally:
        await database.dispose()
    differences = reconcile(
        statement,
        local,
        movements,
        elsewhere=frozenset(elsewhere),
        boundary_open=following is None,
    )
    return Reconciliation(statement, differences, len(local))


async def fetch_headroom(location: ProcessorLocation, clock: Clock) -> SettlementHeadroom:
    keys = load_keys(location.data_dir, location.processor_id, clock.now())
    headroom = await RouterReader(location, keys, clock).signed(
        "/v1/settlement/headroom", SettlementHeadroom
    )
    if headroom is None or headroom.participant_id != location.processor_id:
        raise SemopsError(E.NOT_FOUND, "the router sent no headroom for this processor")
    return headroom
