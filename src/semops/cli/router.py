"""`semops router`: run the router, and the scheme operator's actions on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import aiohttp
import typer

from semops.cli.common import fail, out, readable_errors, run_async
from semops.router.main import RouterSettings, run
from semops.service.files import read_secret

router_app = typer.Typer(help="The router (the scheme's data center).", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Router folder: keys, database, logs.")]
OperatorPort = Annotated[int, typer.Option("--operator-port", help="Loopback operator port.")]


@router_app.command("serve")
def serve(
    data_dir: DataDir,
    port: Annotated[int, typer.Option(help="Scheme port (mutual TLS).")] = 8400,
    operator_port: OperatorPort = 8401,
    host: Annotated[str, typer.Option(help="Address for the scheme port.")] = "127.0.0.1",
    db: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    router_id: Annotated[str, typer.Option("--id", help="The router's participant id.")] = "router",
) -> None:
    """Run the router until interrupted (Ctrl-C)."""
    settings = RouterSettings(
        data_dir=data_dir,
        router_id=router_id,
        host=host,
        port=port,
        operator_port=operator_port,
        db_url=db,
    )
    with readable_errors():
        run_async(run(settings))


async def _operator_call(
    data_dir: Path, operator_port: int, method: str, path: str, body: object = None
) -> object:
    token = read_secret(data_dir / "operator.token").decode("ascii").strip()
    url = f"http://127.0.0.1:{operator_port}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, json=body, headers=headers) as response,
    ):
        text = await response.text()
        if response.status >= 400:
            try:
                problem = json.loads(text)
                fail(f"{problem.get('detail')} ({problem.get('code')})")
            except ValueError:
                fail(f"the router answered {response.status}")
        return json.loads(text) if text else None


@router_app.command("positions")
def positions(data_dir: DataDir, operator_port: OperatorPort = 8401) -> None:
    """Each processor's net position per currency (+ owed to it, - it owes)."""
    with readable_errors():
        result = run_async(_operator_call(data_dir, operator_port, "GET", "/v1/admin/positions"))
    out.print_json(data=result)


@router_app.command("suspend")
def suspend(participant: str, data_dir: DataDir, operator_port: OperatorPort = 8401) -> None:
    """Suspend a processor: the router refuses its transfers until resumed."""
    with readable_errors():
        run_async(
            _operator_call(
                data_dir, operator_port, "POST", f"/v1/admin/participants/{participant}/suspend"
            )
        )
    out.print(f"{participant} suspended")


@router_app.command("resume")
def resume(participant: str, data_dir: DataDir, operator_port: OperatorPort = 8401) -> None:
    """Resume a suspended processor."""
    with readable_errors():
        run_async(
            _operator_call(
                data_dir, operator_port, "POST", f"/v1/admin/participants/{participant}/resume"
            )
        )
    out.print(f"{participant} active")


@router_app.command("cap")
def cap(
    participant: str,
    data_dir: DataDir,
    cap_minor: Annotated[int | None, typer.Option("--minor", help="Cap in minor units.")] = None,
    operator_port: OperatorPort = 8401,
) -> None:
    """Set (or with no --minor, remove) a processor's net-debit cap."""
    with readable_errors():
        run_async(
            _operator_call(
                data_dir,
                operator_port,
                "PUT",
                f"/v1/admin/participants/{participant}/cap",
                {"net_debit_cap_minor": cap_minor},
            )
        )
    out.print(f"{participant} cap set")
