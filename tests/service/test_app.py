"""The shared kit of every service app: strict JSON bodies and the security headers."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from semops.core.encoding import refuse_duplicate_keys
from semops.core.errors import SemopsError
from semops.service.app import create_app


class Body(BaseModel):
    amount_minor: int


def _app() -> Any:
    app = create_app("probe", max_body_bytes=1024)

    @app.post("/model")
    async def model(body: Body) -> dict[str, int]:
        return {"amount_minor": body.amount_minor}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"length": len(await request.body())}

    @app.get("/page")
    async def page() -> Response:
        headers = {"Content-Security-Policy": "default-src 'self'", "Cache-Control": "no-cache"}
        return Response("<p>hi</p>", media_type="text/html", headers=headers)

    return app


def _call(method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount_minor": 1, "amount_minor": 2}',
        b'  \n{"x": {"a": 1, "a": 1}}',
        b'[{"k": 1}, {"k": 2, "k": 3}]',
        # Found in review: json.loads skips a byte order mark, so one in front carried
        # duplicates past the check. JSON text has none (RFC 8259 §8.1): refused.
        b'\xef\xbb\xbf{"amount_minor": 1, "amount_minor": 2}',
        b'\xef\xbb\xbf{"amount_minor": 1}',
    ],
)
@pytest.mark.parametrize("path", ["/model", "/raw"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_a_duplicate_key_is_refused_whatever_the_route_and_the_declared_type(
    body: bytes, path: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = _call("POST", path, content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["code"] == "malformed"
    assert answer.headers["content-type"] == "application/problem+json"


def test_bodies_without_duplicates_and_other_bodies_pass_untouched() -> None:
    assert _call("POST", "/model", json={"amount_minor": 7}).json() == {"amount_minor": 7}
    for body in (b"eyJhbGciOi.x.y", b"a=1&a=2", b"\x89PNG\r\n\x1a\n" + bytes(100), b""):
        answer = _call("POST", "/raw", content=body)
        assert answer.json() == {"length": len(body)}
    # Not JSON after all: left to the route (FastAPI's own 422 here).
    assert _call("POST", "/model", content=b"{not json").status_code == 422


def test_an_oversized_json_body_is_still_413() -> None:
    answer = _call("POST", "/raw", content=b"{" + b" " * 2048 + b"}")
    assert answer.status_code == 413
    assert answer.json()["code"] == "too_large"


def test_every_answer_carries_the_security_headers_unless_the_route_set_its_own() -> None:
    for answer in (
        _call("POST", "/model", json={"amount_minor": 1}),
        _call("GET", "/nowhere"),
        _call("POST", "/model", content=b'{"amount_minor": 1, "amount_minor": 1}'),
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert (
            answer.headers["content-security-policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
        assert answer.headers["cache-control"] == "no-store"
    page = _call("GET", "/page")
    assert page.headers["content-security-policy"] == "default-src 'self'"
    assert page.headers["cache-control"] == "no-cache"
    assert page.headers["x-content-type-options"] == "nosniff"


def test_refuse_duplicate_keys_is_quiet_about_what_is_not_json() -> None:
    refuse_duplicate_keys(b'{"a": 1, "b": {"a": 2}}')
    refuse_duplicate_keys(b"not json at all")
    with pytest.raises(SemopsError) as refused:
        refuse_duplicate_keys(b'{"a": 1, "a": 1}')
    assert refused.value.code == "malformed"
