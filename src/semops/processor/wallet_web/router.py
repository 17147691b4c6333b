"""The web wallet's routes: the pages, their static files, and the API calls they need.

Pages are shells: the same HTML for everybody, no personal data, so the server needs no
session to render them. What is personal (name, balance, history, devices) the page
fetches with a `SEMOPS-Device` authorisation signed by the key in the browser. Every
response carries a strict Content-Security-Policy (scripts and styles from this origin
only, nothing inline, nothing from anywhere else), `nosniff`, `no-referrer`, and
`no-store` where it could hold personal data.

Why the request is verified by the processor and not in the page: the page's code comes
from this same processor, so a key list the page fetched from it would be trusted exactly
as much as the processor's own check, and checking the router-signed directory in the
browser would need X.509 path validation in JavaScript. `POST /v1/wallet/verify` therefore
checks the token against the processor's verified directory (signature, signer, expiry,
payee processor active) and returns the claims with the key that signed them; the page
then checks the JWS signature itself with that key and shows the claims it read from the
signed token, so a fault on either side cannot show one payee and pay another.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import jinja2
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from semops.core.errors import E, SemopsError
from semops.core.money import CURRENCY_SCALES
from semops.processor.device_calls import calling_device
from semops.processor.service import Processor
from semops.processor.wallet_web.devices import (
    account_devices,
    new_activation_code,
    revoke_own_device,
)
from semops.processor.wallet_web.images import PAY_LINK_MAX_CHARS, decode_qr, pay_link_svg
from semops.protocol import PaymentRequest
from semops.protocol.messages import (
    AccountId,
    Kid,
    RequestToken,
    SealedPart,
    Timestamp,
)

HERE: Final = Path(__file__).resolve().parent
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE: Final = {"Cache-Control": "no-store"}
# Page name -> (template, title). "" is the home page at /wallet/.
PAGES: Final = {
    "": ("home.html", "Your wallet"),
    "enrol": ("enrol.html", "Set up this device"),
    "pay": ("pay.html", "Pay"),
    "history": ("history.html", "History"),
    "devices": ("devices.html", "Your devices"),
    "request": ("request.html", "Request money"),
}
STATIC_TYPES: Final = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
STATIC_FILES: Final = ("wallet.css", "jose.js", "store.js", "wallet.js")

Authorization = Annotated[str | None, Header()]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VerifyBody(_Body):
    token: RequestToken


class RevokeBody(_Body):
    kid: Kid


class NewDeviceBody(_Body):
    purpose: Literal["new_device"]
    account_id: AccountId
    created_at: Timestamp
    expires_at: Timestamp
    pin_block: SealedPart


def _parse(model: type[_Body], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        fields = [".".join(str(part) for part in item["loc"]) for item in error.errors()][:3]
        code = E.TOKEN_INVALID if fields == ["token"] else E.VALIDATION_FAILED
        raise SemopsError(code, f"invalid {', '.join(fields) or 'body'}") from None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _static_files() -> dict[str, tuple[bytes, str]]:
    files = {}
    for name in STATIC_FILES:
        path = HERE / "static" / name
        files[name] = (path.read_bytes(), STATIC_TYPES[path.suffix])
    return files


def _private_json(document: dict[str, Any], status_code: int = 200) -> JSONResponse:
    return JSONResponse(document, status_code=status_code, headers=NO_STORE)


def wallet_web_router(processor: Processor) -> APIRouter:
    router = APIRouter()
    _add_pages(router, processor)
    _add_api(router, processor)
    return router


def _add_pages(router: APIRouter, processor: Processor) -> None:
    environment = _environment()
    static = _static_files()
    settings = processor.settings
    scales = json.dumps(CURRENCY_SCALES, separators=(",", ":"), sort_keys=True)

    def page(name: str) -> Response:
        if name not in PAGES:
            raise SemopsError(E.NOT_FOUND, "no such page")
        template, title = PAGES[name]
        html = environment.get_template(template).render(
            page=name or "home",
            title=title,
            processor_name=settings.display_name,
            processor_id=settings.processor_id,
            scales=scales,
            link_max_chars=PAY_LINK_MAX_CHARS,
        )
        return HTMLResponse(html, headers={**SECURITY_HEADERS, **NO_STORE})

    @router.get("/wallet", include_in_schema=False)
    async def wallet_root() -> Response:
        return RedirectResponse("/wallet/", status_code=308)

    @router.get("/wallet/", include_in_schema=False)
    async def home() -> Response:
        return page("")

    @router.get("/wallet/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            raise SemopsError(E.NOT_FOUND, "no such file")
        content, media_type = static[name]
        return Response(
            content,
            media_type=media_type,
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    @router.get("/wallet/qr.svg", include_in_schema=False)
    async def qr_svg(link: Annotated[str, Query(max_length=PAY_LINK_MAX_CHARS)]) -> Response:
        # Public: it draws a link the page already shows, and only a payment link.
        return Response(pay_link_svg(link), media_type="image/svg+xml", headers=SECURITY_HEADERS)

    @router.get("/wallet/{name}", include_in_schema=False)
    async def named_page(name: str) -> Response:
        return page(name)


def _add_api(router: APIRouter, processor: Processor) -> None:
    customers = processor.customers

    async def device(request: Request, authorization: str | None) -> dict[str, Any]:
        return await calling_device(customers, request, authorization)

    @router.post("/v1/wallet/verify")
    async def verify(request: Request, authorization: Authorization = None) -> Response:
        """The request in `token`, checked against the directory, and who signed it."""
        await device(request, authorization)
        body: VerifyBody = _parse(VerifyBody, await request.body())
        signed = await processor.directory.open(body.token, PaymentRequest)
        payment = signed.message
        if payment.payee_processor == processor.settings.processor_id:
            processor_name = processor.settings.display_name
        else:
            entry = await processor.directory.active_entry(payment.payee_processor)
            processor_name = entry.display_name
        return _private_json(
            {
                "request": payment.model_dump(mode="json", by_alias=False, exclude_none=True),
                "payee_processor_name": processor_name,
                "signer": {"kid": signed.signer.kid, "jwk": signed.signer.jwk},
            }
        )

    @router.post("/v1/wallet/qr")
    async def read_qr(request: Request, authorization: Authorization = None) -> Response:
        """The text of the QR code in the image sent as the body."""
        await device(request, authorization)
        text = await asyncio.to_thread(decode_qr, await request.body())
        return _private_json({"text": text})

    @router.get("/v1/wallet/devices")
    async def devices(request: Request, authorization: Authorization = None) -> Response:
        caller = await device(request, authorization)
        listed = await account_devices(processor, caller["account_id"])
        return _private_json({"devices": listed, "this_device": caller["kid"]})

    @router.post("/v1/wallet/devices/revoke")
    async def revoke(request: Request, authorization: Authorization = None) -> Response:
        caller = await device(request, authorization)
        body: RevokeBody = _parse(RevokeBody, await request.body())
        revoked = await revoke_own_device(processor, caller["account_id"], body.kid)
        return _private_json(revoked)

    @router.post("/v1/wallet/devices/activation-codes", status_code=201)
    async def activation_code(request: Request, authorization: Authorization = None) -> Response:
        """A code to enrol another device on this account; the PIN must approve it."""
        caller = await device(request, authorization)
        body: NewDeviceBody = _parse(NewDeviceBody, await request.body())
        issued = await new_activation_code(
            processor, caller["account_id"], caller["kid"], body.model_dump()
        )
        return _private_json(issued, status_code=201)


__all__ = ["CONTENT_SECURITY_POLICY", "PAGES", "wallet_web_router"]
