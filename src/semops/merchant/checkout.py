"""The checkout page: the amount, the basket, the QR code, the "pay with SEMOPS" link, and a
status line that follows the order live (Server-Sent Events from
`GET /v1/orders/{id}/events`, polling `GET /v1/orders/{id}/status` when the stream cannot
be opened).

Server-rendered, self-contained: the QR is an inline SVG drawn by segno, the script and
stylesheet come from this service (`/static/…`), the page's own settings are one inline
script with a per-response nonce, and nothing is loaded from anywhere else (the Content
Security Policy says so). Every value is escaped by the template engine. There is nothing
about the customer who pays to show, because the merchant never learns it.
"""

from __future__ import annotations

from typing import Any, Final

from semops.core.money import format_amount
from semops.merchant.events import FINAL_STATES, guarantee_of, time_text
from semops.merchant.pages import render, trusted_markup
from semops.merchant.qr import qr_svg_inline

STATUS_POLL_INTERVAL_MS: Final = 2000
_STATUS_TEXT: Final = {
    "creating": "Preparing the payment request…",
    "open": "Waiting for payment: scan the code with your SEMOPS wallet.",
    "paid": "Paid. Thank you! The payment is guaranteed by our processor.",
    "partially_refunded": "Paid (partly refunded).",
    "refunded": "Refunded.",
    "expired": "This payment request has expired. Ask the shop for a new one.",
    "failed": "This payment request could not be created. Ask the shop to try again.",
}
UNREACHABLE_TEXT: Final = (
    "The connection to the shop is lost, so this status may be out of date. "
    "Trying again by itself; nothing needs to be done."
)


def content_security_policy(nonce: str) -> str:
    """Scripts only with this response's nonce; styles, images and calls only from here;
    forms only to here; never framed."""
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; "
        "style-src 'self'; "
        "img-src 'self' data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def status_text(state: str) -> str:
    return _STATUS_TEXT.get(state, state)


def _basket_lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    basket = order.get("basket") or []
    return [
        {
            "name": line["name"],
            "quantity": line["quantity"],
            "total": format_amount(line["quantity"] * line["unit_amount_minor"], order["currency"]),
        }
        for line in basket
    ]


def render_checkout(order: dict[str, Any], merchant_name: str, nonce: str) -> str:
    """The checkout page of one order (a view from `order_view`)."""
    link = order.get("link")
    order_id = order["order_id"]
    state = order["state"]
    config = {
        "eventsUrl": f"/v1/orders/{order_id}/events",
        "statusUrl": f"/v1/orders/{order_id}/status",
        "pollMs": STATUS_POLL_INTERVAL_MS,
        "texts": _STATUS_TEXT,
        "finalStates": sorted(FINAL_STATES),
        "unreachableText": UNREACHABLE_TEXT,
    }
    return render(
        "checkout.html",
        shop_name=merchant_name,
        staff=False,
        signed_in=False,
        current="checkout",
        nonce=nonce,
        amount=order["amount"],
        currency=order["currency"],
        reference=order.get("reference"),
        basket=_basket_lines(order),
        link=link,
        qr_svg=trusted_markup(qr_svg_inline(link)) if link else "",
        payable=state == "open" and bool(link),
        expires_text=time_text(order.get("expires_at")) if state == "open" else None,
        state=state,
        status_text=status_text(state),
        guarantee=guarantee_of(order),
        transfer_id=order.get("transfer_id"),
        paid_text=time_text(order.get("paid_at")),
        config=config,
    )


__all__ = ["UNREACHABLE_TEXT", "content_security_policy", "render_checkout", "status_text"]
