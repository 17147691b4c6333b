"""Start the merchant backend: settings, secrets, migrations, server, background poller.

Closed by default (DESIGN.md §6): the backend refuses to start without an API token for
its order API and shop pages (unless `development` on a loopback address) and without a
trust anchor for its processor's notice key (the scheme root with the processor's id, or
a pinned key). Each refusal is one sentence saying what to give.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from semops.core.clock import Clock
from semops.core.errors import SemopsError
from semops.core.urls import check_endpoint_url, is_loopback_host
from semops.crypto.pki import load_certificate_pem
from semops.merchant.app import create_merchant_app
from semops.merchant.processor_api import HttpProcessorTransport
from semops.merchant.service import MerchantService, MerchantSettings
from semops.merchant.trust import ProcessorTrust
from semops.service.clock import SystemClock
from semops.service.files import private_dir, read_secret
from semops.service.logs import configure_logging
from semops.service.server import make_server, serve_all
from semops.store.db import Database
from semops.store.migrate import upgrade

log = structlog.get_logger("semops.merchant")

# An API token shorter than this is a password someone chose, not a token (`semops up`
# makes 48 random hex characters); the bearer check has no lockout, so length is its guard.
API_TOKEN_MIN_CHARS = 16


class SettingsRefused(ValueError):
    """The backend must not start with these settings; the message says what to give."""


def check_settings(settings: MerchantSettings) -> None:
    """Refuse settings that would leave money-moving routes open or trust a fetched key."""
    if settings.development:
        if not is_loopback_host(settings.host):
            raise SettingsRefused(
                "--development serves the order API without a credential, so only on a "
                f"loopback address (127.0.0.1, ::1, localhost), not on {settings.host}"
            )
    elif settings.api_token_file is None:
        raise SettingsRefused(
            "the merchant backend needs an API token for its order API and shop pages: "
            "give --api-token-file FILE (a 0600 file holding the token), or --development "
            "to run without one on a loopback address"
        )
    if settings.root_ca_file is None and settings.processor_key_pin is None:
        raise SettingsRefused(
            "the merchant backend needs a trust anchor for its processor's notice key: "
            "give --root-ca FILE (the scheme root certificate) with --processor-id ID, "
            "or --processor-key-pin THUMBPRINT"
        )
    if settings.root_ca_file is not None and settings.processor_id is None:
        raise SettingsRefused("--root-ca needs --processor-id: the processor it must name")
    try:
        # The API key and every answer travel on this link: https, or plain http only to
        # a processor on this machine.
        check_endpoint_url(settings.processor_url, development=True)
    except SemopsError as error:
        raise SettingsRefused(f"--processor {settings.processor_url}: {error.detail}") from None


def load_trust(settings: MerchantSettings) -> ProcessorTrust:
    """The trust anchor the settings name (the root certificate is read from its file)."""
    root = None
    if settings.root_ca_file is not None:
        try:
            root = load_certificate_pem(Path(settings.root_ca_file).read_bytes())
        except ValueError:
            raise SettingsRefused(f"{settings.root_ca_file} is not a PEM certificate") from None
    try:
        return ProcessorTrust(settings.processor_id, root, settings.processor_key_pin)
    except ValueError as error:
        raise SettingsRefused(str(error)) from None


def read_api_key(settings: MerchantSettings) -> str:
    """The merchant's API key at its processor, from its 0600 file."""
    return read_secret(settings.api_key_path).decode("ascii").strip()


def read_api_token(settings: MerchantSettings) -> str | None:
    """The backend's own API token, from its 0600 file (None only in development)."""
    if settings.api_token_file is None:
        return None
    token = read_secret(settings.api_token_file).decode("ascii").strip()
    if len(token) < API_TOKEN_MIN_CHARS:
        raise SettingsRefused(
            f"the API token in {settings.api_token_file} is shorter than "
            f"{API_TOKEN_MIN_CHARS} characters"
        )
    return token


async def build_service(settings: MerchantSettings, clock: Clock | None = None) -> MerchantService:
    """A ready service: database migrated, processor transport open."""
    trust = load_trust(settings)
    private_dir(settings.data_dir)
    database = Database(settings.database_url)
    await upgrade(database, "merchant")
    return MerchantService(
        settings,
        database,
        HttpProcessorTransport(settings.processor_url),
        read_api_key(settings),
        clock or SystemClock(),
        trust=trust,
    )


async def run(settings: MerchantSettings, clock: Clock | None = None) -> None:
    """Serve the merchant backend until SIGINT or SIGTERM."""
    check_settings(settings)
    api_token = read_api_token(settings)
    configure_logging(settings.data_dir / "logs" / f"{settings.merchant_id}.log")
    service = await build_service(settings, clock)
    app = create_merchant_app(service, api_token, development=settings.development)
    server = make_server(app, host=settings.host, port=settings.port)
    stop = asyncio.Event()
    background = asyncio.create_task(service.run_background(stop))
    log.info(
        "merchant_started",
        merchant_id=settings.merchant_id,
        port=settings.port,
        development=settings.development,
    )
    try:
        await serve_all([server])
    finally:
        stop.set()
        background.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await background
        await service.close()
        await service.database.dispose()


__all__ = [
    "SettingsRefused",
    "build_service",
    "check_settings",
    "load_trust",
    "read_api_key",
    "read_api_token",
    "run",
]
