"""A wiretap on the scheme's links: what an attacker at a TLS terminator sees.

DESIGN.md §6: every message is signed at the message level because a TLS terminator must
not be able to forge a payment. This tap *is* such a terminator: on each tapped link it
presents the receiver's certificate to the sender (so the sender's mutual-TLS check holds),
calls the real receiver, and records every request and answer verbatim. It never changes
a message; the tests take the recorded tokens and replay or tamper with them later.

A plain-HTTP `recorder` stands in for a merchant's webhook and records what it receives.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from dataclasses import dataclass
from typing import Final

import aiohttp
from aiohttp import web

from semops.service.tls import TlsFiles, client_context

_HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
)
_FORWARD_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Exchange:
    """One call that passed a tapped link: the request and the answer, verbatim."""

    link: str
    method: str
    path: str
    request_body: str
    status: int
    response_body: str


class Wiretap:
    """Tapped links and webhook recorders, served from one background event loop."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []
        self._sessions: list[aiohttp.ClientSession] = []
        self._thread.start()

    def _run(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)  # type: ignore[arg-type]

    def tap(
        self, link: str, port: int, target_url: str, *, server: TlsFiles, client: TlsFiles
    ) -> None:
        """Listen on `port` with the receiver's certificate; forward to `target_url`."""
        self._run(self._tap(link, port, target_url.rstrip("/"), server, client))

    def recorder(self, link: str, port: int) -> None:
        """A webhook that records every body and answers 200."""
        self._run(self._recorder(link, port))

    async def _tap(
        self, link: str, port: int, target: str, server: TlsFiles, client: TlsFiles
    ) -> None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context(client)))
        self._sessions.append(session)

        async def forward(request: web.Request) -> web.Response:
            body = await request.read()
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            async with session.request(
                request.method,
                target + request.path_qs,
                data=body or None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=_FORWARD_TIMEOUT_S),
            ) as answer:
                answer_body = await answer.read()
                answer_headers = {
                    k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS
                }
                status = answer.status
            self._record(
                Exchange(
                    link,
                    request.method,
                    request.path,
                    body.decode("utf-8", "replace"),
                    status,
                    answer_body.decode("utf-8", "replace"),
                )
            )
            return web.Response(status=status, body=answer_body, headers=answer_headers)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(server.certificate), str(server.private_key))
        context.load_verify_locations(str(server.root_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        await self._serve(forward, port, context)

    async def _recorder(self, link: str, port: int) -> None:
        async def record(request: web.Request) -> web.Response:
            body = (await request.read()).decode("utf-8", "replace")
            self._record(Exchange(link, request.method, request.path, body, 200, ""))
            return web.Response(status=200)

        await self._serve(record, port, None)

    async def _serve(self, handler: object, port: int, context: ssl.SSLContext | None) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", handler)  # type: ignore[arg-type]
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
        self._runners.append(runner)

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def captured(self, link: str, path: str) -> list[Exchange]:
        """Every exchange on `link` whose path starts with `path`, oldest first."""
        with self._lock:
            return [x for x in self.exchanges if x.link == link and x.path.startswith(path)]

    def close(self) -> None:
        async def shutdown() -> None:
            for session in self._sessions:
                await session.close()
            for runner in self._runners:
                await runner.cleanup()

        self._run(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
