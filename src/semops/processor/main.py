"""Start a processor: keys from its data directory, migrations, registration, servers.

`run(settings)` is what `semops processor serve` calls. The public port (wallets,
merchants, back office) is plain HTTP meant for loopback or a TLS-terminating proxy; the
scheme port demands a client certificate from the scheme root (mutual TLS); the operator
port (loopback by default) serves metrics behind the operator token. All answer
`/healthz` with 503 until the processor is registered with the router and holds its
directory, so "healthy" means "can take payments".
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from semops.core.clock import Clock
from semops.processor.app import create_operator_app, create_public_app, create_scheme_app
from semops.processor.keys import load_keys
from semops.processor.service import Processor
from semops.processor.settings import ProcessorSettings
from semops.service.clock import SystemClock
from semops.service.http import Peer
from semops.service.logs import configure_logging
from semops.service.server import make_server, serve_all
from semops.service.tls import SchemePeerGate, client_context, server_options
from semops.store.db import Database
from semops.store.migrate import upgrade

log = structlog.get_logger("semops.processor")


async def build_processor(
    settings: ProcessorSettings, clock: Clock, router_client: Peer, webhook_client: Peer
) -> Processor:
    """A migrated, started processor (not yet registered, not yet serving)."""
    database = Database(settings.database_url)
    await upgrade(database, "processor")
    keys = load_keys(settings.data_dir, settings.processor_id, clock.now())
    processor = Processor(settings, keys, database, clock, router_client, webhook_client)
    await processor.start()
    return processor


async def run(settings: ProcessorSettings, clock: Clock | None = None) -> None:
    settings.check()
    configure_logging(settings.log_file)
    router_client = Peer(client_context(settings.tls))
    webhook_client = Peer()
    processor = await build_processor(
        settings, clock or SystemClock(), router_client, webhook_client
    )
    servers = [
        make_server(
            create_public_app(processor),
            host=settings.public_host,
            port=settings.public_port,
            trusted_proxies=settings.trusted_proxies,
        ),
        make_server(
            # Only the router may call the scheme port (service/tls.py SchemePeerGate).
            SchemePeerGate(
                create_scheme_app(processor),
                root=processor.context.keys.root_certificate,
                role="router",
                revoked_serials=processor.directory.revoked_serials,
                clock=processor.context.clock,
            ),
            host=settings.scheme_host,
            port=settings.scheme_port,
            **server_options(settings.tls),
        ),
        make_server(
            create_operator_app(processor),
            host=settings.operator_host,
            port=settings.operator_port,
        ),
    ]
    stop = asyncio.Event()
    background = asyncio.create_task(processor.run_background(stop))
    log.info(
        "processor_started",
        processor=settings.processor_id,
        public_port=settings.public_port,
        scheme_port=settings.scheme_port,
        operator_port=settings.operator_port,
    )
    try:
        await serve_all(servers)
    finally:
        stop.set()
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
        with contextlib.suppress(Exception):  # sign the audit log's tail on the way out
            await processor.audit.seal()
        await router_client.close()
        await webhook_client.close()
        await processor.context.database.dispose()
