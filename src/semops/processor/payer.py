"""The payer side of a processor: authorise a customer's order, reserve, route, settle.

Theory of operation (DESIGN.md §3, §6). An order is checked in a fixed order, and every
refusal before the reservation changes nothing but the PIN failure count:

    device known and active -> device signature -> order for the device's account
    -> idempotency on order_id (same content: the stored outcome; other: conflict)
    -> embedded request signed by its processor, matching the order, payee active
    -> PIN block opens and is bound to this order -> PIN (count committed on its own)
    -> reserve the funds and store the order RESERVED in one transaction

On-us (the payee is ours) the request is matched and paid in that same transaction: the
reservation is posted to the payee's account, the request becomes PAID and the receipt is
signed at once. Routed, the prepare goes to the router with the details sealed to the
payee processor and only a one-time payer reference inside. The router's answer decides:
committed (the fulfilment must hash to the condition) posts to settlement and signs the
receipt; aborted voids; a problem answer means it was never recorded, so it voids too;
anything else (202, timeout, transport error, 5xx) leaves the transfer IN_DOUBT. Money in
PREPARED or IN_DOUBT is voided only on the router's word: a background pass asks it, and
"not found" after the prepare's expiry is such a word (the router never records an
expired prepare). "Not found" before the expiry means the prepare was lost or the router
restarted before recording it: the stored prepare is sent again, identical, while the
router still has time to forward it, so a lost message delays a payment rather than
failing it. Every state change goes through PAYER_TRANSFER.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.errors import E, SemopsError, lookup
from semops.core.ids import IdKind, check_id
from semops.core.limits import CLOCK_SKEW_MAX_S, IN_DOUBT_BATCH_MAX, TRANSFER_HOP_MARGIN_S
from semops.core.money import Money
from semops.crypto import (
    KeyUse,
    check_fulfilment,
    open_pin_block,
    payer_reference,
    read_unverified_claims,
    read_unverified_kid,
)
from semops.crypto.keys import check_kid
from semops.ledger import Reservation
from semops.processor import accounts
from semops.processor.context import (
    TRANSFERS_PATH,
    Context,
    RouterVerdict,
    ask_router,
    new_network_id,
    send_to_router,
)
from semops.processor.enrolment import Customers, check_active, device_ring
from semops.processor.payee import Payee, check_payable
from semops.protocol import (
    PAYER_TRANSFER,
    REQUEST,
    PayerTransferEvent,
    PayerTransferState,
    PaymentOrder,
    PaymentRequest,
    Receipt,
    RequestEvent,
    RequestState,
    StoredOutcome,
    TransferDetails,
    TransferPrepare,
    TransferStatus,
    check_order_matches_request,
    decide,
    open_signed,
    seal,
)
from semops.store import processor as store
from semops.store.db import Connection

log = structlog.get_logger("semops.processor")
# A lost prepare is sent again only while the router can still forward it in time.
RESEND_MARGIN_S: Final = TRANSFER_HOP_MARGIN_S
# Undecided transfers asked about at once (each is one router call, at most a few seconds).
IN_DOUBT_CONCURRENCY: Final = 8

_PENDING_STATES = frozenset(
    {PayerTransferState.RESERVED, PayerTransferState.PREPARED, PayerTransferState.IN_DOUBT}
)


@dataclass(frozen=True, slots=True)
class OrderAnswer:
    """What the wallet is told: a receipt (200), pending (202) or a refusal (problem)."""

    order_id: str
    receipt: str | None = None
    error: SemopsError | None = None

    @property
    def state(self) -> str:
        if self.receipt is not None:
            return "completed"
        return "failed" if self.error is not None else "pending"


def answer_of(order: dict[str, Any]) -> OrderAnswer:
    state = PayerTransferState(order["state"])
    if state is PayerTransferState.COMMITTED:
        return OrderAnswer(order["order_id"], receipt=order["receipt"])
    if state is PayerTransferState.ABORTED:
        code = order["reason_code"] or E.TRANSFER_REJECTED.code
        return OrderAnswer(order["order_id"], error=SemopsError(lookup(code)))
    return OrderAnswer(order["order_id"])


def _reservation(order: dict[str, Any]) -> Reservation:
    return Reservation(
        order["transfer_id"], order["account_id"], Money(order["amount_minor"], order["currency"])
    )


class _Raced(Exception):
    """The order id was stored by a concurrent attempt while this one was being checked."""


@dataclass(slots=True)
class _PinAttempt:
    """An order's PIN, opened from its PIN block, until its attempt in the reservation's
    write transaction (then cleared); `refusal` is the order_refusals row to store if the
    PIN is refused."""

    account_id: str
    pin: str
    refusal: dict[str, Any]


def _is_order_id(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        check_id(value, kind=IdKind.ORDER)
    except SemopsError:
        return False
    return True


class _PinRefused(Exception):
    def __init__(self, error: SemopsError) -> None:
        super().__init__(error.code)
        self.error = error


class Payer:
    def __init__(self, context: Context, customers: Customers, payee: Payee) -> None:
        self.context = context
        self.customers = customers
        self.payee = payee
        # Transfers whose prepare a request handler of this process is sending now: the
        # reply decides them, so the in-doubt pass does not ask the router about them too.
        # In this process only (like the router's `_forwarding`): after a crash the set is
        # empty and every unresolved order is asked about.
        self._in_flight: set[str] = set()

    # --- the order ----------------------------------------------------------------------

    async def submit(self, token: str) -> OrderAnswer:
        started = time.monotonic()
        try:
            answer = await self._submit(token)
        except SemopsError as error:
            self.context.metrics.payments.labels("refused").inc()
            log.info("order_refused", code=error.code)
            raise
        finally:
            self.context.metrics.payment_seconds.observe(time.monotonic() - started)
        self.context.metrics.payments.labels(answer.state).inc()
        return answer

    async def _submit(self, token: str) -> OrderAnswer:
        context = self.context
        now = context.clock.now()
        # One look at the device and at the order's id, read from the token before it is
        # verified: a lookup key only. The verified order must name the same id, or the
        # id it names is looked up on its own.
        kid, claimed = read_unverified_kid(token), read_unverified_claims(token).get("order_id")
        try:
            check_kid(kid)
        except SemopsError:  # not a key id any device could have
            raise SemopsError(E.DEVICE_UNKNOWN) from None
        if not _is_order_id(claimed):
            claimed = None  # the verified order is then looked up on its own
        async with context.database.read() as connection:
            device, found = await store.device_and_order_seen(connection, kid, claimed or "")
        device = check_active(device)
        order = open_signed(token, PaymentOrder, device_ring(device), now).message
        if order.payer_account != device["account_id"]:
            raise SemopsError(E.FORBIDDEN, "the device is not enrolled for this account")
        stored: dict[str, Any] | None = None
        refused: dict[str, Any] | None = None
        if order.order_id != claimed or found:  # else a new order: nothing to read
            async with context.database.read() as connection:
                stored, refused = await store.order_or_refusal(
                    connection, order.order_id, found if order.order_id == claimed else None
                )
        if stored is not None:
            self._retry(stored, order)  # a conflict raises before anything else happens
            return self._retry(await self._ask_if_pending(stored), order)
        self._raise_refusal(refused, order)
        refusal = {
            "order_id": order.order_id,
            "account_id": order.payer_account,
            "content_digest": order.digest(),
            "expires_at": order.expires_at + CLOCK_SKEW_MAX_S,
            "created_at": now,
        }
        try:
            request = await self._verified_request(order, now)
            # Verified in memory inside the reservation's write and dropped (DESIGN.md §6).
            attempt = _PinAttempt(
                order.payer_account,
                open_pin_block(order.pin_block, context.keys.enc_key, order.order_digest()),
                refusal,
            )
        except SemopsError as error:
            await self._remember_refusal(refusal, error)
            raise
        try:
            if request.payee_processor == context.processor_id:
                return await self._pay_on_us(order, request, device["kid"], attempt)
            return await self._pay_routed(order, request, device["kid"], attempt)
        except (_Raced, IntegrityError):
            stored = await self._stored(order.order_id)
            if stored is None:
                # A copy of this order was refused at this very moment (its PIN attempt
                # stored the same refusal row): the same refusal, counted once.
                await self._raise_if_refused(order)
                raise
            return self._retry(stored, order)
        except SemopsError as error:
            await self._remember_refusal(refusal, error)
            raise

    async def _raise_if_refused(self, order: PaymentOrder) -> None:
        """An order id refused before is single-use: the same order gets the same refusal
        (no second PIN attempt, no payment after a later deposit), other content is a
        conflict."""
        async with self.context.database.read() as connection:
            refused = await store.get_row(connection, store.order_refusals, order.order_id)
        self._raise_refusal(refused, order)

    @staticmethod
    def _raise_refusal(refused: dict[str, Any] | None, order: PaymentOrder) -> None:
        if refused is None:
            return
        if refused["content_digest"] != order.digest():
            raise SemopsError(E.IDEMPOTENCY_CONFLICT, "this order id was used for another order")
        raise SemopsError(lookup(refused["code"]), "this order was refused before")

    async def _remember_refusal(self, refusal: dict[str, Any], error: SemopsError) -> None:
        """Store a definite refusal of an authenticated order (not a passing outage)."""
        if error.spec.http_status >= 500:
            return
        with contextlib.suppress(IntegrityError):  # already stored (a PIN refusal, a copy)
            async with self.context.database.write() as connection:
                await store.insert_row(
                    connection, store.order_refusals, refusal | {"code": error.code}
                )

    async def prune_refusals(self) -> int:
        """Forget refusals of orders that have expired (they are refused as expired now)."""
        async with self.context.database.write() as connection:
            return await store.prune_order_refusals(connection, self.context.clock.now())

    async def _stored(self, order_id: str) -> dict[str, Any] | None:
        async with self.context.database.read() as connection:
            return await store.get_row(connection, store.orders, order_id)

    async def _ask_if_pending(self, order: dict[str, Any]) -> dict[str, Any]:
        """A wallet asking about an undecided routed order: ask the router once, now."""
        if PayerTransferState(order["state"]) not in _PENDING_STATES or order["on_us"]:
            return order
        verdict = await ask_router(self.context, order["transfer_id"])
        if verdict.status is None or verdict.status.state == "reserved":
            return order
        try:
            return await self.apply_status(verdict.status)
        except SemopsError as error:
            log.error("router_status_unusable", transfer_id=order["transfer_id"], code=error.code)
            return order

    @staticmethod
    def _retry(stored: dict[str, Any], order: PaymentOrder) -> OrderAnswer:
        verdict = decide(StoredOutcome(stored["content_digest"], stored), order.digest())
        assert verdict.outcome is not None
        return answer_of(verdict.outcome)

    async def _verified_request(self, order: PaymentOrder, now: int) -> PaymentRequest:
        directory = self.context.directory
        request = (await directory.open(order.request, PaymentRequest)).message
        check_order_matches_request(order, request, processor_id=self.context.processor_id, now=now)
        if request.payee_processor != self.context.processor_id:
            await directory.active_entry(request.payee_processor)
        return request

    def _order_row(
        self, order: PaymentOrder, request: PaymentRequest, kid: str, transfer_id: str, now: int
    ) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "account_id": order.payer_account,
            "device_kid": kid,
            "content_digest": order.digest(),
            "transfer_id": transfer_id,
            "on_us": request.payee_processor == self.context.processor_id,
            "request_id": request.request_id,
            "payee_processor": request.payee_processor,
            "payee_id": request.payee_id,
            "payee_name": request.payee_name,
            "reference": request.reference,
            "amount_minor": order.amount_minor,
            "currency": order.currency,
            "condition": request.condition,
            "state": PAYER_TRANSFER.initial.value,
            "expires_at": now + self.context.settings.transfer_ttl_s,
            "fulfilment": None,
            "reason_code": None,
            "receipt": None,
            "created_at": now,
            "decided_at": None,
            "prepare": None,
        }

    async def _attempt_pin(self, connection: Connection, attempt: _PinAttempt) -> None:
        """The order's PIN attempt, first in its writing transaction; a refusal leaves the
        transaction to commit the attempt alone (`_PinRefused`)."""
        error = await self.customers.attempt_pin(
            connection, attempt.account_id, attempt.pin, attempt.refusal
        )
        attempt.pin = ""
        if error is not None:
            raise _PinRefused(error)

    async def _reserve(self, connection: Connection, row: dict[str, Any], now: int) -> None:
        # The order row first: its key is the check that a concurrent retry of this order
        # has not won (IntegrityError), before any money moves for this copy.
        await store.insert_row(connection, store.orders, row)
        amount = Money(row["amount_minor"], row["currency"])
        await accounts.reserve(connection, row["account_id"], amount, row["transfer_id"], now)

    # --- on-us --------------------------------------------------------------------------

    async def _pay_on_us(
        self, order: PaymentOrder, request: PaymentRequest, kid: str, attempt: _PinAttempt
    ) -> OrderAnswer:
        now = self.context.clock.now()
        row = self._order_row(order, request, kid, new_network_id(IdKind.TRANSFER), now)
        queued: list[dict[str, Any]] = []
        async with self._writing_after_pin(attempt) as connection:
            # Lock order: the payer's credential, the request row, then the two accounts
            # (in id order); every writer takes them in this order. No system account's
            # row is locked (their postings are folded later, see accounts.py).
            stored_request = await store.get_row(
                connection, store.requests, request.request_id, for_update=True
            )
            if await store.get_row(connection, store.orders, order.order_id) is not None:
                raise _Raced  # checked under the request's lock: it may be paid by this order
            check_payable(
                stored_request,
                payee_id=request.payee_id,
                amount_minor=request.amount_minor,
                currency=request.currency,
                condition=request.condition,
                now=now,
            )
            assert stored_request is not None
            payee = await store.get_row(connection, store.payees, request.payee_id)
            assert payee is not None, "a stored request has a payee"
            await accounts.lock_accounts(connection, [row["account_id"], payee["account_id"]])
            await self._reserve(connection, row, now)
            await accounts.post(connection, _reservation(row), payee["account_id"], now)
            reserved = REQUEST.next(
                RequestState(stored_request["state"]), RequestEvent.TRANSFER_RESERVED
            )
            await self.payee.settle_request(
                connection,
                {**stored_request, "state": reserved.value},
                payee,
                row["transfer_id"],
                now,
                queued=queued,
            )
            decided = await self._commit(connection, row, stored_request["fulfilment"], now)
        self.context.notices_committed(queued)
        log.info("order_completed", order_id=order.order_id, transfer_id=row["transfer_id"])
        return answer_of(decided)

    # --- routed -------------------------------------------------------------------------

    async def _pay_routed(
        self, order: PaymentOrder, request: PaymentRequest, kid: str, attempt: _PinAttempt
    ) -> OrderAnswer:
        context = self.context
        now = context.clock.now()
        transfer_id = new_network_id(IdKind.TRANSFER)
        row = self._order_row(order, request, kid, transfer_id, now)
        prepare_token = await self._prepare(row, now)
        row["prepare"] = prepare_token
        # Marked before the reservation commits: an in-doubt pass that reads the order
        # between the commit and the send must already see it as in flight, or it would
        # ask the router, find nothing yet and send a copy that may overtake this one.
        self._in_flight.add(transfer_id)
        try:
            async with self._writing_after_pin(attempt) as connection:
                await self._reserve(connection, row, now)
            log.info("order_reserved", order_id=order.order_id, transfer_id=transfer_id)
            verdict = await send_to_router(context, TRANSFERS_PATH, prepare_token)
            return answer_of(await self._apply_prepare_verdict(transfer_id, verdict, row))
        finally:
            self._in_flight.discard(transfer_id)

    @contextlib.asynccontextmanager
    async def _writing_after_pin(self, attempt: _PinAttempt) -> AsyncIterator[Connection]:
        """A write transaction that begins with the order's PIN attempt: one transaction for
        the attempt and the reservation. A refused attempt commits alone (the count and the
        order's refusal) and its error is raised after the commit."""
        try:
            async with self.context.database.write() as connection:
                try:
                    await self._attempt_pin(connection, attempt)
                except _PinRefused as refused:
                    error = refused.error
                else:
                    yield connection
                    return
        finally:
            attempt.pin = ""
        self.customers.count_refusal(error)
        raise error

    async def _prepare(self, row: dict[str, Any], now: int) -> str:
        context = self.context
        payee = await context.directory.active_entry(row["payee_processor"])
        details = TransferDetails(
            transfer_id=row["transfer_id"],
            request_id=row["request_id"],
            payee_id=row["payee_id"],
            payer_ref=payer_reference(context.keys.reference_key, row["transfer_id"]),
        )
        prepare = TransferPrepare(
            transfer_id=row["transfer_id"],
            payer_processor=context.processor_id,
            payee_processor=row["payee_processor"],
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            condition=row["condition"],
            created_at=now,
            expires_at=row["expires_at"],
            sealed=seal(details, payee.current_key(KeyUse.ENCRYPT, now)),
        )
        return context.sign(prepare)

    async def _apply_prepare_verdict(
        self, transfer_id: str, verdict: RouterVerdict, reserved: dict[str, Any]
    ) -> dict[str, Any]:
        """The router's answer to the prepare of `reserved` (the order row as this call
        stored it)."""
        if verdict.status is not None and verdict.status.transfer_id == transfer_id:
            if verdict.status.state != "reserved":
                try:
                    if verdict.status.state == "committed":
                        assert verdict.status.fulfilment is not None
                        return await self._commit_reserved(reserved, verdict.status.fulfilment)
                    return await self.apply_status(verdict.status)
                except SemopsError as error:  # e.g. a fulfilment that does not hash right
                    log.error("router_status_unusable", transfer_id=transfer_id, code=error.code)
            return await self._transition(transfer_id, PayerTransferEvent.TIMED_OUT)
        if verdict.refused is not None:
            return await self._transition(
                transfer_id, PayerTransferEvent.ROUTER_REFUSED, verdict.refused.code
            )
        return await self._transition(transfer_id, PayerTransferEvent.TIMED_OUT)

    # --- outcomes -----------------------------------------------------------------------

    async def apply_status(self, status: TransferStatus) -> dict[str, Any]:
        """The router's word on one of our transfers; raises not_found if it is not ours."""
        if status.state == "committed":
            assert status.fulfilment is not None
            return await self._transition(
                status.transfer_id, PayerTransferEvent.COMMITTED, fulfilment=status.fulfilment
            )
        if status.state == "aborted":
            return await self._transition(
                status.transfer_id, PayerTransferEvent.ABORTED, status.reason_code
            )
        return await self._transition(status.transfer_id, PayerTransferEvent.ROUTER_ACCEPTED)

    async def knows(self, transfer_id: str) -> bool:
        async with self.context.database.read() as connection:
            row = await store.find_row(connection, store.orders, transfer_id=transfer_id)
        return row is not None

    async def _transition(
        self,
        transfer_id: str,
        event: PayerTransferEvent,
        reason_code: str | None = None,
        *,
        fulfilment: str | None = None,
    ) -> dict[str, Any]:
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            row = await store.find_row(
                connection, store.orders, for_update=True, transfer_id=transfer_id
            )
            if row is None:
                raise SemopsError(E.NOT_FOUND, "no such outbound transfer")
            state = PayerTransferState(row["state"])
            if not self._applies(state, event):
                return row
            if event is PayerTransferEvent.COMMITTED:
                assert fulfilment is not None
                check_fulfilment(fulfilment, row["condition"])
                await accounts.post_to_settlement(connection, _reservation(row), now)
                return await self._commit(connection, row, fulfilment, now)
            target = PAYER_TRANSFER.next(state, event)
            values: dict[str, Any] = {"state": target.value}
            if target is PayerTransferState.ABORTED:
                await accounts.void(connection, _reservation(row), now)
                values.update(reason_code=reason_code or E.TRANSFER_REJECTED.code, decided_at=now)
            await store.update_row(connection, store.orders, row["order_id"], values)
            row = {**row, **values}
        log.info(
            "order_transition",
            order_id=row["order_id"],
            state=row["state"],
            reason_code=row["reason_code"],
        )
        return row

    @staticmethod
    def _applies(state: PayerTransferState, event: PayerTransferEvent) -> bool:
        """Whether an event still changes the transfer: duplicates and late news do not,
        and a contradiction (committed after aborted) raises instead of being applied."""
        if event is PayerTransferEvent.ROUTER_ACCEPTED and state is not PayerTransferState.RESERVED:
            return False  # "still reserved at the router": nothing new once past RESERVED
        if PAYER_TRANSFER.is_terminal(state):
            if event is PayerTransferEvent.TIMED_OUT:
                return False  # late news about a decided transfer
            PAYER_TRANSFER.next(state, event)  # a duplicate loops; a contradiction raises
            return False
        PAYER_TRANSFER.next(state, event)  # a pair the table does not list raises here
        return True

    async def _commit_reserved(self, row: dict[str, Any], fulfilment: str) -> dict[str, Any]:
        """The commit of an order this call reserved, as it stored it: the receipt signed
        before the write, whose first statement moves the order on only if it is still in
        the state it was stored in (no read first); if something else moved it meanwhile,
        the transition as from any other report."""
        check_fulfilment(fulfilment, row["condition"])
        now = self.context.clock.now()
        values = self._receipt_values(row, fulfilment, now)
        async with self.context.database.write() as connection:
            if await store.update_row(
                connection, store.orders, row["order_id"], values, expected_state=row["state"]
            ):
                await accounts.post_to_settlement(connection, _reservation(row), now)
                return await self._committed(connection, {**row, **values})
        return await self._transition(
            row["transfer_id"], PayerTransferEvent.COMMITTED, fulfilment=fulfilment
        )

    async def _commit(
        self, connection: Connection, row: dict[str, Any], fulfilment: str, now: int
    ) -> dict[str, Any]:
        values = self._receipt_values(row, fulfilment, now)
        await store.update_row(connection, store.orders, row["order_id"], values)
        return await self._committed(connection, {**row, **values})

    async def _committed(self, connection: Connection, row: dict[str, Any]) -> dict[str, Any]:
        """The order as committed, in the committing transaction (AuditedPayer audits it)."""
        return row

    def _receipt_values(self, row: dict[str, Any], fulfilment: str, now: int) -> dict[str, Any]:
        """The committed order's new columns, its signed receipt among them."""
        state = PAYER_TRANSFER.next(PayerTransferState(row["state"]), PayerTransferEvent.COMMITTED)
        receipt = Receipt(
            order_id=row["order_id"],
            request_id=row["request_id"],
            transfer_id=row["transfer_id"],
            payer_processor=self.context.processor_id,
            payee_processor=row["payee_processor"],
            payee_id=row["payee_id"],
            payee_name=row["payee_name"],
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            reference=row["reference"],
            condition=row["condition"],
            fulfilment=fulfilment,
            committed_at=now,
        )
        return {
            "state": state.value,
            "fulfilment": fulfilment,
            "receipt": self.context.sign(receipt),
            "decided_at": now,
        }

    # --- in doubt -----------------------------------------------------------------------

    async def resolve_in_doubt(self) -> int:
        """Ask the router about every transfer whose outcome we do not know; returns how
        many were decided by this pass. Transfers are asked about side by side (bounded),
        so that one slow answer does not keep the others waiting until they expire. One
        whose prepare is still on its way in this process is left to that call's reply."""
        async with self.context.database.read() as connection:
            unresolved = await store.unresolved_orders(connection, IN_DOUBT_BATCH_MAX)
        pending = [row for row in unresolved if row["transfer_id"] not in self._in_flight]
        slots = asyncio.Semaphore(IN_DOUBT_CONCURRENCY)

        async def resolve(row: dict[str, Any]) -> bool:
            async with slots:
                try:
                    after = await self._resolve_one(row)
                except SemopsError as error:  # this one stays in doubt; the others go on
                    log.error(
                        "in_doubt_unresolved", transfer_id=row["transfer_id"], code=error.code
                    )
                    return False
            return PayerTransferState(after["state"]) not in _PENDING_STATES

        return sum(await asyncio.gather(*(resolve(row) for row in pending)))

    async def _resolve_one(self, row: dict[str, Any]) -> dict[str, Any]:
        verdict = await ask_router(self.context, row["transfer_id"])
        now = self.context.clock.now()
        if verdict.status is not None:
            return await self.apply_status(verdict.status)
        if verdict.refused is None or verdict.refused.spec is not E.NOT_FOUND:
            return row  # the router did not answer: ask again next time
        if now < row["expires_at"] + CLOCK_SKEW_MAX_S:
            # Not recorded yet, but it still could be: the prepare was lost, or the router
            # restarted before recording it. Send the identical prepare again while it can
            # still commit (the router dedups on the transfer id).
            if row["prepare"] and now < row["expires_at"] - RESEND_MARGIN_S:
                return await self._resend(row)
            return row
        return await self._transition(
            row["transfer_id"], PayerTransferEvent.ABORTED, E.TRANSFER_EXPIRED.code
        )

    async def _resend(self, row: dict[str, Any]) -> dict[str, Any]:
        """The stored prepare sent again. Only a decision is applied: a refusal now proves
        nothing (the first copy may still be on its way and be recorded), so the order
        stays in doubt and the expiry rule above ends it if nothing else does."""
        verdict = await send_to_router(self.context, TRANSFERS_PATH, row["prepare"])
        status = verdict.status
        log.info("prepare_resent", transfer_id=row["transfer_id"])
        if status is None or status.transfer_id != row["transfer_id"] or status.state == "reserved":
            return row
        try:
            return await self.apply_status(status)
        except SemopsError as error:
            log.error("router_status_unusable", transfer_id=row["transfer_id"], code=error.code)
            return row

    # --- reads --------------------------------------------------------------------------

    async def order_status(self, account_id: str, order_id: str) -> dict[str, Any]:
        stored = await self._stored(order_id)
        if stored is None or stored["account_id"] != account_id:
            raise SemopsError(E.NOT_FOUND, "no such order")
        answer = answer_of(await self._ask_if_pending(stored))
        return {
            "order_id": order_id,
            "state": answer.state,
            "receipt": answer.receipt,
            "error": answer.error.to_problem() if answer.error is not None else None,
        }
