"""The wallet's operations: the shell around `semops.wallet.core`.

Each operation reads the clock and entropy it was given, calls the pure core, stores what
must survive a crash *before* talking to the processor, then talks to it and records the
answer as an ORDER event. The command line (`semops.cli.wallet`) only asks and prints.

Paying, step by step: verify the request against the directory; build and sign the order;
store it (state CREATED, with its signed token) and move it to SENT, in one durable
write; send it. A receipt that
checks out completes it; a definite refusal fails it; a timeout, a 202 or anything unclear
leaves it PENDING. A pending order is settled by re-sending the *stored* token while the
processor still accepts it (the processor answers a known order id with its stored
outcome, so this can never pay twice) and by asking `GET /v1/wallet/orders/{id}` after.
"""

from __future__ import annotations

import asyncio
import functools
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import (
    ID_RANDOM_BYTES,
    KEY_SEED_BYTES,
    WALLET_ORDER_TIMEOUT_S,
    WALLET_READ_TIMEOUT_S,
)
from semops.core.money import check_payment_amount
from semops.crypto import PrivateKey, check_pin_format, read_unverified_claims
from semops.protocol import (
    OrderEvent,
    OrderState,
    PaymentOrder,
    PaymentRequest,
    Receipt,
    parse_claims,
)
from semops.wallet.client import Answer, Transport, check_processor_url
from semops.wallet.core import (
    OrderAnswer,
    TrustedConfig,
    answer_to_order,
    build_enrolment,
    build_order,
    check_receipt,
    device_auth_header,
    make_device_key,
    order_never_executable,
    parse_payment_input,
    should_resend,
    status_to_order,
    verify_config,
    verify_request,
)
from semops.wallet.store import Enrolled, OrderRecord, WalletStore

CONFIG_PATH: Final = "/v1/wallet/config"
ENROL_PATH: Final = "/v1/wallet/enrol"
ORDERS_PATH: Final = "/v1/wallet/orders"
BALANCE_PATH: Final = "/v1/wallet/balance"
HISTORY_PATH: Final = "/v1/wallet/history"
NOTICES_PATH: Final = "/v1/wallet/notices"
REQUESTS_PATH: Final = "/v1/wallet/requests"
# Errors after which the directory is fetched again once: keys rotate, processors join.
_T = TypeVar("_T")

_STALE_DIRECTORY: Final = frozenset(
    {
        E.KEY_UNKNOWN.code,
        E.KEY_EXPIRED.code,
        E.PROCESSOR_UNKNOWN.code,
        E.MESSAGE_EXPIRED.code,
    }
)
_NO_ANSWER: Final = frozenset({E.TIMEOUT.code, E.UNAVAILABLE.code})


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    token: str
    request: PaymentRequest
    payee_processor_name: str


@dataclass(frozen=True, slots=True)
class _VerifiedConfig:
    """A configuration verified against a pinned root, and the stored text it came from."""

    text: str | None
    pinned: str | None
    trusted: TrustedConfig


@dataclass(frozen=True, slots=True)
class PaymentOutcome:
    """Where an order stands after an operation, with its checked receipt if completed."""

    order: OrderRecord
    receipt: Receipt | None = None
    note: str | None = None

    @property
    def state(self) -> OrderState:
        return self.order.state


def stored_order(record: OrderRecord) -> PaymentOrder:
    """The order the wallet itself signed and stored (its own record, so not re-verified)."""
    return parse_claims(read_unverified_claims(record.token), PaymentOrder)


def stored_request(record: OrderRecord) -> PaymentRequest:
    """The request the customer approved; it was verified before the order was made."""
    return parse_claims(read_unverified_claims(record.request_token), PaymentRequest)


class Wallet:
    """One wallet folder and the processor it is enrolled at."""

    def __init__(
        self,
        store: WalletStore,
        transport_for: Callable[[str], Transport],
        clock: Clock,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.store = store
        self._transport_for = transport_for
        self._transports: dict[str, Transport] = {}
        self.clock = clock
        self._entropy = entropy
        self._trust: _VerifiedConfig | None = None
        self._device_key_loaded: PrivateKey | None = None

    async def close(self) -> None:
        for transport in self._transports.values():
            await transport.close()
        self._transports.clear()

    def _transport(self, url: str) -> Transport:
        if url not in self._transports:
            self._transports[url] = self._transport_for(url)
        return self._transports[url]

    async def _call(
        self, url: str, method: str, path: str, *, timeout_s: float, **options: Any
    ) -> Answer:
        return await self._transport(url).request(method, path, timeout_s=timeout_s, **options)

    # --- trust --------------------------------------------------------------------------

    async def fetch_config(self, url: str) -> dict[str, Any]:
        answer = await self._call(url, "GET", CONFIG_PATH, timeout_s=WALLET_READ_TIMEOUT_S)
        document = answer.json()
        if not isinstance(document, dict):
            raise SemopsError(E.DIRECTORY_INVALID, "the processor configuration is not an object")
        return document

    async def trusted(self, *, refresh: bool = False) -> TrustedConfig:
        """The processor configuration, checked against the pinned root; fetched again when
        asked to or when the stored one no longer verifies (an expired directory).

        The verified configuration is kept in memory while the stored document and the
        pinned root are unchanged and `now` is inside the window in which every time-bound
        check of `verify_config` passed (`TrustedConfig.still_valid`): a payment would
        otherwise verify three certificates, the directory and every key in it three times.
        A document another process stored in this folder is seen at the next call."""
        enrolled = self.store.require_enrolment()
        pinned = self.store.pinned_root()
        if not refresh:
            try:
                stored = self._stored_trusted(pinned, self.clock.now())
            except SemopsError:
                stored = None  # stale: fetch it again below
            if stored is not None:
                return stored
        document = await self.fetch_config(enrolled.processor_url)
        trusted = verify_config(document, self.clock.now(), pinned_root_pem=pinned)
        if trusted.processor_id != enrolled.processor_id:
            raise SemopsError(E.DIRECTORY_INVALID, "the processor now answers as another one")
        self.store.save_processor_config(document)
        self._trust = _VerifiedConfig(self.store.processor_config_text(), pinned, trusted)
        return trusted

    def _stored_trusted(self, pinned: str | None, now: int) -> TrustedConfig | None:
        """The stored configuration verified, from memory when nothing it depends on
        changed; None if there is none, SemopsError if it does not verify."""
        text = self.store.processor_config_text()
        if text is None:
            return None
        cached = self._trust
        if (
            cached is not None
            and (cached.text, cached.pinned) == (text, pinned)
            and cached.trusted.still_valid(now)
        ):
            return cached.trusted
        self._trust = None
        trusted = verify_config(json.loads(text), now, pinned_root_pem=pinned)
        self._trust = _VerifiedConfig(text, pinned, trusted)
        return trusted

    def _device_key(self) -> PrivateKey:
        """The device key, read from its file once: the file is written once (O_EXCL) and
        never replaced, so the key cannot change under a running wallet."""
        if self._device_key_loaded is None:
            self._device_key_loaded = self.store.device_key()
        return self._device_key_loaded

    # --- enrolment ----------------------------------------------------------------------

    async def enroll(
        self, processor_url: str, activation_code: str, device_name: str, pin: str
    ) -> Enrolled:
        """Register a new device key with an activation code and set the PIN."""
        check_pin_format(pin)
        url = check_processor_url(processor_url)
        if self.store.enrolment() is not None:
            raise SemopsError(
                E.FORBIDDEN, "this wallet is already enrolled; use another --wallet-dir"
            )
        document = await self.fetch_config(url)
        trusted = verify_config(document, self.clock.now(), pinned_root_pem=None)
        if not self.store.has_device_key():
            # Stored before it is registered: a lost answer must not lose the key.
            self.store.save_device_key(make_device_key(self._entropy(KEY_SEED_BYTES)))
        device_key = self._device_key()
        enrolment = build_enrolment(
            device_key=device_key,
            activation_code=activation_code,
            device_name=device_name,
            pin=pin,
            processor_enc_key=trusted.encryption_key,
            now=self.clock.now(),
        )
        answer = await self._call(
            url, "POST", ENROL_PATH, timeout_s=WALLET_READ_TIMEOUT_S, jose=enrolment.token
        )
        result = answer.json()
        enrolled = _enrolled_from(result, url, trusted, device_name, self.clock.now())
        if enrolled.device_kid != device_key.kid:
            raise SemopsError(E.DEVICE_UNKNOWN, "the processor registered another device key")
        self.store.save_processor_config(document)
        self.store.pin_root(trusted.root_certificate)
        self.store.save_enrolment(enrolled)
        return enrolled

    # --- requests and orders ------------------------------------------------------------

    async def verify(self, text: str) -> VerifiedRequest:
        """The payment request in a token, link or QR text, verified against the directory."""
        token = parse_payment_input(text)
        trusted = await self.trusted()
        try:
            request = verify_request(token, trusted, self.clock.now())
        except SemopsError as error:
            if error.code not in _STALE_DIRECTORY:
                raise
            trusted = await self.trusted(refresh=True)
            request = verify_request(token, trusted, self.clock.now())
        return VerifiedRequest(token, request, trusted.display_name_of(request.payee_processor))

    def existing_order(self, request_id: str) -> OrderRecord | None:
        """The order that already pays this request (completed or in flight), if any.

        A failed order does not count: the customer may try again (a new order id)."""
        for record in self.store.orders_for_request(request_id):
            if record.state not in (OrderState.FAILED, OrderState.ABANDONED):
                return record
        return None

    async def pay(self, verified: VerifiedRequest, pin: str) -> PaymentOutcome:
        """Make, store and send a new order for a verified request."""
        check_pin_format(pin)
        if self.existing_order(verified.request.request_id) is not None:
            raise SemopsError(E.REQUEST_ALREADY_PAID, "this wallet already has an order for it")
        enrolled = self.store.require_enrolment()
        trusted = await self.trusted()
        now = self.clock.now()
        signed = build_order(
            request_token=verified.token,
            request=verified.request,
            processor_id=trusted.processor_id,
            payer_account=enrolled.account_id,
            processor_enc_key=trusted.encryption_key,
            device_key=self._device_key(),
            pin=pin,
            order_entropy=self._entropy(ID_RANDOM_BYTES),
            now=now,
        )
        request = verified.request
        record = await self._stored(
            self.store.add_order,
            OrderRecord(
                order_id=signed.order_id,
                request_id=request.request_id,
                request_token=verified.token,
                token=signed.token,
                state=OrderState.CREATED,
                payee_processor=request.payee_processor,
                payee_id=request.payee_id,
                payee_name=request.payee_name,
                amount_minor=request.amount_minor,
                currency=request.currency,
                reference=request.reference,
                created_at=now,
                expires_at=signed.order.expires_at,
                updated_at=now,
            ),
            sending_at=now,
        )
        return await self._send(record, marked_sent=True)

    async def resume(self, record: OrderRecord) -> PaymentOutcome:
        """Carry an unfinished order forward: send it, re-send it, or ask about it."""
        if record.state is OrderState.CREATED:
            return await self._send(record)
        if record.state is OrderState.SENT:
            # Sent, then the wallet stopped before the answer: the outcome is unknown.
            record = await self._stored(
                self.store.apply, record.order_id, OrderEvent.NO_ANSWER, self.clock.now()
            )
        if record.state is OrderState.PENDING:
            if should_resend(record.expires_at, self.clock.now()):
                return await self._send(record)
            return await self.status(record.order_id)
        return await self._finished(record)

    async def _send(self, record: OrderRecord, *, marked_sent: bool = False) -> PaymentOutcome:
        enrolled = self.store.require_enrolment()
        if not marked_sent:
            record = await self._stored(
                self.store.apply, record.order_id, OrderEvent.SEND, self.clock.now()
            )
        try:
            answer = await self._call(
                enrolled.processor_url,
                "POST",
                ORDERS_PATH,
                timeout_s=WALLET_ORDER_TIMEOUT_S,
                jose=record.token,
            )
        except SemopsError as error:
            if error.code not in _NO_ANSWER:
                raise
            return await self._record(record, OrderAnswer(OrderEvent.NO_ANSWER))
        return await self._record(
            record, answer_to_order(answer.status, answer.content_type, answer.body)
        )

    async def status(self, order_id: str) -> PaymentOutcome:
        """Ask the processor where an unfinished order stands."""
        record = self.store.require_order(order_id)
        if record.is_terminal:
            return await self._finished(record)
        enrolled = self.store.require_enrolment()
        path = f"{ORDERS_PATH}/{record.order_id}"
        try:
            answer = await self._call(
                enrolled.processor_url,
                "GET",
                path,
                timeout_s=WALLET_READ_TIMEOUT_S,
                headers=self._auth("GET", path),
            )
        except SemopsError as error:
            if error.code not in _NO_ANSWER:
                raise
            return await self._record(record, OrderAnswer(OrderEvent.NO_ANSWER))
        if answer.status == 404:
            return await self._unknown_to_processor(record)
        if answer.status != 200:
            return await self._record(record, OrderAnswer(OrderEvent.NO_ANSWER))
        try:
            document = answer.json()
        except SemopsError:
            document = None
        return await self._record(record, status_to_order(document))

    async def _unknown_to_processor(self, record: OrderRecord) -> PaymentOutcome:
        now = self.clock.now()
        if order_never_executable(record.expires_at, now):
            return await self._record(
                record,
                OrderAnswer(
                    OrderEvent.DECLINED,
                    error_code=E.MESSAGE_EXPIRED.code,
                    error_detail="the processor never received this order and it has expired",
                ),
            )
        if should_resend(record.expires_at, now):
            if record.state is OrderState.SENT:
                record = await self._stored(
                    self.store.apply, record.order_id, OrderEvent.NO_ANSWER, now
                )
            return await self._send(record)
        return await self._record(record, OrderAnswer(OrderEvent.NO_ANSWER))

    async def _checked_receipt(self, record: OrderRecord, token: str, now: int) -> Receipt:
        """The receipt checked against the directory; fetched again once when it names a
        key the stored one does not know (the processor rotated its signing key)."""
        order, request = stored_order(record), stored_request(record)
        try:
            return check_receipt(token, await self.trusted(), now, order=order, request=request)
        except SemopsError as error:
            if error.code not in _STALE_DIRECTORY:
                raise
        trusted = await self.trusted(refresh=True)
        return check_receipt(token, trusted, now, order=order, request=request)

    async def _record(self, record: OrderRecord, answer: OrderAnswer) -> PaymentOutcome:
        """Check a receipt, then store the event the answer means."""
        now = self.clock.now()
        if answer.event is OrderEvent.RECEIPT:
            assert answer.receipt is not None
            try:
                receipt = await self._checked_receipt(record, answer.receipt, now)
            except SemopsError as error:
                # A receipt that does not prove this payment: the money may still have
                # moved, so the order stays pending and is asked about again.
                updated = await self._apply_no_answer(record, now)
                return PaymentOutcome(
                    updated, note=f"the receipt was refused: {error.detail} ({error.code})"
                )
            updated = await self._stored(
                self.store.apply, record.order_id, OrderEvent.RECEIPT, now, receipt=answer.receipt
            )
            return PaymentOutcome(updated, receipt)
        if answer.event is OrderEvent.DECLINED:
            updated = await self._stored(
                self.store.apply,
                record.order_id,
                OrderEvent.DECLINED,
                now,
                error_code=answer.error_code,
                error_detail=answer.error_detail,
            )
            return PaymentOutcome(updated)
        return PaymentOutcome(await self._apply_no_answer(record, now))

    async def _apply_no_answer(self, record: OrderRecord, now: int) -> OrderRecord:
        current = self.store.require_order(record.order_id)
        if current.state in (OrderState.SENT, OrderState.PENDING):
            return await self._stored(self.store.apply, record.order_id, OrderEvent.NO_ANSWER, now)
        return current

    @staticmethod
    async def _stored(write: Callable[..., _T], *args: Any, **options: Any) -> _T:
        """A durable write to the wallet's store, run in a worker thread: its fsync does
        not stop the event loop (and every other wallet sharing it, as in `semops bench`)."""
        return await asyncio.to_thread(functools.partial(write, *args, **options))

    async def _finished(self, record: OrderRecord) -> PaymentOutcome:
        if record.state is OrderState.COMPLETED and record.receipt is not None:
            receipt = parse_claims(read_unverified_claims(record.receipt), Receipt)
            return PaymentOutcome(record, receipt)
        return PaymentOutcome(record)

    # --- account reads ------------------------------------------------------------------

    def _auth(self, method: str, path: str, body: bytes | None = None) -> dict[str, str]:
        enrolled = self.store.require_enrolment()
        header = device_auth_header(
            self._device_key(),
            account_id=enrolled.account_id,
            method=method,
            path=path,
            now=self.clock.now(),
            auth_entropy=self._entropy(ID_RANDOM_BYTES),
            body=body,
        )
        return {"Authorization": header}

    async def _read(self, path: str) -> dict[str, Any]:
        enrolled = self.store.require_enrolment()
        answer = await self._call(
            enrolled.processor_url,
            "GET",
            path,
            timeout_s=WALLET_READ_TIMEOUT_S,
            headers=self._auth("GET", path),
        )
        document = answer.json()
        if not isinstance(document, dict):
            raise SemopsError(E.MALFORMED, "the processor's answer is not an object")
        return document

    async def balance(self) -> dict[str, Any]:
        return await self._read(BALANCE_PATH)

    async def history(self) -> dict[str, Any]:
        return await self._read(HISTORY_PATH)

    async def notices(self) -> dict[str, Any]:
        """What happened to the account's credentials (codes issued, devices added or
        revoked, PIN reset), newest first: a leaked activation code shows up here."""
        return await self._read(NOTICES_PATH)

    # --- being paid (P2P) ---------------------------------------------------------------

    async def request_payment(
        self, amount_minor: int, currency: str, reference: str | None = None
    ) -> dict[str, Any]:
        """Ask the own processor for a payment request naming this person as the payee.

        The answer's `token` (and `link`) is what another wallet pays; it is checked here
        to be signed by our processor for exactly this amount before it is handed out.
        The device signature covers the exact body bytes (aiohttp sends `json.dumps`)."""
        check_payment_amount(amount_minor)
        enrolled = self.store.require_enrolment()
        # A client-made key: a retry after a lost answer gets the same request back.
        document: dict[str, Any] = {
            "amount_minor": amount_minor,
            "currency": currency,
            "idempotency_key": make_id(IdKind.MESSAGE, self._entropy(ID_RANDOM_BYTES)),
        }
        if reference is not None:
            document["reference"] = reference
        body = json.dumps(document).encode("utf-8")
        answer = await self._call(
            enrolled.processor_url,
            "POST",
            REQUESTS_PATH,
            timeout_s=WALLET_READ_TIMEOUT_S,
            json_body=document,
            headers=self._auth("POST", REQUESTS_PATH, body),
        )
        created = answer.json()
        if not isinstance(created, dict) or not isinstance(created.get("token"), str):
            raise SemopsError(E.MALFORMED, "the processor's request answer has no token")
        request = verify_request(created["token"], await self.trusted(), self.clock.now())
        if (
            request.payee_processor != enrolled.processor_id
            or (request.amount_minor, request.currency) != (amount_minor, currency)
            or request.reference != reference
        ):
            raise SemopsError(E.ORDER_MISMATCH, "the processor's request is not the one asked for")
        return created


def _enrolled_from(
    result: Any, url: str, trusted: TrustedConfig, device_name: str, now: int
) -> Enrolled:
    if not isinstance(result, dict):
        raise SemopsError(E.MALFORMED, "the enrolment answer is not an object")
    values = {name: result.get(name) for name in ("account_id", "device_kid", "currency")}
    if not all(isinstance(value, str) and value for value in values.values()):
        raise SemopsError(E.MALFORMED, "the enrolment answer is incomplete")
    customer_name = result.get("customer_name")
    return Enrolled(
        processor_url=url,
        processor_id=trusted.processor_id,
        account_id=str(values["account_id"]),
        device_kid=str(values["device_kid"]),
        device_name=device_name,
        customer_name=customer_name if isinstance(customer_name, str) else "",
        currency=str(values["currency"]),
        enrolled_at=now,
    )


__all__ = ["PaymentOutcome", "VerifiedRequest", "Wallet", "stored_order", "stored_request"]
