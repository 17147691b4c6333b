"""What every SEMOPS web service shares: problem+json errors and bounded request bodies.

Every error leaves a service as RFC 9457 problem+json carrying the stable `code` of the
error registry. Validation errors name the field and the rule, never the refused value
(it may be a PIN or a credential). An unexpected exception becomes a bare 500 `internal`
with no detail: the traceback goes to the log, not to the caller. Bodies above the route's
bound are refused with 413 before they are read into memory.
"""

from __future__ import annotations

from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from semops.core.errors import E, ErrorSpec, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES

PROBLEM_JSON: Final = "application/problem+json"
JOSE: Final = "application/jose"

log = structlog.get_logger("semops.service")

_STATUS_TO_SPEC: Final[dict[int, ErrorSpec]] = {
    400: E.MALFORMED,
    401: E.UNAUTHENTICATED,
    403: E.FORBIDDEN,
    404: E.NOT_FOUND,
    405: E.NOT_FOUND,
    413: E.TOO_LARGE,
    415: E.MALFORMED,
    422: E.VALIDATION_FAILED,
}


def problem_response(error: SemopsError, instance: str | None = None) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.spec.http_status == 503 else None
    return JSONResponse(
        error.to_problem(instance),
        status_code=error.spec.http_status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


async def _semops_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, SemopsError)
    return problem_response(error, request.url.path)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    fields = [
        {
            "field": ".".join(str(part) for part in item.get("loc", ())),
            "problem": str(item.get("type", "invalid")),
        }
        for item in error.errors()
    ][:20]
    detail = "; ".join(f"{item['field']}: {item['problem']}" for item in fields[:3])
    return problem_response(SemopsError(E.VALIDATION_FAILED, detail, errors=fields))


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    spec = _STATUS_TO_SPEC.get(error.status_code, E.MALFORMED)
    return problem_response(SemopsError(spec), request.url.path)


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, error_type=type(error).__name__)
    return problem_response(SemopsError(E.INTERNAL), request.url.path)


class BodyLimit:
    """Refuse bodies over `max_bytes` (413) by Content-Length and while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int = MESSAGE_MAX_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _send_too_large(send, self.max_bytes)
                return
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise SemopsError(E.TOO_LARGE, f"body larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, bounded_receive, send)


async def _send_too_large(send: Send, max_bytes: int) -> None:
    response = problem_response(SemopsError(E.TOO_LARGE, f"body larger than {max_bytes} bytes"))
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def create_app(title: str, *, max_body_bytes: int = MESSAGE_MAX_BYTES, **kwargs: Any) -> FastAPI:
    app = FastAPI(title=title, **kwargs)
    app.add_exception_handler(SemopsError, _semops_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app


async def read_jose(request: Request) -> str:
    """The compact JWS/JWE a route takes as its body (`application/jose`, RFC 7515 §9.2)."""
    body = await request.body()
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError as error:
        raise SemopsError(E.MALFORMED, "the body is not a compact JOSE token") from error


def jose_response(token: str, status_code: int = 200) -> Response:
    return Response(token, status_code=status_code, media_type=JOSE)
