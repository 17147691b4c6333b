"""The processor's HTTP surface: a public app and a scheme app. Thin: each route reads its
body and credential, calls the `Processor`, and answers JSON, a JOSE token or problem+json.

Public (loopback by default), three audiences with three credentials: wallets
(`SEMOPS-Device <JWS DeviceAuth>`; orders and enrolments are signed messages themselves),
merchants (`Bearer <API key>`) and the back office (`Bearer <operator token>`).
Scheme (mutual TLS): the router's calls, every body a router- or processor-signed JWS.
Operator (loopback by default): `/healthz` and `/metrics` (`Bearer <operator token>`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.types import Scope

from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import (
    ID_MAX_CHARS,
    ID_MIN_CHARS,
    PHONE_MAX_CHARS,
    REQUEST_TTL_MAX_S,
    REQUEST_TTL_MIN_S,
)
from semops.processor.backoffice import backoffice_router
from semops.processor.device_calls import calling_device
from semops.processor.service import Processor
from semops.processor.wallet_web import wallet_web_router
from semops.protocol.messages import (
    AmountMinor,
    Currency,
    Digest,
    DisplayName,
    Id,
    PartyId,
    ReasonText,
    Reference,
    Url,
)
from semops.service.app import (
    ServiceApp,
    create_app,
    jose_response,
    problem_response,
    read_jose,
)
from semops.service.lean import jose_route
from semops.service.metrics import database_registry, render_metrics

B = TypeVar("B", bound=BaseModel)

IdPath = Annotated[str, Path(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]
AccountPath = Annotated[str, Path(min_length=1, max_length=34, pattern=r"^[A-Za-z0-9._:+-]+$")]
KidPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._~:-]+$")]
Authorization = Annotated[str | None, Header()]
Phone = Annotated[
    str, StringConstraints(min_length=6, max_length=PHONE_MAX_CHARS, pattern=r"^\+?[0-9]{6,15}$")
]


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class CustomerBody(Body):
    name: DisplayName
    phone: Phone
    currency: Currency
    deposit_minor: AmountMinor | None = None


class DepositBody(Body):
    amount_minor: AmountMinor
    reference: Reference


class MerchantBody(Body):
    merchant_id: PartyId
    display_name: DisplayName
    currency: Currency
    webhook_url: Url | None = None


class RequestBody(Body):
    amount_minor: AmountMinor
    currency: Currency
    idempotency_key: Id
    reference: Reference | None = None
    ttl_s: Annotated[int, Field(ge=REQUEST_TTL_MIN_S, le=REQUEST_TTL_MAX_S)] | None = None
    basket_digest: Digest | None = None


class PersonRequestBody(Body):
    amount_minor: AmountMinor
    currency: Currency
    reference: Reference | None = None
    # Made by the wallet: the same key (and body) again gives the same request back.
    idempotency_key: Id | None = None


class RefundBody(Body):
    refund_id: Id
    amount_minor: AmountMinor
    reason: ReasonText | None = None


def parse_body(model: type[B], raw: bytes) -> B:
    """A JSON body read by hand (it was needed as bytes first, for a signature)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        fields = [".".join(str(part) for part in item["loc"]) for item in error.errors()][:20]
        raise SemopsError(E.VALIDATION_FAILED, f"invalid {', '.join(fields[:3])}") from None


def create_public_app(processor: Processor) -> FastAPI:
    app = create_app(f"SEMOPS processor {processor.settings.processor_id}", version="1")
    _add_health(app, processor)
    _add_wallet(app, processor)
    _add_merchant(app, processor)
    _add_admin(app, processor)
    app.include_router(backoffice_router(processor))
    app.include_router(wallet_web_router(processor))
    return app


def create_scheme_app(processor: Processor) -> FastAPI:
    app = create_app(f"SEMOPS processor {processor.settings.processor_id} (scheme)", version="1")

    async def routed_prepare(token: str, scope: Scope) -> Response:
        return jose_response(await processor.payee.routed_prepare(token))

    async def status(token: str, scope: Scope) -> Response:
        await processor.scheme_status(token)
        return Response(status_code=204)

    # Lean (service/lean.py): a payment's two calls at the payee, kept out of FastAPI's stack.
    jose_route(app, "/v1/scheme/transfers", routed_prepare)
    jose_route(app, "/v1/scheme/status", status, status_code=204)

    @app.post("/v1/scheme/refunds")
    async def refund(request: Request) -> Response:
        return jose_response(await processor.refunds.receive(await read_jose(request)))

    _add_health(app, processor)
    return app


def create_operator_app(processor: Processor) -> FastAPI:
    """The operator port (loopback by default): metrics behind the operator token.

    Metrics count payments, refunds, PIN failures and volumes per outcome; read before and
    after a payment they would tell a payee which processor paid it (DESIGN.md §5), so they
    are never on the public or scheme port and never without the operator's credential."""
    app = create_app(f"SEMOPS processor {processor.settings.processor_id} (operator)", version="1")
    operator = _operator_check(processor)
    _add_health(app, processor)
    database_metrics = database_registry(processor.context.database)

    @app.get("/metrics")
    async def metrics(authorization: Authorization = None) -> Response:
        operator(authorization)
        text = render_metrics(processor.context.metrics.registry, database_metrics)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    return app


def _operator_check(processor: Processor) -> Callable[[str | None], None]:
    expected = b"Bearer " + processor.context.keys.operator_token.encode("ascii")

    def operator(authorization: str | None) -> None:
        given = (authorization or "").encode("utf-8", errors="replace")
        if not hmac.compare_digest(given, expected):
            raise SemopsError(E.UNAUTHENTICATED)

    return operator


def _add_health(app: FastAPI, processor: Processor) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return processor.health()


def _add_wallet(app: ServiceApp, processor: Processor) -> None:
    customers = processor.customers

    async def device(request: Request, authorization: str | None) -> dict[str, Any]:
        return await calling_device(customers, request, authorization)

    @app.get("/v1/wallet/config")
    async def config() -> dict[str, Any]:
        return await processor.wallet_config()

    @app.post("/v1/wallet/enrol")
    async def enrol(request: Request) -> dict[str, Any]:
        return await customers.enrol(await read_jose(request))

    async def order(token: str, scope: Scope) -> Response:
        answer = await processor.payer.submit(token)
        if answer.receipt is not None:
            return jose_response(answer.receipt)
        if answer.error is not None:
            return problem_response(answer.error, scope["path"])
        return JSONResponse({"order_id": answer.order_id, "state": "pending"}, status_code=202)

    # Lean (service/lean.py): a payment's one call at the payer, kept out of FastAPI's stack.
    jose_route(app, "/v1/wallet/orders", order)

    @app.get("/v1/wallet/orders/{order_id}")
    async def order_status(
        order_id: IdPath, request: Request, authorization: Authorization = None
    ) -> dict[str, Any]:
        caller = await device(request, authorization)
        return await processor.payer.order_status(caller["account_id"], order_id)

    @app.get("/v1/wallet/balance")
    async def balance(request: Request, authorization: Authorization = None) -> dict[str, Any]:
        caller = await device(request, authorization)
        return await processor.balance(caller["account_id"])

    @app.get("/v1/wallet/history")
    async def history(request: Request, authorization: Authorization = None) -> dict[str, Any]:
        caller = await device(request, authorization)
        return await processor.history(caller["account_id"])

    @app.post("/v1/wallet/requests", status_code=201)
    async def person_request(
        request: Request, authorization: Authorization = None
    ) -> dict[str, Any]:
        caller = await device(request, authorization)
        body = parse_body(PersonRequestBody, await request.body())
        return await processor.p2p_request(
            caller["account_id"],
            body.amount_minor,
            body.currency,
            body.reference,
            idempotency_key=body.idempotency_key,
        )

    @app.get("/v1/wallet/notices")
    async def notices(request: Request, authorization: Authorization = None) -> JSONResponse:
        caller = await device(request, authorization)
        listed = await customers.notices(caller["account_id"])
        return JSONResponse({"notices": listed}, headers={"Cache-Control": "no-store"})


def _add_merchant(app: FastAPI, processor: Processor) -> None:
    payee = processor.payee

    @app.post("/v1/merchant/requests", status_code=201)
    async def create_request(
        body: RequestBody, authorization: Authorization = None
    ) -> dict[str, Any]:
        merchant = await processor.payees.merchant_for_key(authorization)
        return await payee.create_request(
            merchant,
            amount_minor=body.amount_minor,
            currency=body.currency,
            idempotency_key=body.idempotency_key,
            reference=body.reference,
            ttl_s=body.ttl_s,
            basket_digest=body.basket_digest,
        )

    @app.get("/v1/merchant/requests/{request_id}")
    async def get_request(
        request_id: IdPath, authorization: Authorization = None
    ) -> dict[str, Any]:
        merchant = await processor.payees.merchant_for_key(authorization)
        return await payee.get_request(merchant, request_id)

    @app.post("/v1/merchant/requests/{request_id}/refunds")
    async def refund(
        request_id: IdPath, body: RefundBody, authorization: Authorization = None
    ) -> dict[str, Any]:
        merchant = await processor.payees.merchant_for_key(authorization)
        return await processor.refunds.refund(
            merchant,
            request_id,
            merchant_refund_id=body.refund_id,
            amount_minor=body.amount_minor,
            reason=body.reason,
        )

    @app.get("/v1/merchant/refunds/{refund_id}")
    async def get_refund(refund_id: IdPath, authorization: Authorization = None) -> dict[str, Any]:
        merchant = await processor.payees.merchant_for_key(authorization)
        return await processor.refunds.get_refund(merchant, refund_id)

    @app.get("/v1/merchant/keys")
    async def keys(authorization: Authorization = None) -> dict[str, Any]:
        await processor.payees.merchant_for_key(authorization)
        config = processor.config_document()
        keys = processor.context.keys
        # The certificate lets the merchant chain the key to the scheme root it holds: a key
        # fetched over a link an attacker may sit on is trusted only that way (or pinned).
        # The router-signed directory says whether the key is still the registered one and
        # not revoked: a certificate alone would also vouch for an old or a rogue key.
        return {
            "processor_id": config["processor_id"],
            "signing_key": config["signing_key"],
            "signing_certificate": keys.pem(keys.sign_certificate),
            "directory": config["directory"],
            "router_certificate": config["router_certificate"],
        }


def _add_admin(app: FastAPI, processor: Processor) -> None:
    operator = _operator_check(processor)
    customers = processor.customers

    @app.post("/v1/admin/customers", status_code=201)
    async def create_customer(
        body: CustomerBody, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return await customers.create_customer(
            body.name, body.phone, body.currency, body.deposit_minor
        )

    @app.post("/v1/admin/accounts/{account_id}/deposits")
    async def deposit(
        account_id: AccountPath, body: DepositBody, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return await customers.deposit(account_id, body.amount_minor, body.reference)

    @app.post("/v1/admin/merchants", status_code=201)
    async def create_merchant(
        body: MerchantBody, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return await processor.payees.create_merchant(
            body.merchant_id, body.display_name, body.currency, body.webhook_url
        )

    @app.get("/v1/admin/accounts/{account_id}")
    async def account(
        account_id: AccountPath, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return await customers.account_view(account_id)

    @app.get("/v1/admin/accounts/{account_id}/devices")
    async def devices(
        account_id: AccountPath, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return {"devices": await customers.list_devices(account_id)}

    @app.post("/v1/admin/devices/{kid}/revoke")
    async def revoke(kid: KidPath, authorization: Authorization = None) -> dict[str, Any]:
        operator(authorization)
        return await customers.revoke_device(kid)

    @app.post("/v1/admin/credentials/{account_id}/unlock")
    async def unlock(
        account_id: AccountPath, authorization: Authorization = None
    ) -> dict[str, Any]:
        operator(authorization)
        return await customers.unlock(account_id)

    @app.post("/v1/admin/credentials/{account_id}/reset")
    async def reset(account_id: AccountPath, authorization: Authorization = None) -> dict[str, Any]:
        """Reset a customer's PIN: devices revoked, a new activation code (shown once)."""
        operator(authorization)
        return await customers.reset_credentials(account_id)

    @app.post("/v1/admin/accounts/{account_id}/activation-codes", status_code=201)
    async def activation_code(
        account_id: AccountPath, authorization: Authorization = None
    ) -> dict[str, Any]:
        """A further code for an existing customer (a new phone); enrolling with it proves
        the customer's PIN. Announced to the customer's devices."""
        operator(authorization)
        return await customers.issue_activation_code(account_id)

    @app.get("/v1/admin/position")
    async def position(authorization: Authorization = None) -> dict[str, Any]:
        operator(authorization)
        return await processor.position()


__all__ = ["create_operator_app", "create_public_app", "create_scheme_app"]
