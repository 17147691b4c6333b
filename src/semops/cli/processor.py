"""`semops processor`: run a bank's or an MNO's processor."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from semops.cli.common import readable_errors, run_async
from semops.core.limits import TRANSFER_TTL_DEFAULT_S, TRANSFER_TTL_MAX_S, TRANSFER_TTL_MIN_S
from semops.processor.main import run
from semops.processor.settings import ProcessorSettings

processor_app = typer.Typer(help="A payment processor (bank or MNO).", no_args_is_help=True)


@processor_app.callback()
def processor() -> None:
    """A payment processor (bank or MNO): `semops processor serve …`."""
    # A callback keeps `serve` a sub-command even while it is the only one.


class KindChoice(StrEnum):
    BANK = "bank"
    MNO = "mno"


@processor_app.command("serve")
def serve(
    processor_id: Annotated[str, typer.Option("--id", help="The processor's participant id.")],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder with the keys from `semops pki issue`.")
    ],
    router_url: Annotated[
        str, typer.Option("--router-url", help="The router's scheme URL (https://host:port).")
    ],
    kind: Annotated[KindChoice, typer.Option("--kind", help="bank or mno.")] = KindChoice.BANK,
    display_name: Annotated[
        str | None, typer.Option("--name", help="Display name [default: the id].")
    ] = None,
    currency: Annotated[str, typer.Option(help="Home currency (ISO 4217).")] = "EUR",
    db: Annotated[str | None, typer.Option("--db", help="Database URL [default: SQLite].")] = None,
    public_host: Annotated[str, typer.Option(help="Address of the public port.")] = "127.0.0.1",
    public_port: Annotated[int, typer.Option(help="Public port (wallets, merchants).")] = 8500,
    scheme_host: Annotated[str, typer.Option(help="Address of the scheme port.")] = "127.0.0.1",
    scheme_port: Annotated[int, typer.Option(help="Scheme port (mutual TLS).")] = 8501,
    operator_host: Annotated[
        str, typer.Option(help="Address of the operator port (metrics).")
    ] = "127.0.0.1",
    operator_port: Annotated[
        int, typer.Option(help="Operator port: /metrics with the operator token.")
    ] = 8502,
    public_url: Annotated[
        str | None, typer.Option(help="Public URL others use [default: from host and port].")
    ] = None,
    scheme_url: Annotated[
        str | None, typer.Option(help="Scheme URL the router uses [default: host and port].")
    ] = None,
    transfer_ttl_s: Annotated[
        int,
        typer.Option(
            min=TRANSFER_TTL_MIN_S,
            max=TRANSFER_TTL_MAX_S,
            help="Seconds a routed payment may take before it is released.",
        ),
    ] = TRANSFER_TTL_DEFAULT_S,
    development: Annotated[
        bool,
        typer.Option(
            "--development",
            help="Allow plain-http webhooks on loopback (only with a loopback public host).",
        ),
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Address of a proxy whose X-Forwarded-For is believed (repeatable).",
        ),
    ] = None,
) -> None:
    """Run the processor until interrupted (Ctrl-C)."""
    settings = ProcessorSettings(
        processor_id=processor_id,
        kind=kind.value,
        display_name=display_name or processor_id,
        data_dir=data_dir,
        router_url=router_url,
        currency=currency,
        db_url=db,
        public_host=public_host,
        public_port=public_port,
        scheme_host=scheme_host,
        scheme_port=scheme_port,
        operator_host=operator_host,
        operator_port=operator_port,
        public_url=public_url,
        scheme_url=scheme_url,
        transfer_ttl_s=transfer_ttl_s,
        development=development,
        trusted_proxies=tuple(trusted_proxy or ()),
    )
    with readable_errors():
        run_async(run(settings))


__all__ = ["processor_app"]
