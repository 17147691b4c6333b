"""Run one service's ASGI apps on several ports in one process, and stop them together.

A processor listens on a public port (wallet, merchant, back office) and on a scheme port
that demands a scheme client certificate (mutual TLS); the router on its scheme port and a
loopback-only operator port. uvicorn's own signal handling assumes one server per process,
so signals are handled here: SIGINT or SIGTERM asks every server to finish its in-flight
requests and exit.

uvicorn does not tell the app who the TLS client is, so every server here runs one small
subclass of uvicorn's HTTP protocol that adds the ASGI "tls" extension to each request's
scope (the client certificate chain as PEM, the TLS version and cipher suite), computed
once per connection; `semops.service.tls.SchemePeerGate` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from semops.service.tls import tls_extension


class TlsScopeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus scope["extensions"]["tls"] on TLS connections."""

    _tls: dict[str, object] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # asyncio (and uvloop) call this after the handshake: the peer certificate is known.
        self._tls = tls_extension(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}  # type: ignore[dict-item]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by serve_all for every server of the process


def make_server(app: Any, *, host: str, port: int, **options: Any) -> uvicorn.Server:
    """A server for `app`; `options` go to uvicorn, except `trusted_proxies`.

    X-Forwarded-For/-Proto are believed only from the addresses in `trusted_proxies` (none
    by default): uvicorn would trust 127.0.0.1, so anyone on the machine, or a local proxy
    passing the header through, could choose the client address a login throttle counts by.
    """
    trusted_proxies: Sequence[str] = tuple(options.pop("trusted_proxies", ()))
    options.setdefault("http", TlsScopeProtocol)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        server_header=False,
        log_level="warning",
        access_log=False,
        lifespan="off",  # the service object is started and stopped around the servers
        timeout_graceful_shutdown=5,
        **options,
    )
    return _Server(config)


async def serve_all(servers: list[uvicorn.Server]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop)
    await asyncio.gather(*(server.serve() for server in servers))
