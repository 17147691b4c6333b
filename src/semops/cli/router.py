"""`semops router`: run the router, and the scheme operator's actions on it.

The operator commands talk to the router's loopback operator port with the token in
`--data-dir`. The port is `--operator-port`, else the one `semops up` wrote to
DATA/network.json next to the router's folder, else 8401. Every action is audited by the
router (suspend, resume, cap, checkpoint, approve, reject, revoke).

A participant's change that its current key did not sign (a new key, endpoint or name) is
held by the router: `registrations` lists what waits, `approve ID` / `reject ID` decide.
`revoke PARTICIPANT --kid K` revokes a key, `revoke-certificate --serial N` a certificate
(hex, as `semops pki show` prints it); both are published in the signed directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import quote

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


@router_app.command("registrations")
def registrations(
    data_dir: DataDir,
    state: Annotated[
        str, typer.Option("--state", help="pending, approved, rejected or all.")
    ] = "pending",
    operator_port: OperatorPort = None,
) -> None:
    """Registrations held for the operator (changes not signed by the current key)."""
    if state not in ("pending", "approved", "rejected", "all"):
        fail("--state is pending, approved, rejected or all", code=2)
    with readable_errors():
        result = run_async(
            operator_call(data_dir, operator_port, "GET", f"/v1/admin/registrations?state={state}")
        )
    held = result.get("registrations", []) if isinstance(result, dict) else []
    if not held:
        out.print(f"no {state} registrations" if state != "all" else "no held registrations")
        return
    for row in held:
        changes = ", ".join(row.get("changes") or []) or "-"
        out.print(
            f"{row['registration_id']}  {row['participant_id']}  {row['state']}  "
            f"changes: {changes}",
            markup=False,
        )
        out.print(f"    signing key {row['sign_kid']}  endpoint {row['endpoint']}", markup=False)


def _decide(data_dir: Path, operator_port: int | None, registration_id: str, verb: str) -> Any:
    with readable_errors():
        return run_async(
            operator_call(
                data_dir,
                operator_port,
                "POST",
                f"/v1/admin/registrations/{registration_id}/{verb}",
            )
        )


RegistrationId = Annotated[
    str, typer.Argument(metavar="REGISTRATION_ID", help="The id `registrations` lists (rg_...).")
]


@router_app.command("approve")
def approve(
    registration_id: RegistrationId, data_dir: DataDir, operator_port: OperatorPort = None
) -> None:
    """Approve a held registration: the directory shows it at once (audited)."""
    result = _decide(data_dir, operator_port, registration_id, "approve")
    out.print(
        f"{registration_id} approved: {result.get('participant_id')} "
        f"now uses {result.get('sign_kid')}",
        markup=False,
    )


@router_app.command("reject")
def reject(
    registration_id: RegistrationId, data_dir: DataDir, operator_port: OperatorPort = None
) -> None:
    """Reject a held registration: the directory stays as it is (audited)."""
    result = _decide(data_dir, operator_port, registration_id, "reject")
    out.print(f"{registration_id} rejected ({result.get('participant_id')})", markup=False)


@router_app.command("revoke")
def revoke(
    participant: str,
    data_dir: DataDir,
    kid: Annotated[str, typer.Option("--kid", help="The key id to revoke (PARTICIPANT:...).")],
    operator_port: OperatorPort = None,
) -> None:
    """Revoke one of a participant's keys: refused everywhere from the next directory on."""
    with readable_errors():
        result = run_async(
            operator_call(
                data_dir,
                operator_port,
                "POST",
                f"/v1/admin/participants/{participant}/keys/{quote(kid, safe=':')}/revoke",
            )
        )
    already = "" if result.get("newly_revoked") else " (it was revoked already)"
    out.print(f"{kid} of {participant} revoked{already}", markup=False)


@router_app.command("revoke-certificate")
def revoke_certificate(
    data_dir: DataDir,
    serial: Annotated[
        str, typer.Option("--serial", help="The certificate's serial in hex (`semops pki show`).")
    ],
    operator_port: OperatorPort = None,
) -> None:
    """Revoke a certificate by serial: refused at TLS and at registration (audited)."""
    with readable_errors():
        result = run_async(
            operator_call(
                data_dir,
                operator_port,
                "POST",
                f"/v1/admin/certificates/{quote(serial, safe='')}/revoke",
            )
        )
    owner = result.get("participant_id") or "a certificate the router never saw"
    already = "" if result.get("newly_revoked") else " (it was revoked already)"
    out.print(f"certificate {result.get('serial')} ({owner}) revoked{already}", markup=False)


@router_app.command("revocations")
def revocations(data_dir: DataDir, operator_port: OperatorPort = None) -> None:
    """Revoked keys and certificates, newest first."""
    with readable_errors():
        result = run_async(operator_call(data_dir, operator_port, "GET", "/v1/admin/revocations"))
    out.print_json(data=result)


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
