"""End to end with real processes: the router, two processors (bank-a pays, mno-b is
paid), the merchant backend, and the wallet CLI, each a separate OS process on loopback.

A customer of bank-a enrols a wallet, a merchant at mno-b makes a request through its
backend, the wallet pays the QR image the merchant CLI wrote, and the merchant's order
becomes paid through the processor's signed notice; the wallet's balance moved by the
amount. Every process is started as a person would: `python -m semops …`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from semops.devnet.demo import merchant_trust_args
from semops.devnet.network import PROCESSORS, ROUTER_ID, Network, new_layout
from semops.devnet.pki import ensure_pki
from semops.devnet.processes import ServiceProcess, free_port
from semops.service.files import write_secret

PIN = "4821"
MERCHANT_TOKEN = "wallet-it-merchant-token-93b1"

pytestmark = pytest.mark.timeout(180)


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semops", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def network(tmp_path: Path) -> Any:
    layout = new_layout(tmp_path / "net", fixed_ports=False, db_urls=None)
    net = Network(layout)
    participants = {ROUTER_ID: "router"} | {pid: "processor" for pid, _, _ in PROCESSORS}
    ensure_pki(net.data_dir, participants)
    layout.save()
    started: list[ServiceProcess] = []
    try:
        for process in [
            net.router_process(),
            *(net.processor_process(pid, kind, name) for pid, kind, name in PROCESSORS),
        ]:
            service = process
            started.append(service)
            service.start()
            service.wait_ready()
        net.processes = {process.name: process for process in started}
        yield net
    finally:
        for process in reversed(started):
            process.stop()


def test_a_wallet_pays_a_merchant_backend_order_across_the_network(
    network: Network, tmp_path: Path
) -> None:
    merchant_port = free_port()
    merchant_url = f"http://127.0.0.1:{merchant_port}"
    created = network.admin(
        "mno-b",
        "POST",
        "/v1/admin/merchants",
        {
            "merchant_id": "corner-shop",
            "display_name": "Corner Shop",
            "currency": "EUR",
            "webhook_url": f"{merchant_url}/v1/notices",
        },
    )
    merchant_dir = tmp_path / "merchant"
    write_secret(merchant_dir / "processor-api-key", created["api_key"].encode())
    write_secret(merchant_dir / "api-token", MERCHANT_TOKEN.encode())
    backend = ServiceProcess(
        name="merchant",
        args=[
            "merchant",
            "serve",
            "--merchant-id",
            "corner-shop",
            "--data-dir",
            str(merchant_dir),
            "--processor",
            network.layout.processor_url("mno-b"),
            "--port",
            str(merchant_port),
            "--api-token-file",
            str(merchant_dir / "api-token"),
            *merchant_trust_args(network, "mno-b"),
        ],
        output=merchant_dir / "logs" / "stdout.log",
        health_url=f"{merchant_url}/healthz",
    )
    backend.start()
    try:
        backend.wait_ready()
        customer = network.admin(
            "bank-a",
            "POST",
            "/v1/admin/customers",
            {
                "name": "Alice",
                "phone": "+4915112345678",
                "currency": "EUR",
                "deposit_minor": 10_000,
            },
        )
        wallet_dir = str(tmp_path / "wallet")
        enrolled = cli(
            "wallet", "enroll", "--processor", network.layout.processor_url("bank-a"),
            "--code", customer["activation_code"], "--pin-stdin", "--wallet-dir", wallet_dir,
            stdin=f"{PIN}\n",
        )  # fmt: skip
        assert enrolled.returncode == 0, enrolled.stdout + enrolled.stderr

        qr_dir = tmp_path / "qr"
        requested = cli(
            "merchant", "request", "--amount", "12.50", "--currency", "EUR",
            "--reference", "INV-9", "--merchant-url", merchant_url, "--out-dir", str(qr_dir),
            "--api-token-file", str(merchant_dir / "api-token"),
        )  # fmt: skip
        assert requested.returncode == 0, requested.stdout + requested.stderr
        order_id = next(
            line.split()[-1] for line in requested.stdout.splitlines() if line.startswith("Order")
        )

        paid = cli(
            "wallet", "pay", str(qr_dir / f"{order_id}.png"), "--yes", "--pin-stdin",
            "--wallet-dir", wallet_dir, stdin=f"{PIN}\n",
        )  # fmt: skip
        assert paid.returncode == 0, paid.stdout + paid.stderr
        assert "Paid." in paid.stdout and "Corner Shop" in paid.stdout
        assert "12.50 EUR" in paid.stdout and PIN not in paid.stdout + paid.stderr

        deadline = time.monotonic() + 30
        order: dict[str, Any] = {}
        while time.monotonic() < deadline:
            order = get_json(f"{merchant_url}/v1/orders/{order_id}")
            if order["state"] == "paid":
                break
            time.sleep(0.2)
        assert order["state"] == "paid", order
        assert order["notice"] and order["transfer_id"]
        shown = (
            json.dumps(order)
            + urllib.request.urlopen(f"{merchant_url}/checkout/{order_id}", timeout=10)
            .read()
            .decode()
        )
        for payer_datum in ("bank-a", "Alice", customer["account_id"], "+4915112345678"):
            assert payer_datum not in shown

        balance = cli("wallet", "balance", "--wallet-dir", wallet_dir)
        assert balance.returncode == 0, balance.stderr
        assert "87.50 EUR" in balance.stdout

        again = cli(
            "wallet", "pay", str(qr_dir / f"{order_id}.png"), "--yes", "--pin-stdin",
            "--wallet-dir", wallet_dir, stdin=f"{PIN}\n",
        )  # fmt: skip
        assert again.returncode == 0, again.stdout + again.stderr  # the stored receipt
        balance = cli("wallet", "balance", "--wallet-dir", wallet_dir)
        assert "87.50 EUR" in balance.stdout  # never paid twice

        status = cli("merchant", "status", order_id, "--merchant-url", merchant_url)
        assert status.returncode == 0 and "paid" in status.stdout
    finally:
        backend.stop()
