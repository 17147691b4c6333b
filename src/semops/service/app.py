"""What every SEMOPS web service shares: problem+json errors, bounded and strictly
decoded request bodies, and the security headers of every answer.

Every error leaves a service as RFC 9457 problem+json carrying the stable `code` of the
error registry. Validation errors name the field and the rule, never the refused value
(it may be a PIN or a credential). An unexpected exception becomes a bare 500 `internal`
with no detail: the traceback goes to the log, not to the caller. Bodies above the route's
bound are refused with 413 before they are read into memory. A JSON body with a key twice
in one object is refused with 400 `malformed` before any route reads it, whichever parser
that route uses (FastAPI's, pydantic's or the core's). Every answer carries
`X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, a Content-Security-Policy
that allows nothing (`default-src 'none'; frame-ancestors 'none'`: JSON, SVG and PNG need
nothing) and `Cache-Control: no-store`, unless the route set its own (pages send a CSP
of their own; static files may be cached).

`create_app` gives a `ServiceApp`: FastAPI, plus a table of lean routes served in front of
FastAPI's stack (service/lean.py: the hot scheme and order routes, with the same checks
and answers but none of the per-request routing, dependency and middleware machinery), and
middleware that runs in front of both (the scheme peer gate). FastAPI still declares every
route, so the OpenAPI document is unchanged, and serves everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from semops.core.encoding import refuse_duplicate_keys
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


class ServerErrors:
    """What Starlette's ServerErrorMiddleware does with `_unexpected` as its handler, for
    what runs outside FastAPI's stack: an exception before the answer started becomes a bare
    500 `internal` (logged, no security headers: that middleware is outside them too), and
    is raised on for the server to log. Inside, FastAPI's own has answered already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception as error:
            if started or scope["type"] != "http":
                raise
            response = await _unexpected(Request(scope), error)
            await response(scope, receive, send)
            raise


class ServiceApp(FastAPI):
    """FastAPI with lean routes in front of its stack and middleware in front of both.

    `lean_routes` maps (method, exact path) to an ASGI app that answers that route itself
    (service/lean.py registers them, and declares each in FastAPI too); every other request,
    and every request under a root path, goes through FastAPI as before."""

    def __init__(self, *, body_max_bytes: int = MESSAGE_MAX_BYTES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.body_max_bytes = body_max_bytes
        self.lean_routes: dict[tuple[str, str], ASGIApp] = {}
        self._front: list[tuple[Callable[..., ASGIApp], dict[str, Any]]] = []
        self._entry: ASGIApp | None = None

    def add_front_middleware(self, factory: Callable[..., ASGIApp], **options: Any) -> None:
        """Middleware around the lean routes and FastAPI's stack alike (the last added runs
        first); unexpected errors in it answer 500 `internal` as inside FastAPI's stack."""
        if self._entry is not None:
            raise RuntimeError("middleware cannot be added once the app has served")
        self._front.append((factory, options))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._entry is None:
            entry: ASGIApp = self._dispatch
            for factory, options in self._front:
                entry = factory(entry, **options)
            self._entry = ServerErrors(entry)
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.root_path and not scope.get("root_path"):
            lean = self.lean_routes.get((scope["method"], scope["path"]))
            if lean is not None:
                await lean(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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


_UTF8_BOM: Final = b"\xef\xbb\xbf"


class StrictJson:
    """Refuse (400 `malformed`) a JSON body with a duplicate key, before any route reads it.

    A body is looked at as JSON when it starts with `{` or `[` (whatever its declared type:
    FastAPI reads a body without a content type as JSON, and some routes parse bytes by
    hand); anything else passes through untouched and unbuffered. Runs inside BodyLimit, so
    what it buffers is bounded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received: list[Message] = []
        try:
            await self._check(receive, received)
        except SemopsError as error:  # a duplicate key, or a body over BodyLimit's bound
            await _send_problem(send, error)
            return

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _check(receive: Receive, received: list[Message]) -> None:
        """Read up to the first byte that is not white space; if it opens JSON, read the
        whole body and refuse a duplicate key. `received` keeps what was read, to replay."""
        body, more = b"", True
        while more and not body.lstrip():
            message = await receive()
            received.append(message)
            body += message.get("body", b"")
            more = message["type"] == "http.request" and message.get("more_body", False)
        start = body.lstrip()
        if start.startswith(_UTF8_BOM):
            # RFC 8259 §8.1: JSON text carries no byte order mark. Python's json.loads (and so
            # FastAPI) skips one, so a BOM in front would carry duplicates past this check.
            raise SemopsError(E.MALFORMED, "a JSON body starts with no byte order mark")
        if start[:1] not in (b"{", b"["):
            return
        while more:
            message = await receive()
            received.append(message)
            body += message.get("body", b"")
            more = message["type"] == "http.request" and message.get("more_body", False)
        refuse_duplicate_keys(body)


SECURITY_HEADERS: Final = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
)


def with_security_headers(headers: Any) -> list[tuple[bytes, bytes]]:
    """`headers` and each of SECURITY_HEADERS that `headers` does not carry already."""
    merged = list(headers)
    present = {name.lower() for name, _ in merged}
    merged += [(name, value) for name, value in SECURITY_HEADERS if name not in present]
    return merged


class SecurityHeaders:
    """Add each of SECURITY_HEADERS to an answer that does not carry that header already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": with_security_headers(message.get("headers", ()))}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_too_large(send: Send, max_bytes: int) -> None:
    await _send_problem(send, SemopsError(E.TOO_LARGE, f"body larger than {max_bytes} bytes"))


async def _send_problem(send: Send, error: SemopsError) -> None:
    response = problem_response(error)
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


def create_app(title: str, *, max_body_bytes: int = MESSAGE_MAX_BYTES, **kwargs: Any) -> ServiceApp:
    app = ServiceApp(title=title, body_max_bytes=max_body_bytes, **kwargs)
    app.add_exception_handler(SemopsError, _semops_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    # The last added runs first: headers on every answer, then the size bound, then JSON.
    app.add_middleware(StrictJson)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


async def read_jose(request: Request) -> str:
    """The compact JWS/JWE a route takes as its body (`application/jose`, RFC 7515 §9.2)."""
    return jose_text(await request.body())


def jose_text(body: bytes) -> str:
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError as error:
        raise SemopsError(E.MALFORMED, "the body is not a compact JOSE token") from error


def jose_response(token: str, status_code: int = 200) -> Response:
    return Response(token, status_code=status_code, media_type=JOSE)
