"""An attacker on the link between a merchant backend and its processor (issue 11, H2).

A plain-HTTP proxy: it forwards every call verbatim to the processor's public port, except
that while `swap_keys` holds a document it answers `GET /v1/merchant/keys` with that
document instead (the attacker's key, with whatever certificate the attacker could make).
Served from its own event loop in a background thread, like wiretap.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Final

import aiohttp
from aiohttp import web

from semops.devnet.processes import free_port

_HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
)
_FORWARD_TIMEOUT_S: Final = 30.0
KEYS_PATH: Final = "/v1/merchant/keys"


class OnPath:
    """`OnPath(target).url` stands where the processor was; set `swap_keys` to attack."""

    def __init__(self, target_url: str) -> None:
        self.target = target_url.rstrip("/")
        self.port = free_port()
        self.swap_keys: dict[str, Any] | None = None
        self.swapped = 0  # key documents answered with the attacker's
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()

        async def forward(request: web.Request) -> web.Response:
            if request.method == "GET" and request.path == KEYS_PATH and self.swap_keys:
                self.swapped += 1
                return web.Response(
                    body=json.dumps(self.swap_keys).encode(), content_type="application/json"
                )
            assert self._session is not None
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            async with self._session.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read() or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=_FORWARD_TIMEOUT_S),
                allow_redirects=False,
            ) as answer:
                body = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
                return web.Response(status=answer.status, body=body, headers=kept)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def close(self) -> None:
        async def stop() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
