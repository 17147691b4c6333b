"""The payee side of a processor: payment requests, routed prepares, their outcomes.

Theory of operation (DESIGN.md §3, §5):

- A payee (a merchant or a person, see payees.py) asks for a request. It gets a fresh
  random fulfilment kept here; the signed PaymentRequest carries only its SHA-256, the
  condition. Requests are idempotent on the payee's key.
- A RoutedPrepare, signed by the router, is opened (the sealed TransferDetails must name
  the same transfer) and matched against an OPEN, unexpired request of the same payee,
  amount, currency and condition. A match records the inbound transfer ACCEPTED and the
  request RESERVED in one transaction and answers the fulfilment; anything else answers a
  signed rejection with the reason code. Both answers are stored, so the same prepare
  again gets the same answer. Only the one-time payer reference is stored: nothing here
  can name the payer or the payer's processor.
- The router's TransferStatus finishes it: committed credits the payee (settlement ->
  payee account), marks the request PAID and queues the signed PaymentNotice (the
  processor's irrevocable guarantee) for the merchant's webhook; aborted hands the
  request back as OPEN. Every transition goes through the REQUEST and PAYEE_TRANSFER tables.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.clock import Clock
from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, check_id
from semops.core.limits import (
    CLOCK_SKEW_MAX_S,
    FULFILMENT_BYTES,
    IN_DOUBT_BATCH_MAX,
    REQUEST_TTL_DEFAULT_S,
    REQUEST_TTL_MAX_S,
    REQUEST_TTL_MIN_S,
)
from semops.core.money import Money, check_payment_amount
from semops.crypto import condition_for, make_fulfilment
from semops.processor import accounts
from semops.processor.context import Context, ask_router, build, new_network_id
from semops.protocol import (
    PAYEE_TRANSFER,
    REQUEST,
    PayeeTransferEvent,
    PayeeTransferState,
    PaymentNotice,
    PaymentRequest,
    RequestEvent,
    RequestState,
    RoutedPrepare,
    TransferDetails,
    TransferFulfil,
    TransferReject,
    TransferStatus,
    check_fresh,
    decide,
    unseal,
)
from semops.protocol.replay import StoredOutcome
from semops.store import processor as store
from semops.store.db import Connection

log = structlog.get_logger("semops.processor")

PAYMENT_LINK_PREFIX: Final = "semops:pay?r="
# Where an inbound transfer may be when the router's commit arrives.
_COMMITTABLE: Final = frozenset(
    source.value
    for (source, event), target in PAYEE_TRANSFER.transitions.items()
    if event is PayeeTransferEvent.COMMITTED and target is not source
)
_PAID_STATES: Final = frozenset(
    {RequestState.PAID, RequestState.PARTIALLY_REFUNDED, RequestState.REFUNDED}
)


def shown_state(request: dict[str, Any], now: int) -> str:
    """The state a payee sees: an OPEN request past its expiry shows as expired."""
    if request["state"] == RequestState.OPEN.value and now >= request["expires_at"]:
        return RequestState.EXPIRED.value
    return str(request["state"])


def check_payable(
    request: dict[str, Any] | None,
    *,
    payee_id: str,
    amount_minor: int,
    currency: str,
    condition: str,
    now: int,
) -> dict[str, Any]:
    """The stored request a transfer may reserve, or the reason it may not (a fixed order)."""
    if request is None or request["payee_id"] != payee_id:
        raise SemopsError(E.NOT_FOUND, "no such payment request at the payee's processor")
    state = RequestState(request["state"])
    if state in _PAID_STATES:
        raise SemopsError(E.REQUEST_ALREADY_PAID)
    if state is RequestState.EXPIRED or (
        state is RequestState.OPEN and now >= request["expires_at"]
    ):
        raise SemopsError(E.REQUEST_EXPIRED)
    if state is not RequestState.OPEN:
        raise SemopsError(E.REQUEST_NOT_PAYABLE, f"the request is {state.value}")
    if (
        request["amount_minor"] != amount_minor
        or request["currency"] != currency
        or request["condition"] != condition
    ):
        raise SemopsError(E.ORDER_MISMATCH, "the transfer does not match the request")
    return request


def _check_routed_payable(
    request: dict[str, Any] | None, routed: RoutedPrepare, details: TransferDetails, now: int
) -> None:
    """`check_payable` for the request a routed prepare names in its sealed details."""
    check_payable(
        request,
        payee_id=details.payee_id,
        amount_minor=routed.amount_minor,
        currency=routed.currency,
        condition=routed.condition,
        now=now,
    )


async def _reserve_request(
    connection: Connection,
    request: dict[str, Any],
    reserved: RequestState,
    routed: RoutedPrepare,
    *,
    expected_state: str | None,
) -> bool:
    """The request held by `routed` (only if still in `expected_state`, when given)."""
    return await store.update_row(
        connection,
        store.requests,
        request["request_id"],
        {"state": reserved.value, "transfer_id": routed.transfer_id},
        expected_state=expected_state,
    )


class _Changed(Exception):
    """A row changed between the read and the write: the write is undone."""


class Payee:
    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def clock(self) -> Clock:
        return self.context.clock

    # --- requests ---------------------------------------------------------------------------

    async def create_request(
        self,
        payee: dict[str, Any],
        *,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        reference: str | None = None,
        ttl_s: int | None = None,
        basket_digest: str | None = None,
    ) -> dict[str, Any]:
        check_id(idempotency_key)
        check_payment_amount(amount_minor)
        if currency != payee["currency"]:
            raise SemopsError(E.CURRENCY_MISMATCH, f"this payee is paid in {payee['currency']}")
        ttl = REQUEST_TTL_DEFAULT_S if ttl_s is None else ttl_s
        if not REQUEST_TTL_MIN_S <= ttl <= REQUEST_TTL_MAX_S:
            raise SemopsError(E.VALIDATION_FAILED, "ttl_s is out of range")
        content = {
            "amount_minor": amount_minor,
            "currency": currency,
            "reference": reference,
            "ttl_s": ttl,
            "basket_digest": basket_digest,
        }
        content_digest = digest_of(
            {key: value for key, value in content.items() if value is not None}
        )
        stored = await self._stored_request(payee["payee_id"], idempotency_key)
        if stored is not None:
            decide(StoredOutcome(stored["content_digest"], stored), content_digest)
            return self.request_view(stored)
        now = self.clock.now()
        fulfilment = make_fulfilment(secrets.token_bytes(FULFILMENT_BYTES))
        message = build(
            PaymentRequest,
            request_id=new_network_id(IdKind.REQUEST),
            payee_processor=self.context.processor_id,
            payee_id=payee["payee_id"],
            payee_name=payee["display_name"],
            amount_minor=amount_minor,
            currency=currency,
            reference=reference,
            created_at=now,
            expires_at=now + ttl,
            condition=condition_for(fulfilment),
            basket_digest=basket_digest,
        )
        row = {
            "request_id": message.request_id,
            "payee_id": payee["payee_id"],
            "idempotency_key": idempotency_key,
            "content_digest": content_digest,
            "amount_minor": amount_minor,
            "currency": currency,
            "reference": reference,
            "basket_digest": basket_digest,
            "condition": message.condition,
            "fulfilment": fulfilment,
            "token": self.context.sign(message),
            "state": REQUEST.initial.value,
            "created_at": now,
            "expires_at": message.expires_at,
            "transfer_id": None,
            "paid_at": None,
            "refunded_minor": 0,
            "notice": None,
        }
        try:
            async with self.context.database.write() as connection:
                await store.insert_row(connection, store.requests, row)
        except IntegrityError:  # a concurrent retry with the same key was first
            raced = await self._stored_request(payee["payee_id"], idempotency_key)
            if raced is None:
                raise
            decide(StoredOutcome(raced["content_digest"], raced), content_digest)
            return self.request_view(raced)
        log.info("request_created", request_id=message.request_id, amount_minor=amount_minor)
        return self.request_view(row)

    async def _stored_request(self, payee_id: str, idempotency_key: str) -> dict[str, Any] | None:
        async with self.context.database.read() as connection:
            return await store.find_row(
                connection, store.requests, payee_id=payee_id, idempotency_key=idempotency_key
            )

    def request_view(self, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "request_id": request["request_id"],
            "state": shown_state(request, self.clock.now()),
            "amount_minor": request["amount_minor"],
            "currency": request["currency"],
            "reference": request["reference"],
            "expires_at": request["expires_at"],
            "token": request["token"],
            "link": PAYMENT_LINK_PREFIX + request["token"],
            "paid_at": request["paid_at"],
            "transfer_id": request["transfer_id"],
            "notice": request["notice"],
            "refunded_minor": request["refunded_minor"],
        }

    async def get_request(self, payee: dict[str, Any], request_id: str) -> dict[str, Any]:
        async with self.context.database.read() as connection:
            request = await store.get_row(connection, store.requests, request_id)
        if request is None or request["payee_id"] != payee["payee_id"]:
            raise SemopsError(E.NOT_FOUND, "no such request")
        return self.request_view(request)

    def paid_notice(self, request: dict[str, Any], transfer_id: str, now: int) -> str:
        """The signed PaymentNotice for a request paid by `transfer_id`: the processor's
        irrevocable guarantee to the payee."""
        notice = PaymentNotice(
            request_id=request["request_id"],
            transfer_id=transfer_id,
            payee_processor=self.context.processor_id,
            payee_id=request["payee_id"],
            amount_minor=request["amount_minor"],
            currency=request["currency"],
            reference=request["reference"],
            paid_at=now,
            guarantee="irrevocable",
        )
        return self.context.sign(notice)

    async def mark_paid(
        self,
        connection: Connection,
        request: dict[str, Any],
        payee: dict[str, Any],
        transfer_id: str,
        notice: str,
        now: int,
        *,
        stored_state: str | None,
        queued: list[dict[str, Any]],
    ) -> bool:
        """RESERVED -> PAID for the transfer holding it, with its signed notice queued for
        the payee's webhook (added to `queued`). `stored_state`: the state the row must
        still be in (False, nothing written, if it is not); None where the caller holds the
        row locked or wrote it in this transaction. The caller hands `queued` to
        `context.notices_committed` once its transaction has committed."""
        assert payee["payee_id"] == request["payee_id"]
        state = REQUEST.next(RequestState(request["state"]), RequestEvent.TRANSFER_COMMITTED)
        if not await store.update_row(
            connection,
            store.requests,
            request["request_id"],
            {"state": state.value, "transfer_id": transfer_id, "paid_at": now, "notice": notice},
            expected_state=stored_state,
        ):
            return False
        if payee["webhook_url"]:
            queued.append(
                await store.enqueue(
                    connection, payee["webhook_url"], request["request_id"], notice, now
                )
            )
        log.info("request_paid", request_id=request["request_id"], transfer_id=transfer_id)
        return True

    async def settle_request(
        self,
        connection: Connection,
        request: dict[str, Any],
        payee: dict[str, Any],
        transfer_id: str,
        now: int,
        *,
        queued: list[dict[str, Any]],
    ) -> None:
        """RESERVED -> PAID, for a request locked (or written) in this transaction."""
        notice = self.paid_notice(request, transfer_id, now)
        paid = await self.mark_paid(
            connection, request, payee, transfer_id, notice, now, stored_state=None, queued=queued
        )
        assert paid, "the request's row exists"

    # --- routed prepares ----------------------------------------------------------------------

    @staticmethod
    def _prepare_digest(routed: RoutedPrepare) -> str:
        # The router may re-sign a prepare (new created_at); what identifies it is the rest.
        claims = routed.to_claims()
        return digest_of(
            {
                key: claims[key]
                for key in (
                    "transfer_id",
                    "payee_processor",
                    "amount_minor",
                    "currency",
                    "condition",
                    "sealed",
                )
            }
        )

    async def routed_prepare(self, token: str) -> str:
        """Answer a router-signed RoutedPrepare with a signed fulfil or reject (idempotent)."""
        context = self.context
        routed = await context.directory.open_from_router(
            token, RoutedPrepare, check_freshness=False
        )
        if routed.payee_processor != context.processor_id:
            raise SemopsError(E.FORBIDDEN, "the transfer is for another processor")
        digest = self._prepare_digest(routed)
        now = self.clock.now()
        details: TransferDetails | None = None
        refusal: SemopsError | None = None
        try:
            check_fresh(
                routed.created_at, routed.expires_at, now, expired=SemopsError(E.TRANSFER_EXPIRED)
            )
            details = unseal(routed.sealed, TransferDetails, context.keys.enc_key)
            if details.transfer_id != routed.transfer_id:
                raise SemopsError(E.ORDER_MISMATCH, "the sealed details belong to another transfer")
        except SemopsError as error:
            if error.spec is E.MESSAGE_NOT_YET_VALID:
                raise
            details, refusal = None, error
        # A copy of a prepare answered before is found by the transfer id's key when this
        # answer is stored (IntegrityError: answered from the stored one), not by a read
        # of every prepare first.
        try:
            if details is not None and refusal is None:
                answer = await self._accept_as_read(routed, details, digest, now)
                if answer is not None:
                    return answer
            return await self._decide_prepare(routed, digest, details, refusal, now)
        except IntegrityError:  # answered before, or by a concurrent copy
            answer = await self._stored_answer_of(routed.transfer_id, digest)
            if answer is None:
                raise
            return answer

    async def _stored_answer_of(self, transfer_id: str, digest: str) -> str | None:
        async with self.context.database.read() as connection:
            stored = await store.get_row(connection, store.inbound_transfers, transfer_id)
        return self._stored_answer(stored, digest) if stored is not None else None

    async def _accept_as_read(
        self, routed: RoutedPrepare, details: TransferDetails, digest: str, now: int
    ) -> str | None:
        """The common case: the request read without a lock, the fulfil signed outside the
        write, then one write that reserves the request only if it is still as read and
        stores the answer. None when the request is not payable as read or changed
        meanwhile: the caller decides under the request's lock."""
        async with self.context.database.read() as connection:
            request = await store.get_row(connection, store.requests, details.request_id)
        if request is not None and request["transfer_id"] == routed.transfer_id:
            return await self._stored_answer_of(routed.transfer_id, digest)  # answered before
        try:
            _check_routed_payable(request, routed, details, now)
        except SemopsError:
            return None
        assert request is not None
        answer, row, reserved = self._acceptance(routed, details, request, digest, now)
        async with self.context.database.write() as connection:
            if not await _reserve_request(
                connection, request, reserved, routed, expected_state=request["state"]
            ):
                return None
            await store.insert_row(connection, store.inbound_transfers, row)
        self._accepted(routed, request)
        return answer

    @staticmethod
    def _stored_answer(stored: dict[str, Any], digest: str) -> str:
        verdict = decide(StoredOutcome(stored["content_digest"], str(stored["answer"])), digest)
        assert verdict.outcome is not None
        return verdict.outcome

    async def _decide_prepare(
        self,
        routed: RoutedPrepare,
        digest: str,
        details: TransferDetails | None,
        refusal: SemopsError | None,
        now: int,
    ) -> str:
        async with self.context.database.write() as connection:
            request = None
            if details is not None:  # the request's lock first: a duplicate waits on it
                request = await store.get_row(
                    connection, store.requests, details.request_id, for_update=True
                )
            # A copy decided meanwhile is found by the transfer id's key when this answer is
            # stored (IntegrityError: the caller answers from the stored one), not by a read.
            if details is not None and refusal is None:
                try:
                    _check_routed_payable(request, routed, details, now)
                except SemopsError as error:
                    refusal = error
            if refusal is None:
                assert request is not None and details is not None
                answer = await self._accept(connection, routed, details, request, digest, now)
            else:
                answer = await self._reject(connection, routed, details, refusal, digest, now)
        return answer

    def _inbound_row(
        self, routed: RoutedPrepare, details: TransferDetails | None, digest: str, now: int
    ) -> dict[str, Any]:
        return {
            "transfer_id": routed.transfer_id,
            "content_digest": digest,
            "request_id": details.request_id if details else None,
            "payee_id": details.payee_id if details else None,
            "amount_minor": routed.amount_minor,
            "currency": routed.currency,
            "condition": routed.condition,
            "payer_ref": details.payer_ref if details else None,
            "expires_at": routed.expires_at,
            "created_at": now,
            "decided_at": None,
        }

    def _acceptance(
        self,
        routed: RoutedPrepare,
        details: TransferDetails,
        request: dict[str, Any],
        digest: str,
        now: int,
    ) -> tuple[str, dict[str, Any], RequestState]:
        """What accepting `routed` for `request` writes: the signed fulfil (the answer), the
        inbound row, and the request's state after."""
        reserved = REQUEST.next(RequestState(request["state"]), RequestEvent.TRANSFER_RESERVED)
        state = PAYEE_TRANSFER.next(PAYEE_TRANSFER.initial, PayeeTransferEvent.ACCEPT)
        fulfil = TransferFulfil(
            transfer_id=routed.transfer_id,
            payee_processor=self.context.processor_id,
            fulfilment=request["fulfilment"],
            fulfilled_at=now,
        )
        answer = self.context.sign(fulfil)
        row = self._inbound_row(routed, details, digest, now)
        row.update(state=state.value, reason_code=None, answer=answer)
        return answer, row, reserved

    def _accepted(self, routed: RoutedPrepare, request: dict[str, Any]) -> None:
        self.context.metrics.inbound.labels("accepted").inc()
        log.info(
            "transfer_accepted", transfer_id=routed.transfer_id, request_id=request["request_id"]
        )

    async def _accept(
        self,
        connection: Connection,
        routed: RoutedPrepare,
        details: TransferDetails,
        request: dict[str, Any],
        digest: str,
        now: int,
    ) -> str:
        answer, row, reserved = self._acceptance(routed, details, request, digest, now)
        await store.insert_row(connection, store.inbound_transfers, row)
        await _reserve_request(connection, request, reserved, routed, expected_state=None)
        self._accepted(routed, request)
        return answer

    async def _reject(
        self,
        connection: Connection,
        routed: RoutedPrepare,
        details: TransferDetails | None,
        refusal: SemopsError,
        digest: str,
        now: int,
    ) -> str:
        state = PAYEE_TRANSFER.next(PAYEE_TRANSFER.initial, PayeeTransferEvent.REJECT)
        reject = TransferReject(
            transfer_id=routed.transfer_id,
            payee_processor=self.context.processor_id,
            reason_code=refusal.code,
            rejected_at=now,
        )
        answer = self.context.sign(reject)
        row = self._inbound_row(routed, details, digest, now)
        row.update(state=state.value, reason_code=refusal.code, answer=answer, decided_at=now)
        await store.insert_row(connection, store.inbound_transfers, row)
        self.context.metrics.inbound.labels("rejected").inc()
        log.info("transfer_rejected", transfer_id=routed.transfer_id, reason_code=refusal.code)
        return answer

    # --- outcomes -----------------------------------------------------------------------------

    async def apply_status(self, status: TransferStatus) -> bool:
        """The router's word on an inbound payment; False if we never saw the transfer."""
        if status.state == "reserved":
            return True  # nothing decided yet
        if status.state == "committed" and await self._commit_as_read(status):
            return True
        return await self._apply_locked(status)

    async def _commit_as_read(self, status: TransferStatus) -> bool:
        """The common case: an accepted transfer committed. Its request and payee are read
        with it (no lock), the notice signed outside the write, and one write moves the
        transfer and the request on only if both are still as read, then credits the
        payee (the shared settlement row last, locked for the shortest time). False, with
        nothing written, for anything else: `_apply_locked` decides it."""
        now = self.clock.now()
        async with self.context.database.read() as connection:
            found = await store.inbound_with_request(connection, status.transfer_id)
        if found is None:
            return False
        inbound, request, payee = found
        if (
            inbound["state"] not in _COMMITTABLE
            or request is None
            or payee is None
            or request["state"] != RequestState.RESERVED.value
            or (status.amount_minor, status.currency)
            != (inbound["amount_minor"], inbound["currency"])
        ):
            return False
        transfer_id = status.transfer_id
        notice = self.paid_notice(request, transfer_id, now)
        queued: list[dict[str, Any]] = []
        try:
            async with self.context.database.write() as connection:
                if not await store.update_row(
                    connection,
                    store.inbound_transfers,
                    transfer_id,
                    {"state": PayeeTransferState.COMMITTED.value, "decided_at": now},
                    expected_state=inbound["state"],
                ):
                    return False
                if not await self.mark_paid(
                    connection,
                    request,
                    payee,
                    transfer_id,
                    notice,
                    now,
                    stored_state=request["state"],
                    queued=queued,
                ):
                    raise _Changed  # undo the transfer's move with the transaction
                amount = Money(inbound["amount_minor"], inbound["currency"])
                await accounts.credit_inbound(
                    connection, payee["account_id"], amount, transfer_id, now
                )
        except _Changed:
            return False
        self.context.notices_committed(queued)
        log.info("inbound_decided", transfer_id=transfer_id, state="committed")
        return True

    async def _apply_locked(self, status: TransferStatus) -> bool:
        """Any outcome, decided on the rows locked: duplicates, aborts, conflicts."""
        event = (
            PayeeTransferEvent.COMMITTED
            if status.state == "committed"
            else PayeeTransferEvent.ABORTED
        )
        now = self.clock.now()
        queued: list[dict[str, Any]] = []
        async with self.context.database.write() as connection:
            inbound = await store.get_row(
                connection, store.inbound_transfers, status.transfer_id, for_update=True
            )
            if inbound is None:
                return False
            state = PayeeTransferState(inbound["state"])
            target = PAYEE_TRANSFER.next(state, event)
            if target is state:
                return True  # a duplicate, or the abort of a transfer we rejected
            if (status.amount_minor, status.currency) != (
                inbound["amount_minor"],
                inbound["currency"],
            ):
                raise SemopsError(E.TRANSFER_STATE_CONFLICT, "the status is for another amount")
            await store.update_row(
                connection,
                store.inbound_transfers,
                status.transfer_id,
                {"state": target.value, "decided_at": now},
            )
            request = await store.get_row(
                connection, store.requests, inbound["request_id"], for_update=True
            )
            assert request is not None, "an accepted transfer holds a request"
            if target is PayeeTransferState.COMMITTED:
                await self._credit(connection, inbound, request, now, queued)
            else:
                reopened = REQUEST.next(
                    RequestState(request["state"]), RequestEvent.TRANSFER_ABORTED
                )
                await store.update_row(
                    connection,
                    store.requests,
                    request["request_id"],
                    {"state": reopened.value, "transfer_id": None},
                )
        self.context.notices_committed(queued)
        log.info("inbound_decided", transfer_id=status.transfer_id, state=target.value)
        return True

    async def _credit(
        self,
        connection: Connection,
        inbound: dict[str, Any],
        request: dict[str, Any],
        now: int,
        queued: list[dict[str, Any]],
    ) -> None:
        payee = await store.get_row(connection, store.payees, request["payee_id"])
        assert payee is not None
        amount = Money(inbound["amount_minor"], inbound["currency"])
        await accounts.credit_inbound(
            connection, payee["account_id"], amount, inbound["transfer_id"], now
        )
        await self.settle_request(
            connection, request, payee, inbound["transfer_id"], now, queued=queued
        )

    async def resolve_stale(self) -> int:
        """Ask the router about accepted transfers whose outcome never arrived (a backstop:
        the router's outbox re-delivers it anyway)."""
        now = self.clock.now()
        async with self.context.database.read() as connection:
            stale = await store.stale_inbound(
                connection, now - CLOCK_SKEW_MAX_S, IN_DOUBT_BATCH_MAX
            )
        resolved = 0
        for transfer_id in stale:
            verdict = await ask_router(self.context, transfer_id)
            if verdict.status is not None and verdict.status.state != "reserved":
                await self.apply_status(verdict.status)
                resolved += 1
        return resolved
