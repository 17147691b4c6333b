"""Lean routes (service/lean.py) answer exactly as the same route through FastAPI's stack.

Each case drives one raw ASGI request, split into the given body chunks, once through the
lean table and once through FastAPI (the same app, the same handler), and compares the
status, the headers in order and the body byte for byte; then the scheme ports: nothing
lean is reachable without the scheme certificate the port demands.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from unittest import mock

import pytest
from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Scope

from semops.core.errors import E, SemopsError
from semops.router.app import create_scheme_app as router_scheme_app
from semops.service.app import ServiceApp, create_app, jose_response
from semops.service.lean import jose_route

LIMIT = 64
TOKEN = b"eyJhbGciOiJFUzI1NiJ9.eyJ4IjoxfQ.c2ln"


async def _handler(token: str, scope: Scope) -> Response:
    if token == "fail":
        raise SemopsError(E.UNAVAILABLE, "not now")
    if token == "refuse":
        raise SemopsError(E.FORBIDDEN)
    if token == "crash":
        raise RuntimeError("a bug")
    if token == "none":
        return Response(status_code=204)
    if token == "later":
        return JSONResponse({"state": "pending"}, status_code=202)
    return jose_response(token[::-1] or "empty")


def _app() -> ServiceApp:
    app = create_app("probe", max_body_bytes=LIMIT)
    jose_route(app, "/jose", _handler)
    return app


def _fastapi_path(app: ServiceApp) -> ASGIApp:
    async def call(scope: Any, receive: Any, send: Any) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return call


def _drive(
    app: ASGIApp, chunks: list[bytes], headers: list[tuple[bytes, bytes]], *, disconnect: bool
) -> tuple[Any, list[dict[str, Any]]]:
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/jose",
        "raw_path": b"/jose",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"probe"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> Any:
        try:
            await app(scope, receive, send)
        except Exception as error:
            return type(error)
        return None

    return asyncio.run(run()), sent


CASES: list[tuple[str, list[bytes], list[tuple[bytes, bytes]]]] = [
    ("token", [TOKEN], []),
    ("token in chunks", [TOKEN[:5], TOKEN[5:20], TOKEN[20:]], []),
    ("padded token", [b"  \n", b"  " + TOKEN + b"\n"], []),
    ("empty", [b""], []),
    ("only white space", [b"  ", b"\n\t"], []),
    ("not ascii", ["é.x.y".encode()], []),
    ("a refusal", [b"refuse"], []),
    ("unavailable, Retry-After", [b"fail"], []),
    ("a bug", [b"crash"], []),
    ("no content", [b"none"], []),
    ("202 JSON", [b"later"], []),
    ("JSON, duplicate key", [b'{"a": 1, "a": 2}'], [(b"content-type", b"application/json")]),
    ("JSON in chunks, duplicate", [b" ", b'{"a": 1,', b' "a": 2}'], []),
    ("JSON, no duplicate", [b'{"a": 1}'], []),
    ("array, duplicate", [b'[{"k": 1, "k": 1}]'], []),
    ("byte order mark", [b"\xef\xbb\xbf" + TOKEN], []),
    ("byte order mark split", [b"\xef", b"\xbb\xbf{}"], []),
    ("content length over", [TOKEN], [(b"content-length", b"65")]),
    ("content length not a number", [TOKEN], [(b"content-length", b"-1")]),
    ("content length fine", [TOKEN], [(b"content-length", str(len(TOKEN)).encode())]),
    ("streamed over, token", [TOKEN, b"x" * LIMIT], []),
    ("streamed over, at once", [b"x" * (LIMIT + 1)], []),
    ("streamed over, white space first", [b" " * 40, b" " * 40], []),
    ("streamed over, JSON", [b'{"a": "', b"x" * LIMIT], []),
    ("non-JSON after white space", [b"   ", b"a=1&a=2"], []),
]


@pytest.mark.parametrize("disconnect", [False, True])
@pytest.mark.parametrize(("name", "chunks", "headers"), CASES, ids=[case[0] for case in CASES])
def test_the_lean_path_answers_as_fastapi_does(
    name: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]], disconnect: bool
) -> None:
    app = _app()
    with mock.patch("semops.service.app.log") as lean_log:
        lean = _drive(app, chunks, headers, disconnect=disconnect)
    with mock.patch("semops.service.app.log") as full_log:
        full = _drive(_fastapi_path(app), chunks, headers, disconnect=disconnect)
    assert lean == full
    assert lean_log.mock_calls == full_log.mock_calls
    assert ("lean", "/jose") not in app.lean_routes  # sanity: the table is (method, path)
    assert ("POST", "/jose") in app.lean_routes


def test_a_bug_and_a_disconnect_are_raised_on_as_before() -> None:
    app = _app()
    with mock.patch("semops.service.app.log") as lean_log:
        raised, sent = _drive(app, [b"crash"], [], disconnect=False)
    assert raised is RuntimeError
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"])["code"] == "internal"
    lean_log.error.assert_called_once()
    raised, _ = _drive(app, [TOKEN], [], disconnect=True)
    assert raised is ClientDisconnect


def test_the_route_stays_declared_for_openapi_and_a_root_path() -> None:
    app = _app()
    operation = app.openapi()["paths"]["/jose"]["post"]
    assert operation["operationId"] == "_handler_jose_post"
    raised, sent = _drive(app, [TOKEN], [], disconnect=False)
    assert raised is None
    assert sent[1]["body"] == TOKEN[::-1]


def _router_scheme_app() -> tuple[ServiceApp, mock.MagicMock]:
    router = mock.MagicMock()
    router.revoked_serials = set()
    router.clock.now.return_value = 0
    app = router_scheme_app(router, mock.MagicMock())
    assert isinstance(app, ServiceApp)
    return app, router


def test_the_router_prepare_is_not_reachable_without_a_scheme_certificate() -> None:
    app, router = _router_scheme_app()
    for path in ("/v1/transfers", "/v1/directory"):
        scope_path = {"path": path, "raw_path": path.encode()}
        raised, sent = _drive_path(app, scope_path)
        assert raised is None
        assert sent[0]["status"] == 401
        assert json.loads(sent[1]["body"])["code"] == "certificate_invalid"
    router.prepare.assert_not_called()


def _drive_path(app: ASGIApp, overrides: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        scope.update(overrides)
        if overrides["path"] != "/v1/transfers":
            scope["method"] = "GET"
        await app(scope, receive, send)

    return _drive(wrapped, [TOKEN], [], disconnect=False)
