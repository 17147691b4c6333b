"""The merchant's list of orders, pure: one order's summary line and the paging cursor.

A page is ordered newest first by (created_at, order_id) and continues after the last row
of the previous page (keyset paging), so an order created while someone pages through is
neither shown twice nor skipped. The cursor is that pair as text, `<created_at>.<order_id>`:
not secret, and checked like any input.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import ID_MAX_CHARS
from semops.core.money import format_amount
from semops.merchant.core import PAID_STATES, MerchantOrderState

_CURSOR: Final = re.compile(r"(?P<created_at>[0-9]{1,15})\.(?P<order_id>[^.]+)")
_ID: Final = re.compile(ID_PATTERN)


def page_cursor(row: dict[str, Any]) -> str:
    return f"{row['created_at']}.{row['order_id']}"


def parse_cursor(text: str) -> tuple[int, str]:
    match = _CURSOR.fullmatch(text)
    order_id = match.group("order_id") if match else ""
    if match is None or len(order_id) > ID_MAX_CHARS or not _ID.fullmatch(order_id):
        raise SemopsError(E.VALIDATION_FAILED, "before: not a cursor from a previous page")
    return int(match.group("created_at")), order_id


def order_summary(row: dict[str, Any], pending_refunds_minor: int) -> dict[str, Any]:
    """One line of the orders list: amounts and state, and what may still be refunded.

    `refundable_minor` is the paid amount less what is refunded or still being refunded:
    the most the next refund may be (the service enforces it; the page only shows it)."""
    currency, paid = row["currency"], row["amount_minor"]
    state = MerchantOrderState(row["state"])
    refundable = 0
    if state in PAID_STATES and state is not MerchantOrderState.REFUNDED:
        refundable = max(0, paid - row["refunded_minor"] - pending_refunds_minor)
    return {
        "order_id": row["order_id"],
        "reference": row["reference"],
        "state": row["state"],
        "amount": format_amount(paid, currency),
        "amount_minor": paid,
        "currency": currency,
        "basket": json.loads(row["basket"]) if row["basket"] else None,
        "refunded": format_amount(row["refunded_minor"], currency),
        "refunded_minor": row["refunded_minor"],
        "refund_pending_minor": pending_refunds_minor,
        "refundable": format_amount(refundable, currency),
        "refundable_minor": refundable,
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "paid_at": row["paid_at"],
        "checkout_path": f"/checkout/{row['order_id']}",
    }


__all__ = ["order_summary", "page_cursor", "parse_cursor"]
