"""Start the merchant backend: settings, secrets, migrations, server, background poller."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from semops.core.clock import Clock
from semops.merchant.app import create_merchant_app
from semops.merchant.processor_api import HttpProcessorTransport
from semops.merchant.service import MerchantService, MerchantSettings
from semops.service.clock import SystemClock
from semops.service.files import private_dir, read_secret
from semops.service.logs import configure_logging
from semops.service.server import make_server, serve_all
from semops.store.db import Database
from semops.store.migrate import upgrade

log = structlog.get_logger("semops.merchant")


def read_api_key(settings: MerchantSettings) -> str:
    """The merchant's API key at its processor, from its 0600 file."""
    return read_secret(settings.api_key_path).decode("ascii").strip()


async def build_service(settings: MerchantSettings, clock: Clock | None = None) -> MerchantService:
    """A ready service: database migrated, processor transport open."""
    private_dir(settings.data_dir)
    database = Database(settings.database_url)
    await upgrade(database, "merchant")
    return MerchantService(
        settings,
        database,
        HttpProcessorTransport(settings.processor_url),
        read_api_key(settings),
        clock or SystemClock(),
    )


async def run(settings: MerchantSettings, clock: Clock | None = None) -> None:
    """Serve the merchant backend until SIGINT or SIGTERM."""
    configure_logging(settings.data_dir / "logs" / f"{settings.merchant_id}.log")
    service = await build_service(settings, clock)
    api_token = (
        read_secret(settings.api_token_file).decode("ascii").strip()
        if settings.api_token_file is not None
        else None
    )
    server = make_server(
        create_merchant_app(service, api_token), host=settings.host, port=settings.port
    )
    stop = asyncio.Event()
    background = asyncio.create_task(service.run_background(stop))
    log.info("merchant_started", merchant_id=settings.merchant_id, port=settings.port)
    try:
        await serve_all([server])
    finally:
        stop.set()
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
        await service.close()
        await service.database.dispose()


__all__ = ["build_service", "read_api_key", "run"]
