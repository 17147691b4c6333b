"""CPU per request of one JOSE route on the server side: FastAPI's full stack against the
lean path (service/lean.py) and a bare ASGI callable, under uvicorn, called through the
services' own aiohttp client (service/http.py), over plain HTTP and over mutual TLS with
the scheme peer gate.

    .venv/bin/python scripts/http_microbench.py [--requests 4000] [--concurrency 16]

Each variant runs in a server process of its own; the figures are that process's CPU time
(user + system, from /proc) and the client's, over the measured requests, per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import Request
from starlette.responses import Response

from semops.core.errors import SemopsError

TOKEN = "eyJhbGciOiJFUzI1NiJ9." + "A" * 560 + "." + "B" * 86
PATH = "/v1/transfers"


def _tls_dir(root: Path) -> Path:
    from semops.devnet.pki import ensure_pki

    ensure_pki(root, {"router": "router", "bank-a": "processor"})
    return root


def build_app(variant: str, tls: bool, root: Path) -> Any:
    from semops.core.clock import Clock
    from semops.crypto.pki import load_certificate_pem
    from semops.service.app import create_app, jose_response, read_jose
    from semops.service.tls import SchemePeerGate, scheme_peer

    class _Clock(Clock):
        def now(self) -> int:
            return int(time.time())

    gate: dict[str, Any] = {
        "root": load_certificate_pem((root / "pki" / "root-ca.crt").read_bytes()),
        "role": "processor",
        "revoked_serials": frozenset,
        "clock": _Clock(),
    }

    async def answer(token: str, scope: Any) -> Response:
        if tls:
            scheme_peer(scope)
        return jose_response(token[::-1])

    if variant == "asgi":

        async def bare(scope: Any, receive: Any, send: Any) -> None:
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            data = body[::-1]
            headers = [(b"content-length", str(len(data)).encode()), (b"content-type", b"a/j")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        return SchemePeerGate(bare, **gate) if tls else bare
    app = create_app("microbench")
    if variant == "fastapi":

        @app.post(PATH)
        async def route(request: Request) -> Response:
            return await answer(await read_jose(request), request.scope)
    else:
        from semops.service.lean import jose_route

        jose_route(app, PATH, answer)
    if tls:
        app.add_front_middleware(SchemePeerGate, **gate)
    return app


def serve(variant: str, tls: bool, root: Path, port: int) -> None:
    from semops.service.server import make_server, serve_all
    from semops.service.tls import TlsFiles, server_options

    options = server_options(TlsFiles.in_directory(root / "router", "router")) if tls else {}
    server = make_server(build_app(variant, tls, root), host="127.0.0.1", port=port, **options)
    asyncio.run(serve_all([server]))


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(url: str, context: ssl.SSLContext | None, count: int, concurrency: int) -> None:
    """`count` calls through the services' own client (service/http.py `Peer.call_jose`)."""
    from semops.service.http import Peer

    peer = Peer(context)
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            answer = await peer.call_jose("POST", url, jose=TOKEN, timeout_s=30)
            assert answer == TOKEN[::-1], answer[:40]

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await peer.close()


def measure(
    variant: str, tls: bool, root: Path, requests: int, concurrency: int
) -> tuple[float, float]:
    """(server, client) CPU µs per request."""
    from semops.service.tls import TlsFiles, client_context

    port = 18000 + os.getpid() % 1000
    command = [sys.executable, __file__, "serve", variant, "tls" if tls else "plain"]
    server = subprocess.Popen([*command, str(root), str(port)])  # noqa: S603 (our own script)
    try:
        context = client_context(TlsFiles.in_directory(root / "bank-a", "bank-a")) if tls else None
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{PATH}"
        for _ in range(100):
            try:
                asyncio.run(drive(url, context, 200, concurrency))  # warm-up
                break
            except SemopsError:
                time.sleep(0.1)
        before, client_before = _cpu_s(server.pid), time.process_time()
        asyncio.run(drive(url, context, requests, concurrency))
        client_s = time.process_time() - client_before
        return (_cpu_s(server.pid) - before) / requests * 1e6, client_s / requests * 1e6
    finally:
        server.terminate()
        server.wait()


def in_process(variant: str, tls: bool, root: Path, requests: int) -> float:
    """CPU µs per request of the app alone: called in a loop with a hand-made scope (the
    TLS extension as our uvicorn protocol fills it in), no sockets, no server."""
    pem = (root / "bank-a" / "bank-a.crt").read_text()
    app = build_app(variant, tls, root)
    body = TOKEN.encode("ascii")

    def scope() -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "https" if tls else "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"content-type", b"application/jose"),
                (b"content-length", b"%d" % len(body)),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
            "state": {},
            "extensions": {"tls": {"client_cert_chain": [pem]}} if tls else {},
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def run() -> float:
        for _ in range(200):
            await app(scope(), receive, send)
        started = time.process_time()
        for _ in range(requests):
            await app(scope(), receive, send)
        return (time.process_time() - started) / requests * 1e6

    return asyncio.run(run())


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        variant, mode, root, port = sys.argv[2:6]
        serve(variant, mode == "tls", Path(root), int(port))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--variants", default="fastapi,lean,asgi")
    parser.add_argument("--in-process", action="store_true", help="the app alone, no server")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        root = _tls_dir(Path(directory))
        for tls in (False, True):
            for variant in arguments.variants.split(","):
                if arguments.in_process:
                    cpu_us = in_process(variant, tls, root, arguments.requests)
                    print(f"{'mTLS ' if tls else 'plain'} {variant:8s} {cpu_us:5.1f} µs CPU")
                    continue
                server_us, client_us = measure(
                    variant, tls, root, arguments.requests, arguments.concurrency
                )
                print(
                    f"{'mTLS ' if tls else 'plain'} {variant:8s} server {server_us:5.0f} µs,"
                    f" client {client_us:5.0f} µs CPU per request"
                )


if __name__ == "__main__":
    main()
