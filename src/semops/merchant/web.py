"""The merchant backend's web pages and the endpoints they use.

Public (a customer sees them; an order id is 128 random bits and an order holds nothing
about any customer): the checkout page `/checkout/{id}`, its live status stream
`/v1/orders/{id}/events` (text/event-stream) and `/v1/orders/{id}/status` (JSON, for the
page's polling fallback), and `/static/…`.

Staff (the API token, as a bearer token or as a server-side session from `/login`; open
only in development): `/shop/new` (a basket and/or an amount becomes an order, then its
checkout page), `/shop/orders` (newest first, paged, with full and partial refunds) and
`GET /v1/orders` (the same list as JSON). See `semops.merchant.pages` for the session, the
forms' idempotency keys and the cross-site checks, `semops.merchant.sessions` for where
sessions live. Forms work without JavaScript; the little script there only adds basket
lines and follows the status live.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any, Final

import structlog
from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import ID_MAX_CHARS, ID_MIN_CHARS, ORDERS_PAGE_MAX
from semops.core.money import format_amount
from semops.crypto import read_unverified_claims
from semops.merchant.checkout import content_security_policy, render_checkout
from semops.merchant.events import (
    EventStreamResponse,
    StreamLimits,
    order_stream,
    public_status,
    time_text,
)
from semops.merchant.listing import order_summary
from semops.merchant.pages import (
    ORDERS_PER_PAGE,
    SESSION_COOKIE,
    SESSION_TTL_S,
    STATE_NAMES,
    FormError,
    Readable,
    blank_order_form,
    first,
    form_values,
    new_order_context,
    order_from_form,
    parse_form,
    readable,
    refund_from_form,
    render,
    safe_next_path,
    same_origin,
)
from semops.merchant.service import MerchantService
from semops.merchant.sessions import ShopSessions
from semops.service.throttle import TOKEN_INPUT_MAX_CHARS, token_matches
from semops.store.merchant import REFUND_UNSETTLED

log = structlog.get_logger("semops.merchant")

OrderIdPath = Annotated[
    str, Path(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
OptionalId = Annotated[
    str | None, Query(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
Cursor = Annotated[str | None, Query(min_length=3, max_length=96)]
Limit = Annotated[int, Query(ge=1, le=ORDERS_PAGE_MAX)]
NextPath = Annotated[str, Query(alias="next", max_length=256)]

_STATIC_TYPES: Final = {
    "merchant.css": "text/css; charset=utf-8",
    "checkout.js": "text/javascript; charset=utf-8",
    "shop.js": "text/javascript; charset=utf-8",
}


def _static_files() -> dict[str, bytes]:
    folder = resources.files("semops.merchant") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC_TYPES}


def _page(html: str, nonce: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        html,
        status_code=status_code,
        headers={
            "Content-Security-Policy": content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        },
    )


def _see_other(location: str) -> RedirectResponse:
    return RedirectResponse(
        location,
        status_code=303,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def payee_name(order: dict[str, Any], fallback: str) -> str:
    """The shop's name as its processor signed it into the request."""
    token = order.get("token")
    if not token:
        return fallback
    name = read_unverified_claims(token).get("pn")
    return name if isinstance(name, str) else fallback


def _refund_message(view: dict[str, Any], refund_id: str) -> str | None:
    refund = next((r for r in view["refunds"] if r["refund_id"] == refund_id), None)
    if refund is None:
        return None
    amount = f"{format_amount(refund['amount_minor'], view['currency'])} {view['currency']}"
    what = view["reference"] or "the order"
    if refund["state"] == "completed":
        return f"Refunded {amount} of {what}. The money is on its way back to the customer."
    if refund["state"] == "failed":
        return None
    return (
        f"The refund of {amount} of {what} is on its way. This page shows it as refunded "
        "once the processor confirms it."
    )


def add_pages(
    app: FastAPI,
    service: MerchantService,
    api_token: str | None,
    limits: StreamLimits,
    on_order_created: Callable[[], None] = lambda: None,
) -> None:
    """Add the checkout and staff pages and their endpoints to the merchant app."""
    static = _static_files()
    service.changes.streams_max = limits.streams_max
    shop_name = service.settings.merchant_id
    bearer = f"Bearer {api_token}".encode() if api_token else None
    sessions = ShopSessions(service.database, service.clock, api_token) if api_token else None

    async def signed_in(request: Request) -> bool:
        if sessions is None or bearer is None:
            return True  # development: no token, open pages (loopback only)
        given = request.headers.get("authorization", "").encode("utf-8", errors="replace")
        if hmac.compare_digest(given, bearer):
            return True
        return await sessions.live(request.cookies.get(SESSION_COOKIE))

    def client_of(request: Request) -> str:
        # The socket's peer: a forwarded header could name any address it liked.
        return request.client.host if request.client is not None else "unknown"

    def from_here(request: Request) -> bool:
        headers = request.headers
        return same_origin(
            headers.get("sec-fetch-site"),
            headers.get("origin"),
            headers.get("host"),
            service.settings.base_url,
        )

    def staff_page(template: str, nonce: str, status_code: int = 200, **context: Any) -> Response:
        html = render(
            template,
            shop_name=shop_name,
            staff=True,
            signed_in=api_token is not None,
            nonce=nonce,
            **context,
        )
        return _page(html, nonce, status_code)

    def forbidden_page(nonce: str) -> Response:
        return staff_page(
            "message.html",
            nonce,
            403,
            current="",
            heading="Not accepted",
            error=readable(SemopsError(E.FORBIDDEN)),
            back_path="/shop/orders",
            back_text="Back to the orders",
        )

    # --- public: the checkout page and its live status ----------------------------------

    @app.get("/checkout/{order_id}", response_class=HTMLResponse, include_in_schema=False)
    async def checkout(order_id: OrderIdPath, request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        try:
            view = await service.view(await service.order(order_id))
        except SemopsError as error:
            if "text/html" not in request.headers.get("accept", ""):
                raise  # a program asked: problem+json, as from every other route
            html = render(
                "message.html",
                shop_name=shop_name,
                staff=False,
                signed_in=False,
                nonce=nonce,
                current="",
                heading="No such payment",
                error=readable(error),
                back_path="/checkout/" + order_id,
                back_text="Try again",
            )
            return _page(html, nonce, error.spec.http_status)
        return _page(render_checkout(view, payee_name(view, shop_name), nonce), nonce)

    @app.get("/v1/orders/{order_id}/status")
    async def order_status(order_id: OrderIdPath) -> JSONResponse:
        view = await service.view(await service.order(order_id))
        return JSONResponse(public_status(view), headers={"Cache-Control": "no-store"})

    @app.get("/v1/orders/{order_id}/events")
    async def order_events(order_id: OrderIdPath) -> Response:
        await service.order(order_id)  # an unknown order is a 404, not an empty stream

        async def load() -> dict[str, Any]:
            return await service.view(await service.order(order_id))

        stream = order_stream(order_id, load, service.changes, limits)
        return EventStreamResponse(stream, service.changes)

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            raise SemopsError(E.NOT_FOUND, "no such file")
        return Response(
            static[name],
            media_type=_STATIC_TYPES[name],
            headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
        )

    # --- staff: signing in --------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(next_path: NextPath = "/shop/orders") -> Response:
        next_path = safe_next_path(next_path)
        if api_token is None:
            return _see_other(next_path)
        nonce = secrets.token_urlsafe(16)
        return staff_page("login.html", nonce, current="login", next_path=next_path, error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        if not from_here(request):
            return forbidden_page(nonce)
        form = parse_form(await request.body())
        next_path = safe_next_path(first(form, "next"))
        if api_token is None or sessions is None:
            return _see_other(next_path)

        def refused(error: SemopsError) -> Response:
            return staff_page(
                "login.html",
                nonce,
                error.spec.http_status,
                current="login",
                next_path=next_path,
                error=readable(error),
            )

        client = client_of(request)
        if sessions.throttle.blocked(client):
            log.warning("shop_login_throttled")
            return refused(SemopsError(E.LOGIN_THROTTLED))
        given = first(form, "token")[: TOKEN_INPUT_MAX_CHARS + 1]
        if not token_matches(given, api_token):
            sessions.throttle.failed(client)
            log.warning("shop_login_failed")
            return refused(SemopsError(E.UNAUTHENTICATED))
        sessions.throttle.succeeded(client)
        await sessions.close(request.cookies.get(SESSION_COOKIE))  # never two at once
        response = _see_other(next_path)
        response.set_cookie(
            SESSION_COOKIE,
            await sessions.open(),
            max_age=SESSION_TTL_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or service.settings.base_url.startswith("https:"),
        )
        log.info("shop_signed_in")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        if not from_here(request):
            return forbidden_page(secrets.token_urlsafe(16))
        if sessions is not None:
            # The session ends here, on the server: a copy of the cookie is worth nothing.
            await sessions.close(request.cookies.get(SESSION_COOKIE))
            log.info("shop_signed_out")
        response = _see_other("/login")
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    # --- staff: new order ---------------------------------------------------------------

    @app.get("/shop", include_in_schema=False)
    async def shop_home() -> Response:
        return _see_other("/shop/orders")

    @app.get("/shop/new", response_class=HTMLResponse, include_in_schema=False)
    async def new_order_page(request: Request) -> Response:
        if not await signed_in(request):
            return _see_other("/login?next=/shop/new")
        nonce = secrets.token_urlsafe(16)
        context = new_order_context(blank_order_form(), f"ik_{secrets.token_urlsafe(18)}")
        return staff_page(
            "new_order.html", nonce, current="new", error=None, error_field=None, **context
        )

    @app.post("/shop/orders", include_in_schema=False)
    async def create_order_form(request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        if not await signed_in(request):
            return _see_other("/login?next=/shop/new")
        if not from_here(request):
            return forbidden_page(nonce)
        form = parse_form(await request.body())
        field: str | None = None
        try:
            document, key = order_from_form(form)
            view = await service.create_order(document, key)
        except FormError as problem:
            error, field, status = problem.readable, problem.field, 422
        except SemopsError as problem:
            error, status = readable(problem), problem.spec.http_status
        else:
            on_order_created()
            return _see_other(f"/checkout/{view['order_id']}")
        key_text = first(form, "idempotency_key") or f"ik_{secrets.token_urlsafe(18)}"
        context = new_order_context(form_values(form), key_text)
        return staff_page(
            "new_order.html",
            nonce,
            status,
            current="new",
            error=error,
            error_field=field,
            **context,
        )

    # --- staff: orders and refunds ------------------------------------------------------

    async def orders_page(
        nonce: str,
        before: str | None,
        *,
        status_code: int = 200,
        message: str | None = None,
        error: Readable | None = None,
        error_order: str | None = None,
        error_amount: str = "",
    ) -> Response:
        try:
            listing = await service.list_orders(before, ORDERS_PER_PAGE)
        except SemopsError as problem:
            listing, before = await service.list_orders(None, ORDERS_PER_PAGE), None
            error, status_code = readable(problem, "That page of orders does not exist."), 422
        # Each refund form carries its own key, made now: sent twice, it refunds once.
        orders = [
            {
                **order,
                "created_text": time_text(order["created_at"]),
                "refund_key": f"ik_{secrets.token_urlsafe(18)}",
            }
            for order in listing["orders"]
        ]
        if error_order is not None and all(o["order_id"] != error_order for o in orders):
            error_order = None  # not on this page: the alert goes on top instead
        return staff_page(
            "orders.html",
            nonce,
            status_code,
            current="orders",
            orders=orders,
            next_cursor=listing["next"],
            before=before,
            state_names=STATE_NAMES,
            message=message,
            error=error,
            error_order=error_order,
            error_amount=error_amount,
        )

    @app.get("/shop/orders", response_class=HTMLResponse, include_in_schema=False)
    async def orders_list_page(
        request: Request, before: Cursor = None, refund: OptionalId = None, order: OptionalId = None
    ) -> Response:
        if not await signed_in(request):
            return _see_other("/login?next=/shop/orders")
        message = None
        if refund is not None and order is not None:
            try:
                message = _refund_message(await service.view(await service.order(order)), refund)
            except SemopsError:
                message = None
        return await orders_page(secrets.token_urlsafe(16), before, message=message)

    @app.post("/shop/orders/{order_id}/refunds", include_in_schema=False)
    async def refund_form(order_id: OrderIdPath, request: Request) -> Response:
        nonce = secrets.token_urlsafe(16)
        if not await signed_in(request):
            return _see_other("/login?next=/shop/orders")
        if not from_here(request):
            return forbidden_page(nonce)
        form = parse_form(await request.body())
        typed = first(form, "amount")
        try:
            document, typed, key = refund_from_form(form)
            result = await service.refund(order_id, document, key)
        except FormError as problem:
            return await orders_page(
                nonce, None, status_code=422, error=problem.readable, error_order=order_id
            )
        except SemopsError as problem:
            return await orders_page(
                nonce,
                None,
                status_code=problem.spec.http_status,
                error=await _refund_error(problem, order_id),
                error_order=order_id,
                error_amount=typed[:32],
            )
        refund_id = result["refund"]["refund_id"]
        return _see_other(f"/shop/orders?refund={refund_id}&order={order_id}#order-{order_id}")

    async def _refund_error(problem: SemopsError, order_id: str) -> Readable:
        if problem.code != E.REFUND_EXCEEDS_PAID.code:
            return readable(problem)
        row = await service.order(order_id)
        refunds = (await service.view(row))["refunds"]
        pending = sum(r["amount_minor"] for r in refunds if r["state"] in REFUND_UNSETTLED)
        summary = order_summary(row, pending)
        return readable(
            problem,
            next_step=f"Refund at most {summary['refundable']} {summary['currency']}.",
        )

    @app.get("/v1/orders")
    async def list_orders(
        request: Request, before: Cursor = None, limit: Limit = ORDERS_PER_PAGE
    ) -> JSONResponse:
        if not await signed_in(request):
            raise SemopsError(E.UNAUTHENTICATED)
        return JSONResponse(
            await service.list_orders(before, limit), headers={"Cache-Control": "no-store"}
        )


__all__ = ["add_pages", "payee_name"]
