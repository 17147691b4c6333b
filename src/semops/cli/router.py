"""`semops router`: run the router, and the scheme operator's actions on it.

The operator commands talk to the router's loopback operator port with the token in
`--data-dir`. The port is `--operator-port`, else the one `semops up` wrote to
DATA/network.json next to the router's folder, else 8401. Every action is audited by the
router (suspend, resume, cap, checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final

import aiohttp
import typer

from semops.cli.common import fail, out, readable_errors, run_async
from semops.router.main import RouterSettings, run
from semops.service.files import read_secret

# Closing a full window builds and signs a report of up to 10 000 transfers: allow a minute.
OPERATOR_CALL_TIMEOUT_S: Final = 60

router_app = typer.Typer(help="The router (the scheme's data center).", no_args_is_help=True)

DataDir = Annotated[Path, typer.Option("--data-dir", help="Router folder: keys, database, logs.")]
OperatorPort = Annotated[
    int | None,
    typer.Option("--operator-port", help="Loopback operator port [default: from network.json]."),
]
DEFAULT_OPERATOR_PORT = 8401


def operator_port_for(data_dir: Path, given: int | None) -> int:
    if given is not None:
        return given
    layout = data_dir.parent / "network.json"
    if layout.exists():
        ports = json.loads(layout.read_text()).get("ports") or {}
        if isinstance(ports.get("router-operator"), int):
            return int(ports["router-operator"])
    return DEFAULT_OPERATOR_PORT


@router_app.command("serve")
def serve(
    data_dir: DataDir,
    port: Annotated[int, typer.Option(help="Scheme port (mutual TLS).")] = 8400,
    operator_port: Annotated[
        int, typer.Option("--operator-port", help="Loopback operator port.")
    ] = DEFAULT_OPERATOR_PORT,
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


async def operator_call(
    data_dir: Path, operator_port: int | None, method: str, path: str, body: object = None
) -> Any:
    """A call to the router's operator API; a refusal ends the command with its code."""
    token = read_secret(data_dir / "operator.token").decode("ascii").strip()
    url = f"http://127.0.0.1:{operator_port_for(data_dir, operator_port)}{path}"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=OPERATOR_CALL_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.request(method, url, json=body, headers=headers, allow_redirects=False) as response,
    ):
        text = await response.text()
        if not 200 <= response.status < 300:
            try:
                problem = json.loads(text)
                fail(f"{problem.get('detail')} ({problem.get('code')})")
            except ValueError:
                fail(f"the router answered {response.status}")
        return json.loads(text) if text else None


@router_app.command("positions")
def positions(data_dir: DataDir, operator_port: OperatorPort = None) -> None:
    """Each processor's net position per currency (+ owed to it, - it owes)."""
    with readable_errors():
        result = run_async(operator_call(data_dir, operator_port, "GET", "/v1/admin/positions"))
    out.print_json(data=result)


@router_app.command("suspend")
def suspend(participant: str, data_dir: DataDir, operator_port: OperatorPort = None) -> None:
    """Suspend a processor: the router refuses its transfers until resumed."""
    with readable_errors():
        run_async(
            operator_call(
                data_dir, operator_port, "POST", f"/v1/admin/participants/{participant}/suspend"
            )
        )
    out.print(f"{participant} suspended")


@router_app.command("resume")
def resume(participant: str, data_dir: DataDir, operator_port: OperatorPort = None) -> None:
    """Resume a suspended processor."""
    with readable_errors():
        run_async(
            operator_call(
                data_dir, operator_port, "POST", f"/v1/admin/participants/{participant}/resume"
            )
        )
    out.print(f"{participant} active")


@router_app.command("cap")
def cap(
    participant: str,
    data_dir: DataDir,
    cap_minor: Annotated[int | None, typer.Option("--minor", help="Cap in minor units.")] = None,
    operator_port: OperatorPort = None,
) -> None:
    """Set (or with no --minor, remove) a processor's net-debit cap."""
    with readable_errors():
        run_async(
            operator_call(
                data_dir,
                operator_port,
                "PUT",
                f"/v1/admin/participants/{participant}/cap",
                {"net_debit_cap_minor": cap_minor},
            )
        )
    out.print(f"{participant} cap set")


@router_app.command("checkpoint")
def checkpoint(data_dir: DataDir, operator_port: OperatorPort = None) -> None:
    """Sign the router's audit log now (a checkpoint over its newest entry)."""
    with readable_errors():
        result = run_async(
            operator_call(data_dir, operator_port, "POST", "/v1/admin/audit/checkpoint")
        )
    sealed = result.get("sealed_seq") if isinstance(result, dict) else None
    out.print(f"audit log signed through entry {sealed}" if sealed else "audit log already signed")


__all__ = ["operator_call", "operator_port_for", "router_app"]
