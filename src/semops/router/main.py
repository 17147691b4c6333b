"""Start the router: keys from its data directory, migrations, servers, background work."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import structlog

from semops.core.clock import Clock
from semops.crypto import KeyUse, private_key_for
from semops.crypto.pki import load_certificate_pem
from semops.router.app import create_operator_app, create_scheme_app
from semops.router.service import Router, RouterIdentity
from semops.router.settlement import Settlement
from semops.service.clock import SystemClock
from semops.service.files import ensure_token, read_private_key
from semops.service.http import Peer
from semops.service.logs import configure_logging
from semops.service.server import make_server, serve_all
from semops.service.tls import TlsFiles, client_context, server_options
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade

log = structlog.get_logger("semops.router")


@dataclass(frozen=True, slots=True)
class RouterSettings:
    data_dir: Path
    router_id: str = "router"
    display_name: str = "SEMOPS Router"
    host: str = "127.0.0.1"
    port: int = 8400
    operator_port: int = 8401
    db_url: str | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir / f"{self.router_id}.db")

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles.in_directory(self.data_dir, self.router_id)


def load_identity(settings: RouterSettings) -> RouterIdentity:
    directory, name = settings.data_dir, settings.router_id
    sign_key = private_key_for(name, KeyUse.SIGN, read_private_key(directory / f"{name}.key"))
    return RouterIdentity(
        router_id=name,
        display_name=settings.display_name,
        endpoint=settings.endpoint,
        sign_key=sign_key,
        sign_certificate=load_certificate_pem((directory / f"{name}.crt").read_bytes()),
        enc_certificate=load_certificate_pem((directory / f"{name}.enc.crt").read_bytes()),
        root_certificate=load_certificate_pem((directory / "root-ca.crt").read_bytes()),
    )


async def run(settings: RouterSettings, clock: Clock | None = None) -> None:
    configure_logging(settings.data_dir / "logs" / f"{settings.router_id}.log")
    database = Database(settings.database_url)
    await upgrade(database, "router")
    peer = Peer(client_context(settings.tls))
    router = Router(load_identity(settings), database, clock or SystemClock(), peer)
    await router.start()
    settlement = Settlement(router)
    operator_token = ensure_token(settings.data_dir / "operator.token")
    servers = [
        make_server(
            create_scheme_app(router, settlement),
            host=settings.host,
            port=settings.port,
            **server_options(settings.tls),
        ),
        make_server(
            create_operator_app(router, operator_token.encode("ascii"), settlement),
            host="127.0.0.1",
            port=settings.operator_port,
        ),
    ]
    stop = asyncio.Event()
    background = [
        asyncio.create_task(router.run_background(stop)),
        asyncio.create_task(settlement.run_background(stop)),
    ]
    log.info("router_started", port=settings.port, operator_port=settings.operator_port)
    try:
        await serve_all(servers)
    finally:
        stop.set()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):  # sign the tail on the way out
            await router.audit.seal()
        await peer.close()
        await database.dispose()
