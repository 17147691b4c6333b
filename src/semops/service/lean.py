"""Lean routes: a JOSE-in route answered in front of FastAPI's stack, with the same checks.

A payment crosses four hot routes (the wallet's order, the router's prepare, the payee's
routed prepare and its TransferStatus). Through FastAPI each request passes routing,
dependency resolution, Starlette's error and exception middleware, FastAPI's telemetry,
body-limit and exit-stack layers and this kit's three middlewares: about 75 µs of CPU
per request on the reference machine (`scripts/http_microbench.py`), for routes that need
none of it (no parameters, no model, a JOSE token in and out). `jose_route` serves such a
route as one ASGI callable doing what that stack does for it, in the same order:

- the body bound (service/app.py `BodyLimit`): a Content-Length over it, or not a number,
  413 before anything is read; a body growing past it while read, 413;
- the duplicate-key check (`StrictJson`): a body starting with a byte order mark is 400,
  one that opens JSON (`{` or `[`) with a key twice is 400 — these answers, like
  BodyLimit's, carry no `instance`, as StrictJson's do;
- the body read as the route did (`read_jose`: ASCII or 400 `malformed`), the handler,
  a `SemopsError` from either answered as the exception handler does (with `instance`);
- the security headers on every answer (`SecurityHeaders`), and an unexpected exception a
  bare 500 `internal` by `ServerErrors`, as Starlette's ServerErrorMiddleware did.

What runs in front of FastAPI (the scheme peer gate, `ServiceApp.add_front_middleware`, or
a gate wrapped around the whole app) runs in front of these too. FastAPI keeps each route
declared, with the same handler, for the OpenAPI document and for what the table does not
take (a root path). No route here records HTTP metrics: FastAPI's telemetry is off in
SEMOPS, and the counters of payments are bumped by the handlers, on either path.
`tests/service/test_lean.py` sends the same requests down both paths and compares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from semops.core.encoding import refuse_duplicate_keys
from semops.core.errors import E, SemopsError
from semops.service.app import (
    ServiceApp,
    jose_text,
    problem_response,
    read_jose,
    with_security_headers,
)

JoseHandler = Callable[[str, Scope], Awaitable[Response]]
"""A route's work: the JOSE token of the body and the request's scope in, an answer out."""

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_JSON_OPENERS: Final = (b"{", b"[")


class _Refused(Exception):
    """A refusal of the body checks that run before the route (answered without instance)."""

    def __init__(self, error: SemopsError) -> None:
        super().__init__(error.code)
        self.error = error


def jose_route(app: ServiceApp, path: str, handler: JoseHandler, **route_options: Any) -> None:
    """Serve POST `path` with `handler`, lean; declare it in FastAPI with the same handler
    (`route_options` go to FastAPI: status code, responses, for the OpenAPI document)."""
    # The table matches exact paths: a path parameter would be FastAPI's to parse and check.
    assert "{" not in path, path

    async def endpoint(request: Request) -> Response:
        return await handler(await read_jose(request), request.scope)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    app.add_api_route(path, endpoint, methods=["POST"], **route_options)
    app.lean_routes[("POST", path)] = LeanJoseRoute(handler, app.body_max_bytes)


class LeanJoseRoute:
    """The ASGI app of one lean route (see the module's comment for what it checks)."""

    def __init__(self, handler: JoseHandler, body_max_bytes: int) -> None:
        self.handler = handler
        self.body_max_bytes = body_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._answer(scope, receive)
        except _Refused as refused:
            response = problem_response(refused.error)
        except SemopsError as error:
            response = problem_response(error, scope["path"])
        headers = with_security_headers(response.raw_headers)
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _answer(self, scope: Scope, receive: Receive) -> Response:
        limit = self.body_max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                raise _Refused(SemopsError(E.TOO_LARGE, f"body larger than {limit} bytes"))
        body = await self._read_body(receive)
        return await self.handler(jose_text(body), scope)

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, refused as BodyLimit and StrictJson refuse it. StrictJson reads
        up to the first byte that is not white space, and all of a body that opens JSON;
        its refusals carry no instance (_Refused). The rest the route read, and a body over
        the bound there was the route's error (with instance)."""
        limit = self.body_max_bytes
        chunks: list[bytes] = []
        received, more, phase = 0, True, _START
        while more:
            message: Message = await receive()
            if message["type"] != "http.request":
                if phase == _JSON:  # StrictJson checks what came; the route's read raises
                    _refuse_duplicates(b"".join(chunks))
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                error = SemopsError(E.TOO_LARGE, f"body larger than {limit} bytes")
                raise error if phase == _ROUTE else _Refused(error)
            chunks.append(chunk)
            more = message.get("more_body", False)
            if phase == _START and chunk.strip():
                phase = _phase_after_start(b"".join(chunks).lstrip())
        body = b"".join(chunks)
        if phase == _JSON:
            _refuse_duplicates(body)
        return body


_START, _JSON, _ROUTE = "start", "json", "route"


def _phase_after_start(start: bytes) -> str:
    """StrictJson's look at the first bytes that are not white space: a byte order mark is
    refused; a body opening JSON is StrictJson's to read whole, anything else the route's."""
    if start.startswith(_UTF8_BOM):
        raise _Refused(SemopsError(E.MALFORMED, "a JSON body starts with no byte order mark"))
    return _JSON if start[:1] in _JSON_OPENERS else _ROUTE


def _refuse_duplicates(body: bytes) -> None:
    try:
        refuse_duplicate_keys(body)
    except SemopsError as error:
        raise _Refused(error) from None


__all__ = ["JoseHandler", "LeanJoseRoute", "jose_route"]
