"""The processor service: one object holding a bank's or an MNO's whole behaviour.

It wires the parts (customers and devices, the payer side, the payee side, refunds) to one
context (settings, keys, database, clock, the router link and directory), dispatches the
router's status messages to the part that owns the transfer, answers the back office and
the wallet's reads, and runs the background work: registration and directory refresh,
in-doubt resolution and webhook delivery. The HTTP apps in `app.py` only translate.

Auditing (DESIGN.md §8) is wired here, around the parts (see audited.py), so they need not
know of it. The log is sealed with a signed checkpoint at start, when quiet and at exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from semops.audit.log import AuditLog
from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.limits import (
    DIRECTORY_REFRESH_INTERVAL_S,
    IN_DOUBT_POLL_INTERVAL_S,
    REGISTRATION_RETRY_MAX_S,
    WALLET_HISTORY_MAX,
)
from semops.ledger import AccountKind
from semops.processor import accounts
from semops.processor.audited import AuditedCustomers, AuditedPayees, AuditedPayer
from semops.processor.context import Context, new_id
from semops.processor.directory import DirectoryCache, HttpClient, RouterLink
from semops.processor.enrolment import Customers
from semops.processor.keys import ProcessorKeys
from semops.processor.metrics import Metrics
from semops.processor.payee import Payee
from semops.processor.payees import Payees
from semops.processor.payer import Payer
from semops.processor.refunds import Refunds
from semops.processor.settings import ProcessorSettings
from semops.protocol import DirectoryKey, TransferStatus
from semops.service.loops import every, in_batches
from semops.service.outbox import OUTBOX_POLL_INTERVAL_S
from semops.store import processor as store
from semops.store.db import Database

log = structlog.get_logger("semops.processor")

# How often a quiet audit log is checked for an unsigned tail.
AUDIT_SEAL_INTERVAL_S = 5.0
# How often system postings are folded into their accounts' rows (`accounts.fold`).
LEDGER_FOLD_INTERVAL_S = 1.0


class Processor:
    def __init__(
        self,
        settings: ProcessorSettings,
        keys: ProcessorKeys,
        database: Database,
        clock: Clock,
        router_client: HttpClient,
        webhook_client: HttpClient,
    ) -> None:
        link = RouterLink(router_client, settings.router_url)
        metrics = Metrics()
        self.context = Context(
            settings=settings,
            keys=keys,
            database=database,
            clock=clock,
            directory=DirectoryCache(settings, keys, link, clock, metrics),
            router=link,
            webhooks=webhook_client,
            metrics=metrics,
        )
        self.audit = AuditLog(
            settings.processor_id,
            store.audit_log,
            store.audit_pending,
            database,
            keys.sign_key,
            clock,
        )
        self.customers: Customers = AuditedCustomers(self.context, self.audit)
        self.payees: Payees = AuditedPayees(self.context, self.audit)
        self.payee = Payee(self.context)
        self.payer: Payer = AuditedPayer(self.context, self.customers, self.payee, self.audit)
        self.refunds = Refunds(self.context)

    @property
    def settings(self) -> ProcessorSettings:
        return self.context.settings

    @property
    def directory(self) -> DirectoryCache:
        return self.context.directory

    async def start(self) -> None:
        """Open the system accounts of the processor's home currency."""
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            await accounts.ensure_system_accounts(connection, self.settings.currency, now)
        await self.audit.seal()  # a tail left unsigned by a crash is signed now

    # --- scheme ---------------------------------------------------------------------------

    async def scheme_status(self, token: str) -> None:
        """A router-signed TransferStatus: hand it to whichever side owns the transfer."""
        status = await self.directory.open_from_router(token, TransferStatus)
        if status.kind == "refund":
            known = await self.refunds.apply_status(status)
        elif status.state == "committed":
            # The router sends a commit to the payee side only (the payer hears it in its
            # reply), so the payee side is asked first.
            known = await self.payee.apply_status(status) or await self._payer_status(status)
        else:
            known = await self._payer_status(status) or await self.payee.apply_status(status)
        if not known:
            # Acknowledged anyway: a status for a transfer we never answered (we were down
            # and the router expired it) has nothing to finish here.
            log.warning(
                "status_for_unknown_transfer", transfer_id=status.transfer_id, state=status.state
            )

    async def _payer_status(self, status: TransferStatus) -> bool:
        if not await self.payer.knows(status.transfer_id):
            return False
        await self.payer.apply_status(status)
        return True

    # --- wallet ---------------------------------------------------------------------------

    async def wallet_config(self) -> dict[str, Any]:
        # A wallet asks when it starts or meets an unknown processor: show it the newest.
        await self.directory.refresh_if_allowed()
        return self.config_document()

    def config_document(self) -> dict[str, Any]:
        keys = self.context.keys
        snapshot = self.directory.snapshot
        # Our own key, never the one the directory lists for us: when the two differ (our
        # entry was taken over, issue 11 H1, or a rotation still waits for the operator) a
        # wallet refuses the configuration (verify_config compares them) instead of
        # sealing a PIN to someone else's key.
        encryption_key = keys.enc_record()
        return {
            "processor_id": self.settings.processor_id,
            "display_name": self.settings.display_name,
            "currency": self.settings.currency,
            "encryption_key": DirectoryKey.from_record(encryption_key).model_dump(mode="json"),
            "signing_key": DirectoryKey.from_record(keys.sign_record()).model_dump(mode="json"),
            "directory": snapshot.token if snapshot else None,
            "router_certificate": snapshot.router_certificate_pem if snapshot else None,
            "root_certificate": keys.pem(keys.root_certificate),
        }

    async def balance(self, account_id: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            return await accounts.balance_view(connection, account_id)

    async def history(self, account_id: str) -> dict[str, Any]:
        """The account's movements, newest first, with the payee's name where there is one."""
        async with self.context.database.read() as connection:
            rows = await store.account_history(connection, account_id, WALLET_HISTORY_MAX)
            entries = [await self._history_entry(connection, row) for row in rows]
        return {"account_id": account_id, "entries": [entry for entry in entries if entry]}

    async def _history_entry(self, connection: Any, row: dict[str, Any]) -> dict[str, Any] | None:
        ref, kind = row["transfer_ref"], row["kind"]
        entry: dict[str, Any] = {
            "amount_minor": row["amount_minor"],
            "currency": row["currency"],
            "created_at": row["created_at"],
            "payee_name": None,
        }
        order = await store.find_row(connection, store.orders, transfer_id=ref)
        if order is not None:
            if kind not in ("reserve", "void"):
                # The payee side of an on-us payment looks exactly like a routed one: no
                # order id, which would tell the payee that the payer banks here (§5).
                return {**entry, "kind": "payment_received", "transfer_id": ref}
            entry.update(
                order_id=order["order_id"], transfer_id=ref, payee_name=order["payee_name"]
            )
            if kind == "reserve":
                return {**entry, "kind": "payment", "state": self._order_state(order)}
            return {**entry, "kind": "payment_returned", "state": "failed"}
        if kind == "deposit":
            return {**entry, "kind": "deposit"}
        refund = await self._refund_of(connection, ref)
        if refund is not None:
            return {
                **entry,
                **refund,
                "kind": "refund" if row["amount_minor"] > 0 else "refund_sent",
            }
        if kind == "credit_inbound":
            return {**entry, "kind": "payment_received", "transfer_id": ref}
        return {**entry, "kind": kind}

    @staticmethod
    def _order_state(order: dict[str, Any]) -> str:
        return {"committed": "completed", "aborted": "failed"}.get(order["state"], "pending")

    @staticmethod
    async def _refund_of(connection: Any, ref: str) -> dict[str, Any] | None:
        received = await store.get_row(connection, store.refunds_in, ref)
        if received is not None:
            order = await store.find_row(
                connection, store.orders, transfer_id=received["transfer_id"]
            )
            name = order["payee_name"] if order is not None else None
            return {"refund_id": ref, "transfer_id": received["transfer_id"], "payee_name": name}
        sent = await store.get_row(connection, store.refunds_out, ref)
        if sent is not None:
            payee = await store.get_row(connection, store.payees, sent["payee_id"])
            name = payee["display_name"] if payee is not None else None
            return {"refund_id": ref, "transfer_id": sent["transfer_id"], "payee_name": name}
        return None

    async def p2p_request(
        self,
        account_id: str,
        amount_minor: int,
        currency: str,
        reference: str | None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A request naming the person as payee; the wallet's key makes a retry return
        the same request (without one, each call is a new request)."""
        payee = await self.payees.person_payee(account_id)
        return await self.payee.create_request(
            payee,
            amount_minor=amount_minor,
            currency=currency,
            reference=reference,
            idempotency_key=idempotency_key or new_id("p2p"),
        )

    # --- back office ----------------------------------------------------------------------

    async def position(self) -> dict[str, Any]:
        """Balances per account kind and currency. `net_position_minor` is the position
        against the router in the router's sign (+ owed to us, - we owe), the negative of
        the settlement account's balance (money posted to it is money we must pay out);
        suspense is the money in flight, funding the outside world."""
        async with self.context.database.read() as connection:
            rows = await store.balances_by_kind(connection)
            undelivered = await store.undelivered_count(connection)
        by_currency: dict[str, dict[str, int]] = {}
        for row in rows:
            by_currency.setdefault(row["currency"], {})[row["kind"]] = row["balance_minor"]
        return {
            "processor_id": self.settings.processor_id,
            "positions": [
                {
                    "currency": currency,
                    "net_position_minor": -kinds.get(AccountKind.SETTLEMENT.value, 0),
                    "settlement_minor": kinds.get(AccountKind.SETTLEMENT.value, 0),
                    "suspense_minor": kinds.get(AccountKind.SUSPENSE.value, 0),
                    "funding_minor": kinds.get(AccountKind.FUNDING.value, 0),
                    "customers_minor": kinds.get(AccountKind.CUSTOMER.value, 0),
                    "merchants_minor": kinds.get(AccountKind.MERCHANT.value, 0),
                }
                for currency, kinds in sorted(by_currency.items())
            ],
            "notices_undelivered": undelivered,
        }

    def health(self) -> dict[str, Any]:
        snapshot = self.directory.snapshot
        if snapshot is None or not self.directory.is_listed():
            raise SemopsError(E.UNAVAILABLE, "not registered with the router yet")
        return {
            "status": "ok",
            "processor_id": self.settings.processor_id,
            "directory_serial": snapshot.directory.serial,
        }

    # --- background -----------------------------------------------------------------------

    async def register_until_answered(self, stop: asyncio.Event) -> None:
        """Register with the router, retrying with back-off until it answers."""
        delay_s = 0.2
        while not stop.is_set():
            try:
                await self.directory.register()
                return
            except SemopsError as error:
                log.warning("registration_failed", code=error.code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay_s)
            delay_s = min(delay_s * 2, REGISTRATION_RETRY_MAX_S)

    async def run_background(self, stop: asyncio.Event) -> None:
        """Registration first, then the periodic work, until `stop` is set (the audit
        chainer from the start: an on-us payment needs no router)."""
        chainer = asyncio.create_task(self.audit.run(stop))
        try:
            await self.register_until_answered(stop)
        except BaseException:
            chainer.cancel()
            raise
        tasks = [
            chainer,
            asyncio.create_task(every(stop, IN_DOUBT_POLL_INTERVAL_S, self._resolve)),
            asyncio.create_task(self._outbox_loop(stop)),
            asyncio.create_task(every(stop, DIRECTORY_REFRESH_INTERVAL_S, self._refresh_directory)),
            asyncio.create_task(every(stop, AUDIT_SEAL_INTERVAL_S, self.audit.seal_if_quiet)),
            asyncio.create_task(every(stop, LEDGER_FOLD_INTERVAL_S, self._fold_ledger)),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _resolve(self) -> None:
        await self.payer.resolve_in_doubt()
        await self.payer.prune_refusals()
        await self.customers.prune_signed_calls()
        await self.refunds.resolve_in_doubt()
        await self.payee.resolve_stale()

    async def _fold_ledger(self) -> None:
        """The system postings of the last interval into their accounts' rows, a batch per
        short write transaction, until none is left."""
        await in_batches(self.context.database, accounts.fold, accounts.FOLD_BATCH_MAX)

    async def _refresh_directory(self) -> None:
        await self.directory.refresh()
        if not self.directory.is_listed():  # the router forgot us (a new database): rejoin
            await self.directory.register()

    async def _outbox_loop(self, stop: asyncio.Event) -> None:
        """Webhook deliveries as they are queued, and the pending gauge once a poll (not
        once a delivery: it is a count over the outbox)."""
        delivering = asyncio.create_task(self.payees.outbox.run(stop))
        try:
            await every(stop, OUTBOX_POLL_INTERVAL_S, self.payees.refresh_outbox_gauge)
        finally:
            delivering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivering
