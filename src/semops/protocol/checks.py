"""Payment rules that relate two messages, as pure functions.

The payer processor, before it reserves any money, checks that the customer's order is
for exactly the request it embeds (same amount and currency, sent to this processor) and
that the request can still be paid. A mismatch is refused before any state changes.
"""

from __future__ import annotations

from semops.core.errors import E, SemopsError
from semops.protocol.messages import PaymentOrder, PaymentRequest
from semops.protocol.replay import check_fresh


def check_order_matches_request(
    order: PaymentOrder, request: PaymentRequest, *, processor_id: str, now: int
) -> None:
    if order.payer_processor != processor_id:
        raise SemopsError(E.ORDER_MISMATCH, "the order is addressed to another processor")
    if order.amount_minor != request.amount_minor or order.currency != request.currency:
        raise SemopsError(E.ORDER_MISMATCH, "the order's amount differs from the request's")
    check_fresh(request.created_at, request.expires_at, now, expired=SemopsError(E.REQUEST_EXPIRED))
