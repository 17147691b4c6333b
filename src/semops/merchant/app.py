"""The merchant backend's HTTP surface: its order API, the processor's webhook, the QR
images, and (from `semops.merchant.web`) the checkout and staff pages. Thin: each route
decodes, calls `MerchantService`, encodes.

Closed by default: the order API (`POST /v1/orders`, refunds, `GET /v1/orders`) needs
`Authorization: Bearer <API token>`; only a backend started with `--development` (on
loopback) has none. The webhook needs no credential because every notice is a signed
message checked under the processor's trusted key. Public, for the customer who holds an
order id from its checkout link: the checkout page, its status stream, the QR images and
`GET /v1/orders/{id}`, which without the token shows only `public_order_view` (what the
checkout page shows; not the refunds, not the idempotency key).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter

from semops.core.encoding import parse_json
from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import ID_MAX_CHARS, ID_MIN_CHARS, MESSAGE_MAX_BYTES
from semops.merchant.events import StreamLimits
from semops.merchant.qr import qr_png, qr_svg
from semops.merchant.service import MerchantService, public_order_view
from semops.merchant.web import add_pages
from semops.service.app import create_app, read_jose
from semops.service.metrics import database_registry, render_metrics

NOTICES = Counter("semops_merchant_notices_total", "Payment notices received", ["outcome"])
ORDERS = Counter("semops_merchant_orders_total", "Orders created")

OrderIdPath = Annotated[
    str, Path(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
# Module level, not inside the factory: FastAPI resolves these annotations by name.
Auth = Annotated[str | None, Header()]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
_NO_STORE = {"Cache-Control": "no-store"}


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        return {}
    return parse_json(body, max_bytes=MESSAGE_MAX_BYTES)


def create_merchant_app(
    service: MerchantService,
    api_token: str | None,
    stream_limits: StreamLimits | None = None,
    *,
    development: bool = False,
) -> FastAPI:
    """The app; without an API token only in development (the caller checked loopback)."""
    if not api_token and not development:
        raise ValueError("the merchant backend needs an API token outside development")
    app = create_app("SEMOPS merchant backend", version="1")
    expected = f"Bearer {api_token}".encode() if api_token else None

    def authorised(authorization: str | None) -> bool:
        if expected is None:
            return True
        given = (authorization or "").encode("utf-8", errors="replace")
        return hmac.compare_digest(given, expected)

    def authorise(authorization: str | None) -> None:
        if not authorised(authorization):
            raise SemopsError(E.UNAUTHENTICATED)

    @app.post("/v1/orders", status_code=201)
    async def create_order(
        request: Request, authorization: Auth = None, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        authorise(authorization)
        view = await service.create_order(await _json_body(request), idempotency_key)
        ORDERS.inc()
        return JSONResponse(view, status_code=201, headers=_NO_STORE)

    @app.get("/v1/orders/{order_id}")
    async def get_order(order_id: OrderIdPath, authorization: Auth = None) -> JSONResponse:
        view = await service.view(await service.order(order_id))
        if not authorised(authorization):
            view = public_order_view(view)
        return JSONResponse(view, headers=_NO_STORE)

    @app.get("/v1/orders/{order_id}/qr.svg")
    async def order_qr_svg(order_id: OrderIdPath) -> Response:
        link = await _link(order_id)
        return Response(qr_svg(link), media_type="image/svg+xml")

    @app.get("/v1/orders/{order_id}/qr.png")
    async def order_qr_png(order_id: OrderIdPath) -> Response:
        link = await _link(order_id)
        return Response(qr_png(link), media_type="image/png")

    async def _link(order_id: str) -> str:
        view = await service.view(await service.order(order_id))
        if not view["link"]:
            raise SemopsError(E.NOT_FOUND, "the order has no payment request yet")
        return str(view["link"])

    @app.post("/v1/orders/{order_id}/refunds")
    async def refund(
        order_id: OrderIdPath,
        request: Request,
        authorization: Auth = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        authorise(authorization)
        result = await service.refund(order_id, await _json_body(request), idempotency_key)
        return JSONResponse(result, headers=_NO_STORE)

    @app.post("/v1/notices")
    async def notice(request: Request) -> JSONResponse:
        try:
            matched, answer = await service.accept_notice(await read_jose(request))
        except SemopsError as error:
            NOTICES.labels(error.code).inc()
            raise
        NOTICES.labels("paid" if matched else "unmatched").inc()
        # The webhook is public (the notice's signature is its credential, and a paying
        # customer can read the notice from the public order view): its answer says only
        # that the order is paid, never the merchant's view of it (refunds, keys).
        if matched:
            answer = {"order_id": answer["order_id"], "state": answer["state"]}
        return JSONResponse(answer, status_code=200 if matched else 202)

    add_pages(app, service, api_token, stream_limits or StreamLimits(), ORDERS.inc)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    database_metrics = database_registry(service.database)

    @app.get("/metrics")
    async def metrics(authorization: Auth = None) -> Response:
        # Order and notice counts are the shop's business volume: only with the API
        # credential, and never when the service runs without one.
        if expected is None:
            raise SemopsError(E.UNAUTHENTICATED, "metrics need the API credential")
        authorise(authorization)
        return Response(render_metrics(REGISTRY, database_metrics), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_merchant_app"]
