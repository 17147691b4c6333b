"""The merchant's staff pages, pure: templates, form parsing, readable errors, sessions.

No I/O here: the routes in `semops.merchant.web` read the request, call these and the
service, and answer. Everything shown is rendered by Jinja2 with autoescaping; money is
parsed from and printed to text only here, at the edge, with `core.money`.

Staff sign in with the merchant backend's API token (the one its `POST /v1/orders` takes
as a bearer token); sign-ins are throttled per client address (semops.service.throttle).
The browser then holds a session cookie: 256 random bits. The server keeps, in its
database, only the cookie's SHA-256 (`session_digest`), the digest of the token it was
opened under and its absolute expiry (SESSION_TTL_S after sign-in): logout deletes the row
at once, so a copied cookie dies with it; rotating the token ends every session; every
worker sees the same sessions. The cookie is HttpOnly and SameSite=Strict; page forms are
also refused when the browser says they come from another origin (`Sec-Fetch-Site`, else
`Origin`), so another site cannot make a signed-in browser create orders or refunds. Each
form that moves money carries an idempotency key made when the form was rendered, so a
double submit or a browser's retry does it once. Only a backend started with
`--development` (on loopback) has no token, and open pages.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import jinja2
from markupsafe import Markup

from semops.core.errors import E, SemopsError
from semops.core.limits import (
    BASKET_LINES_MAX,
    BASKET_NAME_MAX_CHARS,
    BASKET_QUANTITY_MAX,
    REFERENCE_MAX_CHARS,
)
from semops.core.money import format_amount, parse_amount

# A shift at the till; after that the token is typed again, however busy the session was.
SESSION_TTL_S: Final = 8 * 60 * 60
SESSION_COOKIE: Final = "semops_shop_session"
# Sessions kept at once: a shop has a few tills and phones; past this the oldest one ends,
# so signing in again and again cannot fill the table.
SESSIONS_MAX: Final = 64
# A session cookie as sent back: ours are 43 characters; a longer one is not ours.
SESSION_COOKIE_MAX_CHARS: Final = 64
# Orders on one page of the orders list: enough for a glance, short on a phone.
ORDERS_PER_PAGE: Final = 20
# Empty basket lines on a fresh new-order form (the page can add more up to the limit).
BLANK_LINES: Final = 3
# Form fields in one page form: the basket's lines times three, plus a handful.
FORM_FIELDS_MAX: Final = 3 * BASKET_LINES_MAX + 16

# How long an order may be paid, as offered on the new-order form (the first is for a
# quick sale at the counter; the protocol's floor is REQUEST_TTL_MIN_S).
TTL_CHOICES: Final = (
    (30, "30 seconds"),
    (120, "2 minutes"),
    (600, "10 minutes"),
    (3600, "1 hour"),
)
TTL_DEFAULT_S: Final = 600

STATE_NAMES: Final = {
    "creating": "Being created",
    "open": "Waiting for payment",
    "paid": "Paid",
    "partially_refunded": "Paid, partly refunded",
    "refunded": "Refunded",
    "expired": "Expired",
    "failed": "Not created",
}


def _escape_text(value: Any) -> Any:
    """Every text value escaped as `html.escape` does (quotes as &quot; and &#x27;), the
    same whether it lands in an element or an attribute; our own markup passes as is."""
    if isinstance(value, str) and not isinstance(value, Markup):
        return Markup(html.escape(value, quote=True))  # noqa: S704 - escaped just now
    return value


_ENVIRONMENT: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("semops.merchant", "templates"),
    autoescape=jinja2.select_autoescape(("html",), default=True),
    finalize=_escape_text,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template: str, **context: Any) -> str:
    return _ENVIRONMENT.get_template(template).render(**context)


def trusted_markup(text: str) -> Markup:
    """Markup we generated ourselves (segno's SVG of our own link): not escaped again."""
    return Markup(text)  # noqa: S704 - only for SVG drawn by segno from our link


# --- readable errors ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Readable:
    """An error as a person reads it: what happened, and what to do next."""

    code: str
    sentence: str
    next_step: str


_READABLE: Final[dict[str, tuple[str, str]]] = {
    E.VALIDATION_FAILED.code: (
        "Some of the details are missing or not valid.",
        "Check the form and send it again.",
    ),
    E.MALFORMED.code: (
        "The form could not be read.",
        "Reload the page and fill it in again.",
    ),
    E.AMOUNT_INVALID.code: (
        "That amount is not valid.",
        "Type it like 12.50, with no more decimals than the currency has.",
    ),
    E.AMOUNT_OUT_OF_RANGE.code: (
        "That amount is too small or too large for one payment.",
        "Use an amount of at least 0.01.",
    ),
    E.CURRENCY_UNKNOWN.code: (
        "That currency is not supported.",
        "Use a three-letter code such as EUR.",
    ),
    E.REFUND_EXCEEDS_PAID.code: (
        "That is more than can still be refunded for this order.",
        "Refund at most the amount shown under the field.",
    ),
    E.REFUND_NOT_ALLOWED.code: (
        "This order cannot be refunded.",
        "Only paid orders can be refunded, up to what was paid.",
    ),
    E.REQUEST_EXPIRED.code: (
        "This payment request has expired.",
        "Create a new order for the customer.",
    ),
    E.REQUEST_ALREADY_PAID.code: (
        "This order has already been paid.",
        "Find it on the orders page; there is nothing more to pay.",
    ),
    E.INSUFFICIENT_FUNDS.code: (
        "There is not enough money in the account for this.",
        "Try a smaller amount, or ask the processor about the account's balance.",
    ),
    E.IDEMPOTENCY_CONFLICT.code: (
        "This form was already sent with other details.",
        "Open a new order form and fill it in again.",
    ),
    E.NOT_FOUND.code: (
        "There is no such order.",
        "Check the link, or find the order on the orders page.",
    ),
    E.UNAUTHENTICATED.code: (
        "That access token is not right.",
        "Type the merchant backend's API token; the shop's administrator has it.",
    ),
    E.FORBIDDEN.code: (
        "This form came from another site, so it was not accepted.",
        "Open the page from this shop's own address and send the form again.",
    ),
    E.TOO_LARGE.code: (
        "The form is too large.",
        "Use fewer basket lines or shorter descriptions.",
    ),
    E.UNAVAILABLE.code: (
        "The payment processor is not reachable at the moment.",
        "Nothing was done twice: wait a moment and try again.",
    ),
    E.TIMEOUT.code: (
        "The payment processor did not answer in time.",
        "Nothing was done twice: wait a moment and try again; the orders page shows the outcome.",
    ),
    E.REFUND_NOT_COMPLETED.code: (
        "The refund could not be completed, so no money was moved.",
        "Try again later; if it keeps happening, ask the processor.",
    ),
    E.LOGIN_THROTTLED.code: (
        "Too many wrong tokens were typed from this address.",
        "Wait a quarter of an hour, then sign in again.",
    ),
}


def readable(
    error: SemopsError, detail: str | None = None, next_step: str | None = None
) -> Readable:
    """The page's message for an error code (the API's detail is never shown: it is
    written for programs; `detail` and `next_step` are sentences the page wrote)."""
    sentence, default_next = _READABLE.get(
        error.code,
        (
            f"That did not work: {error.spec.title.lower()}.",
            "Try again; if it keeps happening, tell the shop's administrator.",
        ),
    )
    return Readable(error.code, detail or sentence, next_step or default_next)


class FormError(Exception):
    """A page form that cannot become a request: the sentence names the field."""

    def __init__(self, field: str, sentence: str, next_step: str) -> None:
        super().__init__(sentence)
        self.field = field
        self.readable = Readable(E.VALIDATION_FAILED.code, sentence, next_step)


# --- forms --------------------------------------------------------------------------------


def parse_form(body: bytes) -> dict[str, list[str]]:
    """An application/x-www-form-urlencoded body (bounded in fields; the body is bounded
    by the app). Undecodable or over-long forms are refused with one error."""
    try:
        text = body.decode("utf-8")
        return parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=FORM_FIELDS_MAX
        )
    except (UnicodeDecodeError, ValueError):
        raise SemopsError(E.MALFORMED, "the form could not be read") from None


def first(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


_QUANTITY: Final = re.compile(r"[0-9]{1,6}")
# An idempotency key a page form carries (semops.core.ids: 8 to 64 URL-safe characters).
_ID_TEXT: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _money(text: str, currency: str, field: str, what: str) -> int:
    try:
        return parse_amount(text, currency)
    except SemopsError as error:
        if error.code == E.CURRENCY_UNKNOWN.code:
            raise
        raise FormError(
            field,
            f"{what} is not an amount.",
            "Type it like 12.50, with no more decimals than the currency has.",
        ) from None


def order_from_form(form: Mapping[str, list[str]]) -> tuple[dict[str, Any], str | None]:
    """The `POST /v1/orders` document a new-order form means, and its idempotency key.

    Basket prices are parsed to minor units here; an empty amount means the basket's
    total; a given amount must equal it (the service checks that again)."""
    currency = first(form, "currency").upper() or "EUR"
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise FormError(
            "currency", "The currency is not a three-letter code.", "Use a code such as EUR."
        )
    parse_amount("0", currency)  # refuses an unsupported currency with its own error
    lines = _basket_from_form(form, currency)
    amount_text = first(form, "amount")
    total = sum(line["quantity"] * line["unit_amount_minor"] for line in lines)
    if amount_text:
        amount_minor = _money(amount_text, currency, "amount", "The amount")
        if lines and amount_minor != total:
            raise FormError(
                "amount",
                f"The basket adds up to {format_amount(total, currency)} {currency}, "
                f"not {format_amount(amount_minor, currency)} {currency}.",
                "Correct the amount, or leave it empty to charge the basket's total.",
            )
    elif lines:
        amount_minor = total
    else:
        raise FormError(
            "amount",
            "There is nothing to charge yet.",
            "Type an amount, or fill in at least one basket line.",
        )
    document: dict[str, Any] = {
        "amount": format_amount(amount_minor, currency),
        "currency": currency,
        "ttl_s": _ttl(first(form, "ttl_s")),
    }
    reference = first(form, "reference")
    if reference:
        document["reference"] = reference
    if lines:
        document["basket"] = lines
    key = first(form, "idempotency_key") or None
    return document, key


def _ttl(text: str) -> int:
    allowed = {str(seconds): seconds for seconds, _ in TTL_CHOICES}
    return allowed.get(text, TTL_DEFAULT_S)


def _basket_from_form(form: Mapping[str, list[str]], currency: str) -> list[dict[str, Any]]:
    names = form.get("line_name", [])
    quantities = form.get("line_quantity", [])
    prices = form.get("line_price", [])
    count = max(len(names), len(quantities), len(prices))
    if count > BASKET_LINES_MAX:
        raise FormError(
            "basket",
            f"A basket has at most {BASKET_LINES_MAX} lines.",
            "Put several items on one line.",
        )
    lines = []
    for index in range(count):
        name, quantity, price = (
            (values[index].strip() if index < len(values) else "")
            for values in (names, quantities, prices)
        )
        if not (name or quantity or price):
            continue
        item = f"Item {index + 1}"
        if not (name and quantity and price):
            raise FormError(
                "basket",
                f"{item} is not complete.",
                "Fill in its description, quantity and unit price, or clear the line.",
            )
        if not _QUANTITY.fullmatch(quantity) or not 1 <= int(quantity) <= BASKET_QUANTITY_MAX:
            raise FormError(
                "basket",
                f"The quantity of {item.lower()} is not a whole number from 1 to "
                f"{BASKET_QUANTITY_MAX}.",
                "Type the number of pieces, like 2.",
            )
        lines.append(
            {
                "name": name,
                "quantity": int(quantity),
                "unit_amount_minor": _money(price, currency, "basket", f"The price of {item}"),
            }
        )
    return lines


def refund_from_form(form: Mapping[str, list[str]]) -> tuple[dict[str, Any], str, str]:
    """The `POST /v1/orders/{id}/refunds` document of a refund form, the typed text, and
    the form's idempotency key (made when the page was rendered: a second submit of the
    same form is the same refund)."""
    amount = first(form, "amount")
    key = first(form, "idempotency_key")
    if not _ID_TEXT.fullmatch(key):
        raise FormError(
            "amount",
            "This refund form is out of date.",
            "Reload the orders page and send the refund again.",
        )
    if first(form, "mode") == "rest":
        return {}, amount, key  # no amount: the rest of what was paid
    if not amount:
        raise FormError(
            "amount",
            "Type the amount to refund.",
            "Or choose “Refund all” to refund everything not yet refunded.",
        )
    return {"amount": amount}, amount, key


def form_values(form: Mapping[str, list[str]]) -> dict[str, Any]:
    """A new-order form's values, to show it again with an error (typed text, escaped)."""
    names = form.get("line_name", [])
    quantities = form.get("line_quantity", [])
    prices = form.get("line_price", [])
    count = min(max(len(names), BLANK_LINES), BASKET_LINES_MAX)
    lines = [
        {
            "name": names[i] if i < len(names) else "",
            "quantity": quantities[i] if i < len(quantities) else "",
            "price": prices[i] if i < len(prices) else "",
        }
        for i in range(count)
    ]
    return {
        "amount": first(form, "amount"),
        "currency": first(form, "currency") or "EUR",
        "reference": first(form, "reference"),
        "ttl_s": _ttl(first(form, "ttl_s")),
        "lines": lines,
    }


def blank_order_form() -> dict[str, Any]:
    return {
        "amount": "",
        "currency": "EUR",
        "reference": "",
        "ttl_s": TTL_DEFAULT_S,
        "lines": [{"name": "", "quantity": "", "price": ""} for _ in range(BLANK_LINES)],
    }


def new_order_context(form: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    return {
        "form": form,
        "lines": form["lines"],
        "idempotency_key": idempotency_key,
        "ttl_choices": TTL_CHOICES,
        "lines_max": BASKET_LINES_MAX,
        "name_max": BASKET_NAME_MAX_CHARS,
        "reference_max": REFERENCE_MAX_CHARS,
    }


def safe_next_path(text: str) -> str:
    """Where to go after signing in: only a path of the shop pages of this site."""
    if re.fullmatch(r"/shop/[A-Za-z0-9_/?=.&-]{0,200}", text) and "//" not in text:
        return text
    return "/shop/orders"


# --- sessions and origins -----------------------------------------------------------------


def session_digest(cookie: str | None) -> str | None:
    """What the server keeps of a session cookie (its SHA-256), or None for no cookie."""
    if not cookie or len(cookie) > SESSION_COOKIE_MAX_CHARS:
        return None
    return hashlib.sha256(b"semops-shop-session:" + cookie.encode("utf-8")).hexdigest()


def token_digest(api_token: str) -> str:
    """Which API token a session was opened under: a new token ends the old sessions."""
    return hashlib.sha256(b"semops-shop-token:" + api_token.encode("utf-8")).hexdigest()


def session_live(session: Mapping[str, Any] | None, api_token: str, now: int) -> bool:
    """Whether a stored session still signs its browser in."""
    if session is None or not now < session["expires_at"]:
        return False
    return hmac.compare_digest(session["token_digest"], token_digest(api_token))


def same_origin(
    fetch_site: str | None, origin: str | None, host: str | None, public_url: str
) -> bool:
    """Whether a form post comes from this site.

    Browsers say so in `Sec-Fetch-Site`; with it, only `same-origin` is accepted. Without
    it, an `Origin` must name this site; "null" (an opaque origin) is refused. Our pages
    send `Referrer-Policy: no-referrer`, under which a browser's own same-site form post
    carries `Origin: null` -- but every browser that does so also sends Sec-Fetch-Site.
    Neither header: not a browser, so not a forged cross-site form to stop here."""
    if fetch_site is not None:
        return fetch_site == "same-origin"
    if origin is None:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return parts.netloc == (host or "") or origin.rstrip("/") == _origin_of(public_url)


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


__all__ = [
    "ORDERS_PER_PAGE",
    "SESSIONS_MAX",
    "SESSION_COOKIE",
    "SESSION_TTL_S",
    "STATE_NAMES",
    "FormError",
    "Readable",
    "blank_order_form",
    "first",
    "form_values",
    "new_order_context",
    "order_from_form",
    "parse_form",
    "readable",
    "refund_from_form",
    "render",
    "safe_next_path",
    "same_origin",
    "session_digest",
    "session_live",
    "token_digest",
    "trusted_markup",
]
