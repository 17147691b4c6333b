"""Settlement windows at the router: close, report, statements, headroom.

Theory of operation (DESIGN.md §8):

- Exactly one window is open. A commit reads it with a shared lock and stamps its id on
  the transfer, in the committing transaction (router/service.py `_decide`); the
  background fold adds committed transfers to the window's per-processor positions.
- Closing takes the open window's row with an exclusive lock, so it waits for commits
  already under way and later commits wait for it; it folds what is not folded yet, builds
  the report from the window's committed transfers, checks it against the window's
  positions (a difference is a broken invariant: the close fails and the window stays
  open), signs it, marks the window closed with its report and opens the next one, and
  audits it -- one transaction.
  Nothing committed can fall between two windows or into a closed one.
- The operator reads whole reports; a processor reads only its own statement and its
  headroom, asking with a signed SettlementQuery (semops.audit.report explains why).
- A window that fills up (WINDOW_TRANSFERS_SOFT_MAX) is closed by the router itself, so
  reports stay bounded; the audit entry says it was automatic.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import structlog

from semops.audit.report import (
    REPORT_TRANSFERS_MAX,
    WINDOW_TRANSFERS_SOFT_MAX,
    CommittedTransfer,
    SettlementHeadroom,
    SettlementQuery,
    SettlementReport,
    build_report,
    headroom_line,
    report_digest,
    statement_for,
)
from semops.core.encoding import canonical_json, parse_json
from semops.core.errors import E, SemopsError
from semops.core.limits import ADMIN_LIST_MAX
from semops.crypto.pki import certificate_pem
from semops.protocol import open_signed, parse_claims, sign
from semops.store import router as store

if TYPE_CHECKING:
    from semops.router.service import Router

log = structlog.get_logger("semops.router")

AUTH_SCHEME: Final = "SEMOPS-Participant"
# How often the router checks whether the open window is full and its audit log quiet.
SETTLEMENT_POLL_INTERVAL_S: Final = 1.0


def _committed(row: dict[str, Any]) -> CommittedTransfer:
    return CommittedTransfer(
        transfer_id=row["transfer_id"],
        kind=row["kind"],
        sender=row["payer_processor"],
        receiver=row["payee_processor"],
        amount_minor=int(row["amount_minor"]),
        currency=row["currency"],
        committed_at=int(row["decided_at"]),
    )


def _check_against_positions(report: SettlementReport, rows: list[dict[str, Any]]) -> None:
    """The report (from the transfers) must equal the positions the folds kept."""
    kept = {
        (row["participant_id"], row["currency"]): (
            int(row["net_minor"]),
            int(row["sent_minor"]),
            int(row["received_minor"]),
            int(row["sent_count"]),
            int(row["received_count"]),
        )
        for row in rows
    }
    built = {
        (part.participant_id, p.currency): (
            p.net_minor,
            p.sent_minor,
            p.received_minor,
            p.sent_count,
            p.received_count,
        )
        for part in report.participants
        for p in part.positions
    }
    assert kept == built, f"window {report.window_id}: positions differ from its transfers"


class Settlement:
    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def _router_id(self) -> str:
        return self.router.identity.router_id

    # --- operator -------------------------------------------------------------------------

    async def close_window(
        self, actor: str = "operator", *, automatic: bool = False
    ) -> dict[str, Any]:
        """Close the open window, open the next, and return the signed report."""
        router = self.router
        now = router.clock.now()
        async with router.database.write() as connection:
            window = await store.open_window(connection, lock="update")
            if window is None:
                raise SemopsError(E.UNAVAILABLE, "no open settlement window")
            window_id = int(window["window_id"])
            # Into the rows now (commits are held off): the check below compares them with
            # the report, not the unfolded transfers with themselves. A batch a concurrent
            # fold holds is still read as booked.
            while await store.fold_positions(connection, store.FOLD_BATCH_MAX) == (
                store.FOLD_BATCH_MAX
            ):
                pass
            rows = await store.window_transfers(connection, window_id, REPORT_TRANSFERS_MAX + 1)
            assert len(rows) <= REPORT_TRANSFERS_MAX, "a window outgrew its report"
            report = build_report(
                self._router_id,
                window_id,
                int(window["opened_at"]),
                max(now, int(window["opened_at"])),
                map(_committed, rows),
            )
            _check_against_positions(report, await store.window_positions_of(connection, window_id))
            token = sign(report, router.identity.sign_key)
            digest = report_digest(report)
            closed = await store.close_window(
                connection,
                window_id,
                {
                    "closed_at": report.closed_at,
                    "closed_by": actor,
                    "transfers_count": report.transfers_count,
                    "report_digest": digest,
                    "report": canonical_json(report.to_claims()).decode("utf-8"),
                    "report_signature": token,
                },
            )
            assert closed, "the open window was locked for this close"
            await store.create_window(connection, window_id + 1, now)
            await router.audit.append(
                connection,
                "window_closed",
                actor,
                {
                    "window_id": window_id,
                    "next_window_id": window_id + 1,
                    "transfers_count": report.transfers_count,
                    "report_digest": digest,
                    "automatic": automatic,
                },
            )
            await router.audit.seal(connection)
        log.info("settlement_window_closed", serial=window_id, count=report.transfers_count)
        return {
            "window_id": window_id,
            "next_window_id": window_id + 1,
            "opened_at": report.opened_at,
            "closed_at": report.closed_at,
            "transfers_count": report.transfers_count,
            "report_digest": digest,
            "report": token,
        }

    async def windows(self) -> list[dict[str, Any]]:
        async with self.router.database.read() as connection:
            return await store.list_windows(connection, ADMIN_LIST_MAX)

    async def window(self, window_id: int) -> dict[str, Any]:
        """A closed window with its signed report, or the open one with its positions."""
        async with self.router.database.read() as connection:
            row = await store.get_window(connection, window_id)
            if row is None:
                raise SemopsError(E.NOT_FOUND, "no such settlement window")
            positions = await store.window_positions_of(connection, window_id)
        answer = {
            key: row[key] for key in ("window_id", "state", "opened_at", "closed_at", "closed_by")
        }
        answer.update(transfers_count=row["transfers_count"], report_digest=row["report_digest"])
        if row["state"] == "open":
            return {**answer, "positions": positions}
        certificate = certificate_pem(self.router.identity.sign_certificate).decode("ascii")
        return {**answer, "report": row["report_signature"], "router_certificate": certificate}

    async def _closed_report(self, window_id: int) -> SettlementReport:
        async with self.router.database.read() as connection:
            row = await store.get_window(connection, window_id)
        if row is None or row["state"] != "closed":
            raise SemopsError(E.NOT_FOUND, "no such closed settlement window")
        claims = parse_json(row["report"], max_bytes=SettlementReport.TOKEN_MAX_BYTES)
        report = parse_claims(claims, SettlementReport)
        # The stored report must still be the one that was signed and audited.
        if report_digest(report) != row["report_digest"]:
            raise SemopsError(E.INTERNAL, "a stored settlement report does not match its digest")
        return report

    async def close_if_full(self) -> bool:
        async with self.router.database.read() as connection:
            window = await store.open_window(connection)
            if window is None:
                return False
            count = await store.window_transfer_count(connection, int(window["window_id"]))
        if count < WINDOW_TRANSFERS_SOFT_MAX:
            return False
        await self.close_window(self._router_id, automatic=True)
        return True

    # --- processors ----------------------------------------------------------------------

    def authenticate(self, authorization: str | None, path: str) -> str:
        """The participant whose signed SettlementQuery for `path` this is."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme != AUTH_SCHEME or not token:
            raise SemopsError(E.UNAUTHENTICATED, f"send a signed query as {AUTH_SCHEME} <JWS>")
        query = open_signed(
            token.strip(), SettlementQuery, self.router.ring, self.router.clock.now()
        ).message
        if query.path != path:
            raise SemopsError(E.FORBIDDEN, "the signed query is for another path")
        return query.participant_id

    async def statement(self, window_id: int, participant_id: str) -> str:
        """The participant's part of a closed window's report, signed by the router."""
        report = await self._closed_report(window_id)
        return sign(statement_for(report, participant_id), self.router.identity.sign_key)

    async def headroom(self, participant_id: str) -> str:
        router = self.router
        async with router.database.read() as connection:
            participant = await store.get_participant(connection, participant_id)
            window = await store.open_window(connection)
            if participant is None or window is None:
                raise SemopsError(E.PROCESSOR_UNKNOWN)
            window_id = int(window["window_id"])
            positions = await store.window_positions_of(connection, window_id, participant_id)
            in_flight = await store.reserved_outflows(connection, participant_id)
        cap = participant["net_debit_cap_minor"]
        net = {row["currency"]: int(row["net_minor"]) for row in positions}
        lines = tuple(
            headroom_line(currency, net.get(currency, 0), in_flight.get(currency, 0), cap)
            for currency in sorted(set(net) | set(in_flight))
        )
        message = SettlementHeadroom(
            router_id=self._router_id,
            participant_id=participant_id,
            window_id=window_id,
            issued_at=router.clock.now(),
            cap_minor=cap,
            lines=lines,
        )
        return sign(message, router.identity.sign_key)

    # --- background ----------------------------------------------------------------------

    async def run_background(self, stop: asyncio.Event) -> None:
        """Close a full window and seal a quiet audit log, until `stop` is set."""
        while not stop.is_set():
            try:
                await self.close_if_full()
                await self.router.audit.seal_if_quiet()
            except Exception as error:  # keep the loop alive; the error is logged
                log.error("settlement_background_failed", error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SETTLEMENT_POLL_INTERVAL_S)
