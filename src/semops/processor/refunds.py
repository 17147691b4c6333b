"""Refunds, from both ends: a payee's processor sending one, a payer's processor receiving one.

Theory of operation (DESIGN.md §3 "Refund", §5):

- Sending (the merchant's processor). A merchant asks for a refund of a paid request, full
  or partial, with its own refund id (idempotent: the same id and content return the
  stored refund; other content is a conflict). The total of completed and in-flight
  refunds never exceeds the paid amount. The money is reserved on the merchant's account
  first. On-us (this processor also holds the payer) the reservation is posted straight
  to the payer's account in the same transaction. Routed, a signed RefundTransfer naming
  only the original transfer goes to the router, which alone knows who paid; its answer
  posts the reservation to settlement (committed); anything else leaves the refund IN_DOUBT
  until the router's word arrives. The merchant never learns who paid, and never why the
  payer side could not take a refund (semops.protocol.refunds): only a refusal about the
  payment itself (not paid, too much, another currency) fails it. An attempt that will
  never commit for any other reason (aborted, or never recorded and expired) gives way to
  a new attempt under a new network refund id -- the old reservation is voided and the
  money reserved again under the new id, in one transaction -- sent after a growing wait,
  until the retry window ends and it fails as `refund_not_completed`. A refusal that may
  pass (the router's neutral `unavailable` when the receiver cannot take it now, a cap) is
  never taken as "not recorded": it is asked about like an unanswered attempt, which is
  safe whether or not the router kept it.
- Receiving (the payer's processor). The router forwards the RefundTransfer verbatim. The
  processor finds its own outbound transfer, checks the total against what was paid,
  records the pending credit and answers a signed RefundResult. The customer is credited
  (settlement -> customer) when the router's TransferStatus of kind refund says committed.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, check_id
from semops.core.limits import CLOCK_SKEW_MAX_S, IN_DOUBT_BATCH_MAX, TRANSFER_TTL_DEFAULT_S
from semops.core.money import Money, check_payment_amount
from semops.ledger import Reservation
from semops.processor import accounts
from semops.processor.context import (
    REFUNDS_PATH,
    Context,
    RouterVerdict,
    ask_router,
    new_network_id,
    send_to_router,
)
from semops.protocol import (
    REFUND,
    REQUEST,
    PayerTransferState,
    RefundEvent,
    RefundResult,
    RefundState,
    RefundTransfer,
    RequestEvent,
    RequestState,
    StoredOutcome,
    TransferStatus,
    attempt_due,
    decide,
    is_final_refusal,
    may_retry,
    merchant_refund_code,
)
from semops.store import processor as store
from semops.store.db import Connection

log = structlog.get_logger("semops.processor")

_REFUNDABLE = frozenset({RequestState.PAID, RequestState.PARTIALLY_REFUNDED})


def _reservation(refund: dict[str, Any]) -> Reservation:
    return Reservation(
        refund["refund_id"],
        refund["account_id"],
        Money(refund["amount_minor"], refund["currency"]),
    )


def refund_view(refund: dict[str, Any]) -> dict[str, Any]:
    return {
        "refund_id": refund["merchant_refund_id"],
        "request_id": refund["request_id"],
        "state": refund["state"],
        "amount_minor": refund["amount_minor"],
        "currency": refund["currency"],
        # Only a reason about the payment itself: nothing about the payer's side.
        "reason_code": merchant_refund_code(refund["reason_code"]),
    }


class Refunds:
    def __init__(self, context: Context) -> None:
        self.context = context

    # --- sending: the payee's processor -------------------------------------------------

    async def refund(
        self,
        payee: dict[str, Any],
        request_id: str,
        *,
        merchant_refund_id: str,
        amount_minor: int,
        reason: str | None = None,
    ) -> dict[str, Any]:
        check_id(merchant_refund_id)
        check_payment_amount(amount_minor)
        content = {"request_id": request_id, "amount_minor": amount_minor, "reason": reason}
        digest = digest_of({key: value for key, value in content.items() if value is not None})
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            # The request's lock first: a concurrent retry of this refund waits on it.
            request = await store.get_row(connection, store.requests, request_id, for_update=True)
            stored = await store.find_row(
                connection,
                store.refunds_out,
                payee_id=payee["payee_id"],
                merchant_refund_id=merchant_refund_id,
            )
            if stored is not None:
                decide(StoredOutcome(stored["content_digest"], stored), digest)
                return refund_view(stored)
            row = await self._start(connection, payee, request, amount_minor, now)
            row.update(merchant_refund_id=merchant_refund_id, content_digest=digest, reason=reason)
            await store.insert_row(connection, store.refunds_out, row)
            if row["on_us"]:
                row = await self._complete_on_us(connection, row, now)
        if not row["on_us"]:
            row = await self._send(row, now) or await self._current(payee, merchant_refund_id)
        self.context.metrics.refunds.labels("sent", row["state"]).inc()
        log.info("refund_answered", refund_id=row["refund_id"], state=row["state"])
        return refund_view(row)

    async def _start(
        self,
        connection: Connection,
        payee: dict[str, Any],
        request: dict[str, Any] | None,
        amount_minor: int,
        now: int,
    ) -> dict[str, Any]:
        """Check the bounds and reserve the refund on the payee's account (state SENT)."""
        if request is None or request["payee_id"] != payee["payee_id"]:
            raise SemopsError(E.NOT_FOUND, "no such request")
        if RequestState(request["state"]) not in _REFUNDABLE:
            raise SemopsError(E.REFUND_NOT_ALLOWED, "only a paid request can be refunded")
        request_id = request["request_id"]
        in_flight = await store.refunds_out_in_flight(connection, request_id)
        if request["refunded_minor"] + in_flight + amount_minor > request["amount_minor"]:
            raise SemopsError(E.REFUND_EXCEEDS_PAID)
        order = await store.find_row(connection, store.orders, transfer_id=request["transfer_id"])
        if order is not None:  # on-us: both accounts are locked first, in id order
            await accounts.lock_accounts(connection, [payee["account_id"], order["account_id"]])
        row = {
            "refund_id": new_network_id(IdKind.REFUND),
            "payee_id": payee["payee_id"],
            "request_id": request_id,
            "transfer_id": request["transfer_id"],
            "account_id": payee["account_id"],
            "amount_minor": amount_minor,
            "currency": request["currency"],
            "on_us": order is not None,
            "state": REFUND.next(REFUND.initial, RefundEvent.SEND).value,
            "reason_code": None,
            "expires_at": now + TRANSFER_TTL_DEFAULT_S,
            "created_at": now,
            "decided_at": None,
        }
        await accounts.reserve(
            connection, payee["account_id"], _reservation(row).amount, row["refund_id"], now
        )
        return row

    async def _complete_on_us(
        self, connection: Connection, row: dict[str, Any], now: int
    ) -> dict[str, Any]:
        """The payer is ours too: the reservation goes straight back to the payer."""
        order = await store.find_row(connection, store.orders, transfer_id=row["transfer_id"])
        assert order is not None
        await accounts.post(connection, _reservation(row), order["account_id"], now)
        return await self._completed(connection, row, now)

    async def _completed(
        self, connection: Connection, row: dict[str, Any], now: int
    ) -> dict[str, Any]:
        state = REFUND.next(RefundState(row["state"]), RefundEvent.ACCEPTED)
        await store.update_row(
            connection,
            store.refunds_out,
            row["refund_id"],
            {"state": state.value, "decided_at": now},
        )
        request = await store.get_row(
            connection, store.requests, row["request_id"], for_update=True
        )
        assert request is not None
        refunded = request["refunded_minor"] + row["amount_minor"]
        assert refunded <= request["amount_minor"], "refund bounds were checked at the start"
        event = (
            RequestEvent.REFUND_FULL
            if refunded == request["amount_minor"]
            else RequestEvent.REFUND_PARTIAL
        )
        request_state = REQUEST.next(RequestState(request["state"]), event)
        await store.update_row(
            connection,
            store.requests,
            row["request_id"],
            {"state": request_state.value, "refunded_minor": refunded},
        )
        return {**row, "state": state.value, "decided_at": now}

    async def _send(self, row: dict[str, Any], now: int) -> dict[str, Any] | None:
        """Send the attempt `row`. The message is made from the row alone (its creation is
        the attempt's start, TRANSFER_TTL_DEFAULT_S before its expiry), so sending it again
        sends the same content: the router takes a copy as the same refund, never as
        another one or a conflict."""
        message = RefundTransfer(
            refund_id=row["refund_id"],
            transfer_id=row["transfer_id"],
            payee_processor=self.context.processor_id,
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            reason=row["reason"],
            created_at=min(now, row["expires_at"] - TRANSFER_TTL_DEFAULT_S),
            expires_at=row["expires_at"],
        )
        verdict = await send_to_router(self.context, REFUNDS_PATH, self.context.sign(message))
        return await self._apply_verdict(row["refund_id"], verdict)

    async def _apply_verdict(self, refund_id: str, verdict: RouterVerdict) -> dict[str, Any] | None:
        """The router's word on one attempt; None if that attempt was replaced meanwhile."""
        status = verdict.status
        if status is not None and status.transfer_id == refund_id and status.state != "reserved":
            event = RefundEvent.ACCEPTED if status.state == "committed" else RefundEvent.REJECTED
            return await self._transition(refund_id, event, status.reason_code)
        if verdict.refused is not None and is_final_refusal(verdict.refused.code):
            return await self._transition(refund_id, RefundEvent.REJECTED, verdict.refused.code)
        # No answer, or a refusal that may pass (given even for a refund already recorded).
        return await self._transition(refund_id, RefundEvent.TIMED_OUT)

    async def _transition(
        self, refund_id: str, event: RefundEvent, reason_code: str | None = None
    ) -> dict[str, Any] | None:
        """One step of the attempt `refund_id`. REJECTED means "will never commit": it fails
        the refund only for a final reason, else it makes way for a new attempt."""
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            row = await store.get_row(connection, store.refunds_out, refund_id, for_update=True)
            if row is None:
                return None  # replaced by a new attempt: this word is about a dead one
            state = RefundState(row["state"])
            if REFUND.is_terminal(state):
                if event is not RefundEvent.TIMED_OUT:
                    REFUND.next(state, event)  # a duplicate loops; a contradiction raises
                return row
            if event is RefundEvent.ACCEPTED:
                await accounts.post_to_settlement(connection, _reservation(row), now)
                return await self._completed(connection, row, now)
            if event is RefundEvent.REJECTED and not is_final_refusal(reason_code):
                if may_retry(row["created_at"], now):
                    return await self._retry(connection, row, now)
                reason_code = E.REFUND_NOT_COMPLETED.code
            target = REFUND.next(state, event)
            values: dict[str, Any] = {"state": target.value}
            if target is RefundState.FAILED:
                await accounts.void(connection, _reservation(row), now)
                values.update(reason_code=reason_code, decided_at=now)
            await store.update_row(connection, store.refunds_out, refund_id, values)
        return {**row, **values}

    async def _retry(self, connection: Connection, row: dict[str, Any], now: int) -> dict[str, Any]:
        """The attempt will never commit: a new one, under a new id, waits to be sent. The
        money stays held: released under the old id, reserved again under the new one."""
        state = REFUND.next(RefundState(row["state"]), RefundEvent.RETRY)
        await accounts.void(connection, _reservation(row), now)
        refund_id = new_network_id(IdKind.REFUND)
        amount = _reservation(row).amount
        await accounts.reserve(connection, row["account_id"], amount, refund_id, now)
        # decided_at of a waiting attempt: when the one before it was given up.
        values = {"refund_id": refund_id, "state": state.value, "decided_at": now}
        await store.update_row(connection, store.refunds_out, row["refund_id"], values)
        log.info("refund_retry_planned", refund_id=row["refund_id"], next_refund_id=refund_id)
        return {**row, **values}

    async def _send_attempt(self, refund_id: str) -> dict[str, Any] | None:
        """Send a waiting attempt (unless another worker already did)."""
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            row = await store.get_row(connection, store.refunds_out, refund_id, for_update=True)
            if row is None or row["state"] != RefundState.REQUESTED.value:
                return None
            state = REFUND.next(RefundState.REQUESTED, RefundEvent.SEND)
            values = {"state": state.value, "expires_at": now + TRANSFER_TTL_DEFAULT_S}
            await store.update_row(connection, store.refunds_out, refund_id, values)
        return await self._send({**row, **values}, now)

    async def _current(self, payee: dict[str, Any], merchant_refund_id: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            row = await store.find_row(
                connection,
                store.refunds_out,
                payee_id=payee["payee_id"],
                merchant_refund_id=merchant_refund_id,
            )
        assert row is not None, "a refund row is replaced, never removed"
        return row

    async def resolve_in_doubt(self) -> int:
        """Send waiting attempts; ask the router about those sent without a known outcome.
        Returns how many refunds this pass finished."""
        async with self.context.database.read() as connection:
            pending = await store.unresolved_refunds(connection, IN_DOUBT_BATCH_MAX)
        decided = 0
        for row in pending:
            try:
                after = await self._resolve(row)
            except SemopsError as error:  # one refund's trouble never stops the others
                log.warning("refund_resolve_failed", refund_id=row["refund_id"], code=error.code)
                continue
            decided += after is not None and RefundState(after["state"]) in REFUND.terminal
        return decided

    async def _resolve(self, row: dict[str, Any]) -> dict[str, Any] | None:
        now = self.context.clock.now()
        if row["state"] == RefundState.REQUESTED.value:
            given_up_at = row["decided_at"] or row["created_at"]
            if not attempt_due(row["created_at"], given_up_at, now):
                return None
            return await self._send_attempt(row["refund_id"])
        verdict = await ask_router(self.context, row["refund_id"])
        if verdict.refused is not None and verdict.refused.spec is E.NOT_FOUND:
            if now < row["expires_at"]:
                # Not recorded (lost, or refused while the receiver could not take it):
                # the same attempt again, while the router would still take it.
                return await self._send(row, now)
            if now < row["expires_at"] + CLOCK_SKEW_MAX_S:
                return None  # not recorded yet, but it still could be
            # Never recorded, and now it never can be: this attempt is dead.
            return await self._transition(
                row["refund_id"], RefundEvent.REJECTED, E.TRANSFER_EXPIRED.code
            )
        if verdict.status is None or verdict.status.state == "reserved":
            return None
        return await self._apply_verdict(row["refund_id"], verdict)

    async def get_refund(self, payee: dict[str, Any], merchant_refund_id: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            row = await store.find_row(
                connection,
                store.refunds_out,
                payee_id=payee["payee_id"],
                merchant_refund_id=merchant_refund_id,
            )
        if row is None:
            raise SemopsError(E.NOT_FOUND, "no such refund")
        return refund_view(row)

    # --- receiving: the payer's processor -------------------------------------------------

    async def receive(self, token: str) -> str:
        """A RefundTransfer forwarded by the router -> a signed RefundResult (idempotent)."""
        context = self.context
        refund = (await context.directory.open(token, RefundTransfer)).message
        digest = refund.digest()
        try:
            return await self._receive(refund, digest)
        except IntegrityError:  # a concurrent duplicate stored its answer first
            async with context.database.read() as connection:
                stored = await store.get_row(connection, store.refunds_in, refund.refund_id)
            if stored is None:
                raise
            return self._stored_result(stored, digest)

    @staticmethod
    def _stored_result(stored: dict[str, Any], digest: str) -> str:
        verdict = decide(StoredOutcome(stored["content_digest"], stored), digest)
        assert verdict.outcome is not None
        return str(verdict.outcome["result"])

    async def _receive(self, refund: RefundTransfer, digest: str) -> str:
        context = self.context
        now = context.clock.now()
        async with context.database.write() as connection:
            order = await store.find_row(
                connection, store.orders, for_update=True, transfer_id=refund.transfer_id
            )
            stored = await store.get_row(connection, store.refunds_in, refund.refund_id)
            if stored is not None:
                return self._stored_result(stored, digest)
            refusal = await self._refusal(connection, refund, order)
            result = RefundResult(
                refund_id=refund.refund_id,
                transfer_id=refund.transfer_id,
                payer_processor=context.processor_id,
                outcome="accepted" if refusal is None else "rejected",
                reason_code=refusal.code if refusal is not None else None,
                decided_at=now,
            )
            token_out = context.sign(result)
            await store.insert_row(
                connection,
                store.refunds_in,
                {
                    "refund_id": refund.refund_id,
                    "transfer_id": refund.transfer_id,
                    "account_id": order["account_id"] if order is not None else None,
                    "amount_minor": refund.amount_minor,
                    "currency": refund.currency,
                    "content_digest": digest,
                    "state": "pending" if refusal is None else "rejected",
                    "reason_code": result.reason_code,
                    "result": token_out,
                    "created_at": now,
                    "decided_at": None if refusal is None else now,
                },
            )
        context.metrics.refunds.labels("received", result.outcome).inc()
        log.info(
            "refund_received",
            refund_id=refund.refund_id,
            outcome=result.outcome,
            reason_code=result.reason_code,
        )
        return token_out

    @staticmethod
    async def _refusal(
        connection: Connection, refund: RefundTransfer, order: dict[str, Any] | None
    ) -> SemopsError | None:
        if (
            order is None
            or order["on_us"]
            or order["payee_processor"] != refund.payee_processor
            or order["state"] != PayerTransferState.COMMITTED.value
        ):
            return SemopsError(E.REFUND_NOT_ALLOWED)
        if order["currency"] != refund.currency:
            return SemopsError(E.CURRENCY_MISMATCH)
        accepted = await store.refunds_in_total(connection, refund.transfer_id)
        if accepted + refund.amount_minor > order["amount_minor"]:
            return SemopsError(E.REFUND_EXCEEDS_PAID)
        return None

    # --- outcomes -----------------------------------------------------------------------

    async def apply_status(self, status: TransferStatus) -> bool:
        """The router's word on a refund, sent or received; False if it is not ours."""
        if status.state == "reserved":
            return True
        async with self.context.database.read() as connection:
            sent = await store.get_row(connection, store.refunds_out, status.transfer_id)
            received = await store.get_row(connection, store.refunds_in, status.transfer_id)
        if sent is not None:
            await self._apply_verdict(status.transfer_id, RouterVerdict(status=status))
            return True
        if received is not None:
            await self._apply_received(status)
            return True
        return False

    async def _apply_received(self, status: TransferStatus) -> None:
        now = self.context.clock.now()
        async with self.context.database.write() as connection:
            row = await store.get_row(
                connection, store.refunds_in, status.transfer_id, for_update=True
            )
            assert row is not None
            if row["state"] != "pending":
                return  # a duplicate, or the abort of a refund we rejected
            if (status.amount_minor, status.currency) != (row["amount_minor"], row["currency"]):
                raise SemopsError(E.TRANSFER_STATE_CONFLICT, "the status is for another amount")
            if status.state == "committed":
                amount = Money(row["amount_minor"], row["currency"])
                await accounts.credit_inbound(
                    connection, row["account_id"], amount, row["refund_id"], now
                )
                state = "credited"
            else:
                state = "aborted"
            await store.update_row(
                connection,
                store.refunds_in,
                row["refund_id"],
                {"state": state, "decided_at": now, "reason_code": status.reason_code},
            )
        log.info("refund_received_decided", refund_id=status.transfer_id, state=state)
