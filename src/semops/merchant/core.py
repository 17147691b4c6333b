"""The merchant backend's decisions, pure: no I/O, no clock, no randomness.

Theory of operation (DESIGN.md §3, §5):

- An order is the merchant's view of one payment request. It is stored `creating` with a
  client-made idempotency key before the processor is asked, becomes `open` when the
  processor answers with a signed request, and `paid` only on a PaymentNotice that the
  merchant's own processor signed and that matches the order exactly (request id, amount,
  currency, payee, reference). The notice is the guarantee; there is nothing in it about
  the payer, and the merchant stores nothing about the payer because it learns nothing.
- MERCHANT_ORDER below is the table of allowed moves. A notice is the processor's word
  and outranks the merchant's own clock, so an order the merchant already marked
  `expired` still becomes `paid` when a valid notice arrives (the payment happened before
  the request expired, at the processor). A re-delivered notice is a self-loop.
- The basket stays with the merchant: only `basket_digest_of` travels, so the processors
  see a digest (DESIGN.md §5 "#") and the wallet can check a basket shown to it.
- Refunds never exceed what was paid minus what is refunded or still being refunded. A
  refused one shows a reason about the refund call or the payment itself, never one about
  the payer's side (DESIGN.md §5: the merchant never learns the payer's processor, not even
  that it is suspended): `shown_refund_code`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError, lookup
from semops.core.limits import (
    AMOUNT_MAX_MINOR,
    AMOUNT_TEXT_MAX_CHARS,
    BASKET_LINES_MAX,
    BASKET_NAME_MAX_CHARS,
    BASKET_QUANTITY_MAX,
    REASON_TEXT_MAX_CHARS,
    REQUEST_TTL_MAX_S,
    REQUEST_TTL_MIN_S,
)
from semops.core.money import check_payment_amount, parse_amount
from semops.protocol import MERCHANT_REFUND_CODES, PaymentNotice, PaymentRequest, StateMachine
from semops.protocol.messages import ONE_LINE_TEXT, Reference

# Printable text on one line, no bidirectional controls: the protocol's rule for names
# and references, so a basket line cannot display as something else either.
_ONE_LINE: Final = ONE_LINE_TEXT


class MerchantOrderState(StrEnum):
    CREATING = "creating"  # stored with its idempotency key; the processor not yet answered
    OPEN = "open"  # a signed request exists and can be paid
    PAID = "paid"  # a valid notice arrived: the processor guarantees the payment
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    FAILED = "failed"  # the processor refused to create the request


class MerchantOrderEvent(StrEnum):
    CREATED = "created"
    REFUSED = "refused"
    PAID = "paid"
    EXPIRE = "expire"
    REFUND_PARTIAL = "refund_partial"
    REFUND_FULL = "refund_full"


_S, _E = MerchantOrderState, MerchantOrderEvent
MERCHANT_ORDER: Final = StateMachine[MerchantOrderState, MerchantOrderEvent](
    "merchant_order",
    {
        (_S.CREATING, _E.CREATED): _S.OPEN,
        (_S.CREATING, _E.REFUSED): _S.FAILED,
        # The processor never answered while the request could have been paid.
        (_S.CREATING, _E.EXPIRE): _S.EXPIRED,
        (_S.OPEN, _E.PAID): _S.PAID,
        (_S.OPEN, _E.EXPIRE): _S.EXPIRED,
        # The notice outranks the merchant's clock: it was paid in time at the processor.
        (_S.EXPIRED, _E.PAID): _S.PAID,
        # Duplicates: the processor's outbox re-delivers; the poller finds it paid too.
        (_S.PAID, _E.PAID): _S.PAID,
        (_S.PARTIALLY_REFUNDED, _E.PAID): _S.PARTIALLY_REFUNDED,
        (_S.REFUNDED, _E.PAID): _S.REFUNDED,
        (_S.PAID, _E.REFUND_PARTIAL): _S.PARTIALLY_REFUNDED,
        (_S.PAID, _E.REFUND_FULL): _S.REFUNDED,
        # Progress, not a duplicate: each partial refund is another refund.
        (_S.PARTIALLY_REFUNDED, _E.REFUND_PARTIAL): _S.PARTIALLY_REFUNDED,
        (_S.PARTIALLY_REFUNDED, _E.REFUND_FULL): _S.REFUNDED,
    },
    initial=_S.CREATING,
    terminal={_S.REFUNDED, _S.FAILED},
)
PAID_STATES: Final = frozenset({_S.PAID, _S.PARTIALLY_REFUNDED, _S.REFUNDED})


# --- what a caller may ask for ------------------------------------------------------------

LineName = Annotated[
    str, StringConstraints(min_length=1, max_length=BASKET_NAME_MAX_CHARS, pattern=_ONE_LINE)
]


class BasketLine(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", hide_input_in_errors=True)

    name: LineName
    quantity: Annotated[int, Field(ge=1, le=BASKET_QUANTITY_MAX)]
    unit_amount_minor: Annotated[int, Field(ge=0, le=AMOUNT_MAX_MINOR)]


class OrderInput(BaseModel):
    """The body of `POST /v1/orders`. The amount is text ("12.50"), never a float."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", hide_input_in_errors=True)

    amount: Annotated[str, StringConstraints(min_length=1, max_length=AMOUNT_TEXT_MAX_CHARS)]
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    # The protocol's Reference: one line a payer reads as what it is (UTS #39), checked
    # here so a bad reference is refused before anything is stored or asked of the processor.
    reference: Reference | None = None
    # A JSON list (strict mode would want a tuple); the lines themselves stay strict.
    basket: (
        Annotated[tuple[BasketLine, ...], Field(max_length=BASKET_LINES_MAX, strict=False)] | None
    ) = None
    ttl_s: Annotated[int, Field(ge=REQUEST_TTL_MIN_S, le=REQUEST_TTL_MAX_S)] | None = None


class RefundInput(BaseModel):
    """The body of `POST /v1/orders/{id}/refunds`; no amount means the rest of it."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", hide_input_in_errors=True)

    amount: (
        Annotated[str, StringConstraints(min_length=1, max_length=AMOUNT_TEXT_MAX_CHARS)] | None
    ) = None
    reason: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=REASON_TEXT_MAX_CHARS, pattern=_ONE_LINE),
        ]
        | None
    ) = None


def parse_input(model: type[BaseModel], document: Any) -> Any:
    """A strict model from a JSON body; errors name the field, never echo the value."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        fields = [
            {
                "field": ".".join(str(part) for part in item["loc"]) or "(body)",
                "problem": item["type"],
            }
            for item in error.errors(include_input=False, include_url=False)
        ][:20]
        detail = "; ".join(f"{item['field']}: {item['problem']}" for item in fields[:3])
        raise SemopsError(E.VALIDATION_FAILED, detail, errors=fields) from None


def basket_digest_of(currency: str, basket: tuple[BasketLine, ...]) -> str:
    """The digest of a basket that travels in the request instead of the basket."""
    return digest_of(
        {"currency": currency, "lines": [line.model_dump(mode="json") for line in basket]}
    )


def checked_order(order: OrderInput) -> dict[str, Any]:
    """The order in minor units, its basket checked against the amount, and the digests."""
    amount_minor = check_payment_amount(parse_amount(order.amount, order.currency))
    basket_digest = None
    if order.basket is not None:
        if not order.basket:
            raise SemopsError(E.VALIDATION_FAILED, "basket: an empty basket is left out")
        total = sum(line.quantity * line.unit_amount_minor for line in order.basket)
        if total != amount_minor:
            raise SemopsError(E.AMOUNT_INVALID, "the basket's lines do not add up to the amount")
        basket_digest = basket_digest_of(order.currency, order.basket)
    content = {
        "amount_minor": amount_minor,
        "currency": order.currency,
        "reference": order.reference,
        "basket_digest": basket_digest,
        "ttl_s": order.ttl_s,
    }
    return {**content, "content_digest": digest_of(content)}


def refund_amount(
    requested: str | None, currency: str, *, paid_minor: int, committed_minor: int
) -> int:
    """The refund's amount: at most what was paid minus what is refunded or in flight."""
    remaining = paid_minor - committed_minor
    if remaining <= 0:
        raise SemopsError(E.REFUND_EXCEEDS_PAID, "this payment is already fully refunded")
    if requested is None:
        return remaining
    amount_minor = check_payment_amount(parse_amount(requested, currency))
    if amount_minor > remaining:
        raise SemopsError(E.REFUND_EXCEEDS_PAID, "refunds would exceed the paid amount")
    return amount_minor


# --- the notice and the request ------------------------------------------------------------


def check_notice_matches(notice: PaymentNotice, request: PaymentRequest) -> None:
    """A notice pays an order only if it names exactly the request the order holds."""
    pairs = {
        "request_id": (notice.request_id, request.request_id),
        "payee_processor": (notice.payee_processor, request.payee_processor),
        "payee_id": (notice.payee_id, request.payee_id),
        "amount_minor": (notice.amount_minor, request.amount_minor),
        "currency": (notice.currency, request.currency),
        "reference": (notice.reference, request.reference),
    }
    for field, (got, expected) in pairs.items():
        if got != expected:
            raise SemopsError(E.ORDER_MISMATCH, f"the notice's {field} is not the order's")


def refund_event(paid_minor: int, refunded_minor: int) -> MerchantOrderEvent | None:
    """The event a refunded total means, or None when nothing is refunded yet."""
    assert 0 <= refunded_minor <= paid_minor, "refunds never exceed the paid amount"
    if refunded_minor == 0:
        return None
    if refunded_minor == paid_minor:
        return MerchantOrderEvent.REFUND_FULL
    return MerchantOrderEvent.REFUND_PARTIAL


def shown_refund_code(code: str | None) -> str | None:
    """The code a merchant is shown for a refused refund: about its own call (input,
    credentials, the key: the 1xxx codes and idempotency_conflict), its own account
    (insufficient_funds: the money to give back is not there) or the payment
    (MERCHANT_REFUND_CODES); anything else -- a processor suspended, a cap, an expiry --
    is `refund_not_completed`, which names nobody."""
    if code is None:
        return None
    try:
        spec = lookup(code)
    except KeyError:
        return E.REFUND_NOT_COMPLETED.code
    if code in MERCHANT_REFUND_CODES or code in _OWN_CALL_CODES or spec.number < 2000:
        return code
    return E.REFUND_NOT_COMPLETED.code


_OWN_CALL_CODES: Final = frozenset({E.IDEMPOTENCY_CONFLICT.code, E.INSUFFICIENT_FUNDS.code})


def processor_state_event(state: Any) -> MerchantOrderEvent | None:
    """What the processor's view of a request (from a status poll) means for the order.

    A paid request is *not* turned into an event here: only its signed notice pays."""
    if state in ("expired", "cancelled"):
        return MerchantOrderEvent.EXPIRE
    return None


__all__ = [
    "MERCHANT_ORDER",
    "PAID_STATES",
    "BasketLine",
    "MerchantOrderEvent",
    "MerchantOrderState",
    "OrderInput",
    "RefundInput",
    "basket_digest_of",
    "check_notice_matches",
    "checked_order",
    "parse_input",
    "processor_state_event",
    "refund_amount",
    "refund_event",
    "shown_refund_code",
]
