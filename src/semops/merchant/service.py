"""The merchant backend: orders, their payment requests, notices, refunds, and the poller.

A shell around `semops.merchant.core`: decode -> decide -> store -> call the processor.

- Creating an order stores it (`creating`, with a fresh idempotency key) in one
  transaction, then asks the processor for a signed request with that key. A lost answer
  leaves the order `creating`; a retry by the caller (same `Idempotency-Key`) or by the
  poller re-sends the same key, and the processor answers with the same request.
- A notice (webhook or poll) is verified with the processor's signing key, fetched from
  `GET /v1/merchant/keys` and trusted only if it chains to the trust anchor the backend
  was set up with (`semops.merchant.trust`: the scheme root, or a pinned key). The signed
  request of each order is checked under the same key before the order opens. A notice
  must match the order's request exactly; then the order is `paid`, once, in one
  transaction. A tampered notice, one under a key that does not chain, one from another
  signer or one that does not match changes nothing.
- Refunds take the caller's Idempotency-Key (required: a retry without one could not be
  told from a second refund). Each is stored (`requested`, with a refund id made here,
  the key and the digest of what was asked) before the processor is asked; the same key
  and body find it again, and its refund id, for ever; another body under the key is
  `idempotency_conflict`. An unclear answer is asked again with the same refund id by the
  poller. A failed refund shows only a reason about the payment itself
  (`semops.merchant.core.shown_refund_code`), never one about the payer's side.
- The poller is the fallback for a webhook that never came: bounded batches, at most
  one look per order per interval, longest-waiting first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.clock import Clock
from semops.core.encoding import b64url_encode, digest_of
from semops.core.errors import E, ErrorSpec, SemopsError, lookup
from semops.core.ids import IdKind, check_id, make_id
from semops.core.limits import (
    CLOCK_SKEW_MAX_S,
    ID_RANDOM_BYTES,
    MERCHANT_CALL_TIMEOUT_S,
    MERCHANT_POLL_BATCH_MAX,
    MERCHANT_POLL_INTERVAL_S,
    REQUEST_TTL_DEFAULT_S,
)
from semops.core.money import format_amount
from semops.crypto import KeyRing, read_unverified_claims
from semops.merchant.core import (
    MERCHANT_ORDER,
    PAID_STATES,
    MerchantOrderEvent,
    MerchantOrderState,
    OrderInput,
    RefundInput,
    check_notice_matches,
    checked_order,
    parse_input,
    processor_state_event,
    refund_amount,
    refund_event,
    shown_refund_code,
)
from semops.merchant.events import OrderChanges
from semops.merchant.listing import order_summary, page_cursor, parse_cursor
from semops.merchant.processor_api import (
    KEYS_PATH,
    REQUESTS_PATH,
    ProcessorAnswer,
    ProcessorTransport,
)
from semops.merchant.trust import ProcessorTrust, trusted_keys
from semops.protocol import PaymentNotice, PaymentRequest, open_signed, parse_claims
from semops.store import merchant as store
from semops.store.db import Database, sqlite_url

log = structlog.get_logger("semops.merchant")

PAY_LINK_PREFIX: Final = "semops:pay?r="
# The processor's key set is fetched again on an unknown kid (rotation), but not more often
# than this: notices arrive unauthenticated, so a flood of bogus kids must not become a
# flood of calls to the processor (one every ten seconds is nothing), while a rotation or
# a key document refused once (an attacker on the link) is looked at again soon.
KEYS_REFRESH_MIN_S: Final = 10
# The trusted keys are checked against a fresh directory at least this often, so a key the
# router revokes stops marking orders paid here within five minutes (one small call).
KEYS_MAX_AGE_S: Final = 5 * 60
# What a directory that checked out says about a trusted key: revoked; stop trusting it.
_REVOKED: Final = frozenset({E.KEY_REVOKED.code, E.CERTIFICATE_REVOKED.code})
_NO_ANSWER: Final = frozenset({E.TIMEOUT.code, E.UNAVAILABLE.code})
_S = MerchantOrderState


@dataclass(frozen=True, slots=True)
class MerchantSettings:
    """Everything `semops merchant serve` needs; defaults suit the embedded network."""

    merchant_id: str
    data_dir: Path
    processor_url: str
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8600
    # The processor's admin gives the merchant its API key; it lives in a 0600 file.
    api_key_file: Path | None = None
    # Where customers reach the checkout page (the default is this service's own address).
    public_url: str | None = None
    # The API token (a 0600 file): the order API, the order list and the shop pages need
    # it. Only `development` on a loopback address may run without one (semops.merchant.main).
    api_token_file: Path | None = None
    request_ttl_s: int = REQUEST_TTL_DEFAULT_S
    poll_interval_s: float = MERCHANT_POLL_INTERVAL_S
    # The trust anchor for the processor's notice key, set up out of band: the scheme root
    # certificate with the processor's id, and/or the key's RFC 7638 thumbprint.
    root_ca_file: Path | None = None
    processor_id: str | None = None
    processor_key_pin: str | None = None
    # Open order API and pages, allowed only on loopback: a developer's own machine.
    development: bool = False

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir / f"{self.merchant_id}.db")

    @property
    def api_key_path(self) -> Path:
        return self.api_key_file or self.data_dir / "processor-api-key"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


@dataclass
class _KeyCache:
    ring: KeyRing = field(default_factory=KeyRing)
    fetched_at: int | None = None


def _request_of(token: str) -> PaymentRequest:
    """A request token this service verified before storing it."""
    return parse_claims(read_unverified_claims(token), PaymentRequest)


class MerchantService:
    def __init__(
        self,
        settings: MerchantSettings,
        database: Database,
        transport: ProcessorTransport,
        api_key: str,
        clock: Clock,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        *,
        trust: ProcessorTrust,
    ) -> None:
        self.settings = settings
        self.database = database
        self.transport = transport
        self.trust = trust
        self.clock = clock
        self._api_key = api_key
        self._entropy = entropy
        self._keys = _KeyCache()
        self._keys_fetching = asyncio.Lock()
        # Rung after every committed change of an order: wakes its checkout page's stream.
        self.changes = OrderChanges()

    async def close(self) -> None:
        await self.transport.close()

    # --- calls to the processor ---------------------------------------------------------

    async def _call(self, method: str, path: str, json_body: Any = None) -> ProcessorAnswer:
        return await self.transport.request(
            method,
            path,
            timeout_s=MERCHANT_CALL_TIMEOUT_S,
            json_body=json_body,
            headers={"Authorization": f"Bearer {self._api_key}"},
        )

    async def _ring(self, *, refresh: bool = False) -> KeyRing:
        """The processor's keys that chain to our trust anchor (fetched when unknown, when
        older than KEYS_MAX_AGE_S, and on an unknown kid at most every KEYS_REFRESH_MIN_S).
        A key document that does not check out changes nothing (the keys trusted before
        stay trusted), except a directory that checks out and says the key is revoked."""
        now = self.clock.now()
        fetched = self._keys.fetched_at
        stale = (
            fetched is None
            or now - fetched >= KEYS_MAX_AGE_S
            or (refresh and now - fetched >= KEYS_REFRESH_MIN_S)
        )
        if not stale:
            return self._keys.ring
        async with self._keys_fetching:  # one fetch at a time: the others wait for it
            if self._keys.fetched_at != fetched:  # fetched (or tried) while we waited
                return self._keys.ring
            return await self._fetch_ring(now)

    async def _fetch_ring(self, now: int) -> KeyRing:
        """Fetch and check the key document; the time of the try is kept whatever comes of
        it (one fetch per interval, even failed), once it is over, so that callers arriving
        meanwhile wait for it rather than take the keys known before."""
        ring = self._keys.ring
        try:
            answer = await self._call("GET", KEYS_PATH)
            try:
                ring = KeyRing(trusted_keys(answer.json(), self.trust, now))
            except SemopsError as error:
                log.error("processor_key_untrusted", code=error.code, detail=error.detail)
                if error.code in _REVOKED:  # the router's own word: nothing is trusted now
                    ring = KeyRing()
                raise
        finally:
            self._keys = _KeyCache(ring, now)
        return ring

    async def _verified(self, token: str, kind: type[Any]) -> Any:
        """A message our processor signed under a key we trust, or the reason it is not."""
        now = self.clock.now()
        try:
            return open_signed(token, kind, await self._ring(), now).message
        except SemopsError as error:
            if error.code != E.KEY_UNKNOWN.code:
                raise
        return open_signed(token, kind, await self._ring(refresh=True), now).message

    async def verify_notice(self, token: str) -> PaymentNotice:
        """A notice signed by our processor's trusted key, or the reason it is refused."""
        notice: PaymentNotice = await self._verified(token, PaymentNotice)
        return notice

    # --- orders -------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{b64url_encode(self._entropy(ID_RANDOM_BYTES))}"

    async def create_order(
        self, document: Any, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Store the order, then ask the processor for its signed request."""
        wanted = checked_order(parse_input(OrderInput, document))
        order = parse_input(OrderInput, document)
        key = check_id(idempotency_key) if idempotency_key is not None else self._new_id("ik")
        try:
            row, fresh = await self._stored_order(order, wanted, key)
        except IntegrityError:  # the same key, stored by a concurrent call a moment ago
            row, fresh = await self._stored_order(order, wanted, key)
        if row["state"] == _S.CREATING.value:
            row = await self._create_at_processor(row, forget_if_refused=fresh)
            if row["state"] == _S.CREATING.value:
                raise SemopsError(
                    E.UNAVAILABLE,
                    "the processor did not answer; retry with the same Idempotency-Key",
                    order_id=row["order_id"],
                    idempotency_key=key,
                )
        return await self.view(row)

    async def _stored_order(
        self, order: OrderInput, wanted: dict[str, Any], key: str
    ) -> tuple[dict[str, Any], bool]:
        """(the order under this key, whether this call stored it): found, or stored now."""
        now = self.clock.now()
        fresh = False
        async with self.database.write() as connection:
            row = await store.get_order_by_key(connection, key)
            if row is not None and row["content_digest"] != wanted["content_digest"]:
                raise SemopsError(E.IDEMPOTENCY_CONFLICT)
            if row is None:
                fresh = True
                row = {
                    "order_id": self._new_id("mo"),
                    "idempotency_key": key,
                    "content_digest": wanted["content_digest"],
                    "request_id": None,
                    "token": None,
                    "amount_minor": wanted["amount_minor"],
                    "currency": order.currency,
                    "reference": order.reference,
                    "basket": (
                        json.dumps([line.model_dump() for line in order.basket])
                        if order.basket
                        else None
                    ),
                    "basket_digest": wanted["basket_digest"],
                    "ttl_s": order.ttl_s or self.settings.request_ttl_s,
                    "state": MERCHANT_ORDER.initial.value,
                    "expires_at": None,
                    "paid_at": None,
                    "transfer_id": None,
                    "notice": None,
                    "refunded_minor": 0,
                    "error_code": None,
                    "created_at": now,
                    "updated_at": now,
                    "polled_at": now,
                }
                await store.insert_order(connection, row)
        return row, fresh

    async def _create_at_processor(
        self, row: dict[str, Any], *, forget_if_refused: bool = False
    ) -> dict[str, Any]:
        """Ask the processor for the order's signed request. A definite refusal fails the
        order, or, when it answers the very call that stored the order, removes it again:
        refused input changes no state (the order was stored first only so that a lost
        answer can be asked about with the same key)."""
        body = {
            "amount_minor": row["amount_minor"],
            "currency": row["currency"],
            "ttl_s": row["ttl_s"],
            "idempotency_key": row["idempotency_key"],
        }
        for optional in ("reference", "basket_digest"):
            if row[optional] is not None:
                body[optional] = row[optional]
        try:
            answer = await self._call("POST", REQUESTS_PATH, body)
        except SemopsError as error:
            if error.code not in _NO_ANSWER:
                raise
            return row
        if answer.ok:
            return await self._opened(row, answer.json())
        if 400 <= answer.status < 500 and answer.status not in (408, 429):
            refusal = _problem_of(answer)
            if forget_if_refused:
                async with self.database.write() as connection:
                    forgotten = await store.forget_unanswered_order(connection, row["order_id"])
                if forgotten:
                    raise refusal
            await self._move(row, MerchantOrderEvent.REFUSED, {"error_code": refusal.code})
            raise refusal
        return row

    async def _opened(self, row: dict[str, Any], document: Any) -> dict[str, Any]:
        """Record the processor's signed request, after checking it is what we asked for."""
        if not isinstance(document, dict) or not isinstance(document.get("token"), str):
            raise SemopsError(E.MALFORMED, "the processor's request answer has no token")
        # The token is what the customer's wallet will pay: signed by our processor under a
        # key we trust, and for us, or a swapped answer would send the money elsewhere.
        request: PaymentRequest = await self._verified(document["token"], PaymentRequest)
        if request.payee_id != self.settings.merchant_id:
            raise SemopsError(E.ORDER_MISMATCH, "the processor's request is for another payee")
        asked = (row["amount_minor"], row["currency"], row["reference"], row["basket_digest"])
        got = (request.amount_minor, request.currency, request.reference, request.basket_digest)
        if asked != got:
            raise SemopsError(E.ORDER_MISMATCH, "the processor's request is not the one asked for")
        return await self._move(
            row,
            MerchantOrderEvent.CREATED,
            {
                "request_id": request.request_id,
                "token": document["token"],
                "expires_at": request.expires_at,
            },
        )

    async def _move(
        self, row: dict[str, Any], event: MerchantOrderEvent, values: dict[str, Any]
    ) -> dict[str, Any]:
        """One MERCHANT_ORDER step from the state the caller read, on the order locked for
        this transaction (PostgreSQL; SQLite's writer lock serialises it); if another call
        moved the order meanwhile, its outcome stands and is returned unchanged."""
        async with self.database.write() as connection:
            current = await store.get_order(connection, row["order_id"], for_update=True)
            assert current is not None
            if current["state"] != row["state"]:
                # Moved by a concurrent call since the caller read it (the same order created
                # twice at once, a notice racing the poller): that call's outcome stands.
                return current
            target = MERCHANT_ORDER.next(MerchantOrderState(current["state"]), event)
            changes = {**values, "state": target.value, "updated_at": self.clock.now()}
            moved = await store.update_order(
                connection, current["order_id"], current["state"], changes
            )
            assert moved, "the order is locked: nobody moved it meanwhile"
            updated = await store.get_order(connection, current["order_id"])
        assert updated is not None
        self.changes.notify(row["order_id"])
        log.info("order_moved", order_id=row["order_id"], state=target.value)
        return updated

    async def order(self, order_id: str) -> dict[str, Any]:
        async with self.database.read() as connection:
            row = await store.get_order(connection, order_id)
        if row is None:
            raise SemopsError(E.NOT_FOUND, "no such order")
        return row

    async def view(self, row: dict[str, Any]) -> dict[str, Any]:
        """The order as the merchant API shows it: nothing about the payer (there is none)."""
        async with self.database.read() as connection:
            refund_rows = await store.refunds_of(connection, row["order_id"])
        return order_view(row, self.settings.base_url, refund_rows)

    async def list_orders(self, before: str | None, limit: int) -> dict[str, Any]:
        """A page of orders, newest first, and the cursor of the next page (or None)."""
        cursor = parse_cursor(before) if before is not None else None
        async with self.database.read() as connection:
            rows = await store.list_orders(connection, cursor, limit)
            pending = await store.refund_totals(
                connection, [row["order_id"] for row in rows], store.REFUND_UNSETTLED
            )
        return {
            "orders": [order_summary(row, pending.get(row["order_id"], 0)) for row in rows],
            "next": page_cursor(rows[-1]) if rows and len(rows) >= limit else None,
        }

    # --- notices ------------------------------------------------------------------------

    async def accept_notice(self, token: str) -> tuple[bool, dict[str, Any]]:
        """(matched, answer) for a notice; refused notices raise and change nothing."""
        notice = await self.verify_notice(token)
        now = self.clock.now()
        async with self.database.write() as connection:
            row = await store.get_order_by_request(connection, notice.request_id)
            if row is None or row["token"] is None:
                if notice.payee_id != self.settings.merchant_id:
                    # Our processor signs every merchant's notices: another merchant's is
                    # not ours to keep, not even unmatched (it tells of their payments).
                    raise SemopsError(E.FORBIDDEN, "the notice is for another payee")
                await store.save_notice(
                    connection,
                    {
                        "transfer_id": notice.transfer_id,
                        "request_id": notice.request_id,
                        "token": token,
                        "order_id": None,
                        "received_at": now,
                    },
                )
                log.info("notice_unmatched", request_id=notice.request_id)
                return False, {"request_id": notice.request_id, "state": "unmatched"}
            check_notice_matches(notice, _request_of(row["token"]))
            if row["transfer_id"] not in (None, notice.transfer_id):
                raise SemopsError(E.REQUEST_ALREADY_PAID, "this order was paid by another transfer")
            state = MerchantOrderState(row["state"])
            target = MERCHANT_ORDER.next(state, MerchantOrderEvent.PAID)
            await store.save_notice(
                connection,
                {
                    "transfer_id": notice.transfer_id,
                    "request_id": notice.request_id,
                    "token": token,
                    "order_id": row["order_id"],
                    "received_at": now,
                },
            )
            if row["transfer_id"] is None:
                await store.update_order(
                    connection,
                    row["order_id"],
                    row["state"],
                    {
                        "state": target.value,
                        "paid_at": notice.paid_at,
                        "transfer_id": notice.transfer_id,
                        "notice": token,
                        "updated_at": now,
                    },
                )
                log.info(
                    "order_paid",
                    order_id=row["order_id"],
                    request_id=notice.request_id,
                    transfer_id=notice.transfer_id,
                    amount_minor=notice.amount_minor,
                    currency=notice.currency,
                )
            updated = await store.get_order(connection, row["order_id"])
        assert updated is not None
        self.changes.notify(row["order_id"])
        return True, await self.view(updated)

    # --- refunds ------------------------------------------------------------------------

    async def refund(
        self, order_id: str, document: Any, idempotency_key: str | None
    ) -> dict[str, Any]:
        """Refund (part of) a paid order, once per Idempotency-Key: the same key and body
        give the same refund (asked of the processor again while it is on its way)."""
        wanted = parse_input(RefundInput, document)
        if idempotency_key is None:
            raise SemopsError(E.IDEMPOTENCY_KEY_REQUIRED)
        key = check_id(idempotency_key)
        digest = digest_of({"order_id": order_id, **wanted.model_dump(exclude_none=True)})
        try:
            refund, row = await self._stored_refund(order_id, wanted, key, digest)
        except IntegrityError:  # the same key, stored by a concurrent call a moment ago
            refund, row = await self._stored_refund(order_id, wanted, key, digest)
        if refund["state"] in store.REFUND_UNSETTLED:
            refund = await self._send_refund(refund, row)
        if refund["state"] == "failed":
            raise SemopsError(
                lookup_code(refund["error_code"]),
                "the refund was refused",
                refund_id=refund["refund_id"],
            )
        return {
            "refund": _refund_view(refund),
            "order": await self.view(await self.order(order_id)),
        }

    async def _stored_refund(
        self, order_id: str, wanted: RefundInput, key: str, digest: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the refund under this key, its order): found, or checked and stored now."""
        now = self.clock.now()
        async with self.database.write() as connection:
            # The order's lock first: refunds of one order are decided one after the other,
            # and the key is looked up under it, so a concurrent call with the same key
            # (PostgreSQL) finds the refund the first one stored instead of refunding again.
            locked = await store.get_order(connection, order_id, for_update=True)
            found = await store.get_refund_by_key(connection, key)
            if found is not None:
                if found["content_digest"] != digest:
                    raise SemopsError(E.IDEMPOTENCY_CONFLICT)
                row = await store.get_order(connection, found["order_id"])
                assert row is not None
                return found, row
            row = locked
            if row is None:
                raise SemopsError(E.NOT_FOUND, "no such order")
            state = MerchantOrderState(row["state"])
            if state not in PAID_STATES or state is _S.REFUNDED:
                raise SemopsError(E.REFUND_NOT_ALLOWED, f"the order is {state.value}")
            in_flight = await store.refund_total(connection, order_id, store.REFUND_UNSETTLED)
            amount_minor = refund_amount(
                wanted.amount,
                row["currency"],
                paid_minor=row["amount_minor"],
                committed_minor=row["refunded_minor"] + in_flight,
            )
            refund = {
                "refund_id": make_id(IdKind.REFUND, self._entropy(ID_RANDOM_BYTES)),
                "order_id": order_id,
                "amount_minor": amount_minor,
                "reason": wanted.reason,
                "state": "requested",
                "error_code": None,
                "created_at": now,
                "updated_at": now,
                "idempotency_key": key,
                "content_digest": digest,
            }
            await store.insert_refund(connection, refund)
        log.info("refund_stored", order_id=order_id, refund_id=refund["refund_id"])
        return refund, row

    async def _send_refund(self, refund: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        body = {"refund_id": refund["refund_id"], "amount_minor": refund["amount_minor"]}
        if refund["reason"] is not None:
            body["reason"] = refund["reason"]
        path = f"{REQUESTS_PATH}/{row['request_id']}/refunds"
        try:
            answer = await self._call("POST", path, body)
        except SemopsError as error:
            if error.code not in _NO_ANSWER:
                raise
            return await self._settle_refund(refund["refund_id"], "in_doubt", None)
        if answer.ok:
            document = answer.json()
            state = document.get("state") if isinstance(document, dict) else None
            reason = document.get("reason_code") if isinstance(document, dict) else None
            code = shown_refund_code(reason if isinstance(reason, str) else None)
            return await self._settle_refund(refund["refund_id"], str(state), code)
        if 400 <= answer.status < 500 and answer.status not in (408, 429):
            return await self._settle_refund(
                refund["refund_id"], "failed", shown_refund_code(_problem_of(answer).code)
            )
        return await self._settle_refund(refund["refund_id"], "in_doubt", None)

    async def _settle_refund(
        self, refund_id: str, reported: str, error_code: str | None
    ) -> dict[str, Any]:
        """Record the processor's word on a refund; count a completed one exactly once."""
        state = reported if reported in ("completed", "failed") else "in_doubt"
        if reported in ("requested", "sent"):
            state = "sent"
        if state == "failed" and error_code is None:
            error_code = E.REFUND_NOT_COMPLETED.code
        if state != "failed":
            error_code = None
        now = self.clock.now()
        async with self.database.write() as connection:
            # Locked: two calls carrying the processor's same answer (a retry with the same
            # key, the poller) settle it one after the other, and the second finds it done.
            refund = await store.get_refund(connection, refund_id, for_update=True)
            assert refund is not None
            if refund["state"] not in store.REFUND_UNSETTLED:
                return refund  # already settled: a repeated answer changes nothing
            await store.update_refund(
                connection, refund_id, {"state": state, "error_code": error_code, "updated_at": now}
            )
            if state == "completed":
                # Locked too: two refunds of one order completing at once add up, in turn.
                row = await store.get_order(connection, refund["order_id"], for_update=True)
                assert row is not None
                refunded = row["refunded_minor"] + refund["amount_minor"]
                event = refund_event(row["amount_minor"], refunded)
                assert event is not None
                target = MERCHANT_ORDER.next(MerchantOrderState(row["state"]), event)
                await store.update_order(
                    connection,
                    row["order_id"],
                    row["state"],
                    {"state": target.value, "refunded_minor": refunded, "updated_at": now},
                )
            updated = await store.get_refund(connection, refund_id)
        assert updated is not None
        self.changes.notify(updated["order_id"])
        return updated

    # --- the fallback poller ------------------------------------------------------------

    async def poll_once(self) -> int:
        """Look once at each order waiting for news (bounded); return how many were seen."""
        now = self.clock.now()
        async with self.database.write() as connection:
            rows = await store.orders_to_poll(
                connection,
                (_S.CREATING.value, _S.OPEN.value),
                now - int(self.settings.poll_interval_s) + 1,
                MERCHANT_POLL_BATCH_MAX,
            )
            for row in rows:
                await store.mark_polled(connection, row["order_id"], now)
        for row in rows:
            try:
                await self._poll(row, now)
            except SemopsError as error:
                log.info("poll_failed", order_id=row["order_id"], code=error.code)
        return len(rows)

    async def _poll(self, row: dict[str, Any], now: int) -> None:
        state = MerchantOrderState(row["state"])
        if state is _S.CREATING:
            if now >= row["created_at"] + row["ttl_s"]:
                await self._move(row, MerchantOrderEvent.EXPIRE, {})
            else:
                await self._create_at_processor(row)
            return
        if state is _S.OPEN:
            await self._poll_request(row, now)
        async with self.database.read() as connection:
            refunds = await store.refunds_of(connection, row["order_id"])
        for refund in refunds:
            if refund["state"] in store.REFUND_UNSETTLED:
                await self._send_refund(refund, row)

    async def _poll_request(self, row: dict[str, Any], now: int) -> None:
        try:
            answer = await self._call("GET", f"{REQUESTS_PATH}/{row['request_id']}")
            document = answer.json()
        except SemopsError as error:
            if error.code not in _NO_ANSWER:
                raise
            document = None
        if isinstance(document, dict) and isinstance(document.get("notice"), str):
            await self.accept_notice(document["notice"])
            return
        processor_says = document.get("state") if isinstance(document, dict) else None
        expired_here = now >= (row["expires_at"] or 0) + CLOCK_SKEW_MAX_S
        if processor_state_event(processor_says) is MerchantOrderEvent.EXPIRE or (
            document is None and expired_here
        ):
            await self._move(row, MerchantOrderEvent.EXPIRE, {})

    async def run_background(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set; an error in one pass never ends the loop."""
        while not stop.is_set():
            try:
                await self.poll_once()
            except Exception as error:
                log.error("poll_pass_failed", error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.poll_interval_s)


def lookup_code(code: str | None) -> ErrorSpec:
    """The registry entry of a stored error code (a refused refund's)."""
    try:
        return lookup(shown_refund_code(code) or "")
    except KeyError:
        return E.REFUND_NOT_COMPLETED


def _problem_of(answer: ProcessorAnswer) -> SemopsError:
    try:
        answer.json()
    except SemopsError as error:
        return error
    return SemopsError(E.MALFORMED, "the processor answered an error without a problem")


def _refund_view(refund: dict[str, Any]) -> dict[str, Any]:
    return {
        "refund_id": refund["refund_id"],
        "amount_minor": refund["amount_minor"],
        "state": refund["state"],
        "error_code": shown_refund_code(refund["error_code"]),
        "created_at": refund["created_at"],
        "idempotency_key": refund.get("idempotency_key"),
    }


def order_view(
    row: dict[str, Any], base_url: str, refund_rows: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    order_id = row["order_id"]
    token = row["token"]
    return {
        "order_id": order_id,
        "request_id": row["request_id"],
        "state": row["state"],
        "amount": format_amount(row["amount_minor"], row["currency"]),
        "amount_minor": row["amount_minor"],
        "currency": row["currency"],
        "reference": row["reference"],
        "basket": json.loads(row["basket"]) if row["basket"] else None,
        "basket_digest": row["basket_digest"],
        "token": token,
        "link": PAY_LINK_PREFIX + token if token else None,
        "qr_svg": f"/v1/orders/{order_id}/qr.svg",
        "qr_png": f"/v1/orders/{order_id}/qr.png",
        "checkout_url": f"{base_url}/checkout/{order_id}",
        "expires_at": row["expires_at"],
        "paid_at": row["paid_at"],
        "transfer_id": row["transfer_id"],
        "notice": row["notice"],
        "refunded_minor": row["refunded_minor"],
        "refunds": [_refund_view(refund) for refund in refund_rows or []],
        "idempotency_key": row["idempotency_key"],
    }


# What anyone holding an order id may read (a paying customer has it from the checkout
# link): what the checkout page shows -- the state, the amount, reference and basket, the
# request to pay and its expiry, and once paid the processor's signed guarantee. Not the
# refunds, the idempotency key, the request id or anything else of the shop's own records.
PUBLIC_ORDER_FIELDS: Final = (
    "order_id",
    "state",
    "amount",
    "amount_minor",
    "currency",
    "reference",
    "basket",
    "token",
    "link",
    "qr_svg",
    "qr_png",
    "checkout_url",
    "expires_at",
    "paid_at",
    "transfer_id",
    "notice",
)


def public_order_view(view: dict[str, Any]) -> dict[str, Any]:
    """The part of an order view that needs no credential (see PUBLIC_ORDER_FIELDS)."""
    return {name: view[name] for name in PUBLIC_ORDER_FIELDS}


__all__ = [
    "PAY_LINK_PREFIX",
    "PUBLIC_ORDER_FIELDS",
    "MerchantService",
    "MerchantSettings",
    "order_view",
    "public_order_view",
]
