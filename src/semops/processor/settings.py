"""What one processor instance is: its id, kind, folders, ports and peers.

One code base runs every processor of the scheme; a bank and an MNO differ only in these
settings and in the keys found in `data_dir` (made by `semops pki issue ID --role
processor --out DATA_DIR`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from semops.core.errors import E, SemopsError
from semops.core.limits import TRANSFER_TTL_DEFAULT_S
from semops.core.urls import is_loopback_host
from semops.service.tls import TlsFiles
from semops.store.db import sqlite_url

ProcessorKind = Literal["bank", "mno"]


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    processor_id: str
    kind: ProcessorKind
    display_name: str
    data_dir: Path
    router_url: str
    currency: str = "EUR"
    db_url: str | None = None
    # Public port: wallets, merchants and the back office (plain HTTP, loopback by default).
    public_host: str = "127.0.0.1"
    public_port: int = 8500
    # Scheme port: the router only (mutual TLS with a scheme certificate).
    scheme_host: str = "127.0.0.1"
    scheme_port: int = 8501
    # Operator port: /metrics (operator token) and /healthz, loopback by default.
    operator_host: str = "127.0.0.1"
    operator_port: int = 8502
    # How others reach us when the bind address is not the reachable one (0.0.0.0, a proxy).
    public_url: str | None = None
    scheme_url: str | None = None
    # How long a routed payment may take before it is released (DESIGN.md §3, "Timeouts").
    transfer_ttl_s: int = TRANSFER_TTL_DEFAULT_S
    # Development (the embedded network on one machine): plain-http webhooks on loopback are
    # accepted. Only with a loopback public host, so it cannot be left on in production.
    development: bool = False
    # Addresses of the proxies in front of the public port whose X-Forwarded-For is believed
    # (the back-office login throttle counts by client address); none by default.
    trusted_proxies: tuple[str, ...] = ()

    def check(self) -> None:
        """Refuse settings that would open the processor (raised before anything starts)."""
        if self.development and not is_loopback_host(self.public_host):
            raise SemopsError(
                E.VALIDATION_FAILED, "--development needs a loopback public host (127.0.0.1)"
            )

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(self.data_dir / f"{self.processor_id}.db")

    @property
    def endpoint(self) -> str:
        """The scheme endpoint the directory publishes (the router calls it)."""
        return (self.scheme_url or f"https://{self.scheme_host}:{self.scheme_port}").rstrip("/")

    @property
    def wallet_url(self) -> str:
        return (self.public_url or f"http://{self.public_host}:{self.public_port}").rstrip("/")

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles.in_directory(self.data_dir, self.processor_id)

    @property
    def log_file(self) -> Path:
        return self.data_dir / "logs" / f"{self.processor_id}.log"
