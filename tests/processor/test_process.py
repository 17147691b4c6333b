"""`semops processor serve` as real processes: a router and two processors on loopback.

The router is the real `semops router serve`; the processors are started exactly as an
operator starts them, talk to the router over mutual TLS and register themselves. The test
plays the back office, a merchant and a wallet over plain HTTP on the public ports, and a
routed payment goes through all three processes.
"""

from __future__ import annotations

import json
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from semops.cli import app as semops_app
from semops.crypto import read_unverified_claims
from semops.devnet import ServiceProcess, ensure_pki, free_port
from semops.protocol import DirectoryKey, PaymentNotice, Receipt, parse_claims
from semops.service.tls import TlsFiles, client_context
from tests.processor.network import PIN, device_key, enrolment_token, order_token

# The lead wires `semops processor` into the `semops` command; until then the processor's
# own typer app is started the same way from its module.
WIRED = any(group.name == "processor" for group in semops_app.registered_groups)
_FALLBACK = "from semops.cli.processor import processor_app; processor_app()"


class ProcessorProcess(ServiceProcess):
    def start(self) -> None:
        if WIRED:
            super().start()
            return
        import os
        import subprocess

        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.output.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _FALLBACK, *self.args[1:]],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )


@dataclass
class Public:
    """A processor's public port."""

    name: str
    port: int
    data_dir: Path
    operator_port: int

    @property
    def token(self) -> str:
        return (self.data_dir / "operator.token").read_text().strip()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        jose: str | None = None,
    ) -> tuple[int, Any]:
        data = jose.encode() if jose is not None else json.dumps(body).encode() if body else None
        all_headers = {"Content-Type": "application/jose" if jose else "application/json"}
        all_headers.update(headers or {})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method, headers=all_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
                status = response.status
                kind = response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            text, status, kind = error.read().decode(), error.code, "application/problem+json"
        return status, (json.loads(text) if "json" in kind and text else text)

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.call(method, path, body, headers={"Authorization": f"Bearer {self.token}"})


@dataclass
class Net:
    root: Path
    processes: list[ServiceProcess]
    bank: Public
    mno: Public


def _processor(root: Path, party: str, router_port: int) -> tuple[ProcessorProcess, Public]:
    public_port, scheme_port, operator_port = free_port(), free_port(), free_port()
    process = ProcessorProcess(
        name=party,
        args=[
            "processor",
            "serve",
            "--id",
            party,
            "--data-dir",
            str(root / party),
            "--router-url",
            f"https://127.0.0.1:{router_port}",
            "--kind",
            "bank" if party.startswith("bank") else "mno",
            "--name",
            party.upper(),
            "--public-port",
            str(public_port),
            "--scheme-port",
            str(scheme_port),
            "--operator-port",
            str(operator_port),
        ],
        output=root / f"{party}.out",
        health_url=f"http://127.0.0.1:{public_port}/healthz",
    )
    return process, Public(party, public_port, root / party, operator_port)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("procnet")
    ensure_pki(root, {"router": "router", "bank-a": "processor", "mno-b": "processor"})
    router_port, operator_port = free_port(), free_port()
    router = ServiceProcess(
        name="router",
        args=[
            "router",
            "serve",
            "--data-dir",
            str(root / "router"),
            "--port",
            str(router_port),
            "--operator-port",
            str(operator_port),
        ],
        output=root / "router.out",
        health_url=f"https://127.0.0.1:{router_port}/healthz",
        ssl_context=client_context(TlsFiles.in_directory(root / "bank-a", "bank-a")),
    )
    bank, bank_public = _processor(root, "bank-a", router_port)
    mno, mno_public = _processor(root, "mno-b", router_port)
    processes: list[ServiceProcess] = [router, bank, mno]
    try:
        for process in processes:
            process.start()
            process.wait_ready()
        yield Net(root, processes, bank_public, mno_public)
    finally:
        for process in reversed(processes):
            process.stop()


def test_processors_start_register_and_report_healthy(net: Net) -> None:
    for public in (net.bank, net.mno):
        status, body = public.call("GET", "/healthz")
        assert status == 200 and body["processor_id"] == public.name
        assert public.call("GET", "/metrics")[0] == 404  # never on the public port
        operator = Public(public.name, public.operator_port, public.data_dir, 0)
        assert operator.call("GET", "/metrics")[0] == 401
        status, metrics = operator.admin("GET", "/metrics")
        assert status == 200 and "semops_processor_payments_total" in metrics
    for name in ("pin.key", "reference.key", "operator.token"):
        assert (net.root / "bank-a" / name).stat().st_mode & 0o077 == 0


def test_the_scheme_port_demands_a_scheme_client_certificate(net: Net) -> None:
    config = net.bank.call("GET", "/v1/wallet/config")[1]
    assert config["directory"] and config["router_certificate"]
    # The scheme port is the public port's neighbour only by our choice; find it from the
    # process arguments and try it without a client certificate.
    bank = next(p for p in net.processes if p.name == "bank-a")
    scheme_port = bank.args[bank.args.index("--scheme-port") + 1]
    anonymous = ssl.create_default_context(cafile=str(net.root / "pki" / "root-ca.crt"))
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        urllib.request.urlopen(
            f"https://127.0.0.1:{scheme_port}/healthz", context=anonymous, timeout=5
        )


def test_a_routed_payment_across_three_processes(net: Net) -> None:
    status, created = net.bank.admin(
        "POST",
        "/v1/admin/customers",
        {
            "name": "Ada Lovelace",
            "phone": "+447700900123",
            "currency": "EUR",
            "deposit_minor": 5000,
        },
    )
    assert status == 201, created
    status, shop = net.mno.admin(
        "POST",
        "/v1/admin/merchants",
        {"merchant_id": "kiosk", "display_name": "Kiosk", "currency": "EUR"},
    )
    assert status == 201, shop
    merchant = {"Authorization": f"Bearer {shop['api_key']}"}
    status, request = net.mno.call(
        "POST",
        "/v1/merchant/requests",
        {"amount_minor": 1250, "currency": "EUR", "idempotency_key": "ik_process-0001"},
        headers=merchant,
    )
    assert status == 201, request

    config = net.bank.call("GET", "/v1/wallet/config")[1]
    enc_record = DirectoryKey.model_validate(config["encryption_key"]).to_record("bank-a")
    key = device_key()
    now = int(time.time())
    status, enrolled = net.bank.call(
        "POST",
        "/v1/wallet/enrol",
        jose=enrolment_token(key, created["activation_code"], PIN, enc_record, now),
    )
    assert status == 200, enrolled
    _, order = order_token(
        key,
        request["token"],
        processor="bank-a",
        account_id=enrolled["account_id"],
        pin=PIN,
        enc_record=enc_record,
        now=now,
    )
    status, receipt = net.bank.call("POST", "/v1/wallet/orders", jose=order)
    assert status == 200, receipt
    claims = parse_claims(read_unverified_claims(receipt), Receipt)
    assert claims.payee_processor == "mno-b" and claims.amount_minor == 1250

    deadline = time.monotonic() + 15
    while True:  # the router's outbox tells the payee side; it may take a moment
        status, seen = net.mno.call(
            "GET", f"/v1/merchant/requests/{request['request_id']}", headers=merchant
        )
        if seen["state"] == "paid" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert seen["state"] == "paid", seen
    notice = parse_claims(read_unverified_claims(seen["notice"]), PaymentNotice)
    assert notice.transfer_id == claims.transfer_id

    _, bank_position = net.bank.admin("GET", "/v1/admin/position")
    _, mno_position = net.mno.admin("GET", "/v1/admin/position")
    assert bank_position["positions"][0]["net_position_minor"] == -1250
    assert mno_position["positions"][0]["net_position_minor"] == 1250


def test_a_processor_without_keys_exits_with_a_readable_error(tmp_path: Path) -> None:
    process = ProcessorProcess(
        name="broken",
        args=[
            "processor",
            "serve",
            "--id",
            "bank-z",
            "--data-dir",
            str(tmp_path / "none"),
            "--router-url",
            "https://127.0.0.1:9",
            "--public-port",
            str(free_port()),
            "--scheme-port",
            str(free_port()),
            "--operator-port",
            str(free_port()),
        ],
        output=tmp_path / "broken.out",
        health_url="http://127.0.0.1:9/healthz",
    )
    process.start()
    assert process.process is not None
    assert process.process.wait(60) == 1
    output = (tmp_path / "broken.out").read_text()
    assert "error:" in output and "Traceback" not in output
