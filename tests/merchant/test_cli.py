"""`semops merchant` through CliRunner against real loopback HTTP servers (a merchant
backend, and a stand-in processor), and `serve` as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zxingcpp
from PIL import Image
from typer.testing import CliRunner

from semops.cli.merchant import merchant_app
from semops.core.clock import FixedClock
from semops.merchant.app import create_merchant_app
from semops.merchant.processor_api import HttpProcessorTransport
from semops.merchant.service import MerchantService, MerchantSettings
from semops.service.clock import SystemClock
from semops.service.files import write_secret
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade

from .fakes import API_KEY, MERCHANT, FakeMerchantProcessor
from .live import LiveServer, processor_app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(merchant_app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


@pytest.fixture
def processor() -> Any:
    fake = FakeMerchantProcessor(SystemClock())

    async def make() -> Any:
        return processor_app(fake)

    with LiveServer(make) as server:
        server.fake = fake  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    write_secret(path, API_KEY.encode())
    return path


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    fake = FakeMerchantProcessor(SystemClock())
    holder: dict[str, Any] = {}

    async def make() -> Any:
        database = Database(sqlite_url(tmp_path / "shop.db"))
        await upgrade(database, "merchant")
        settings = MerchantSettings(
            merchant_id=MERCHANT, data_dir=tmp_path, processor_url="http://processor.test"
        )
        service = MerchantService(settings, database, fake, API_KEY, SystemClock())
        holder["service"] = service
        return create_merchant_app(service)

    with LiveServer(make) as server:
        server.fake = fake  # type: ignore[attr-defined]
        server.service = holder["service"]  # type: ignore[attr-defined]
        yield server
        server.call(holder["service"].database.dispose())


def _decode(path: Path) -> str:
    results = zxingcpp.read_barcodes(Image.open(path))
    assert len(results) == 1
    return results[0].text


# --- request and status through a merchant backend -----------------------------------------


def test_request_via_the_backend_prints_token_link_qr_and_writes_files(
    backend: Any, tmp_path: Path
) -> None:
    out = tmp_path / "qr"
    result = invoke(
        "request",
        "--amount",
        "12.50",
        "--currency",
        "eur",
        "--reference",
        "R-42",
        "--merchant-url",
        backend.url,
        "--out-dir",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "Payment request created." in result.output
    order_id = next(
        line.split()[-1] for line in result.output.splitlines() if line.startswith("Order")
    )
    link = next(line.split()[-1] for line in result.output.splitlines() if line.startswith("Link"))
    assert link.startswith("semops:pay?r=")
    assert "█" in result.output or "▀" in result.output  # the terminal QR
    assert _decode(out / f"{order_id}.png") == link
    assert (out / f"{order_id}.svg").read_text().lstrip().startswith("<?xml")

    status = invoke("status", order_id, "--merchant-url", backend.url)
    assert status.exit_code == 0, status.output
    assert "open" in status.output and "12.50 EUR" in status.output and "R-42" in status.output

    request_id = json.loads(
        urllib.request.urlopen(f"{backend.url}/v1/orders/{order_id}", timeout=10).read()
    )["request_id"]
    notice = backend.fake.notice(request_id)
    post = urllib.request.Request(
        f"{backend.url}/v1/notices",
        data=notice.encode(),
        headers={"Content-Type": "application/jose"},
        method="POST",
    )
    assert urllib.request.urlopen(post, timeout=10).status == 200
    paid = invoke("status", order_id, "--merchant-url", backend.url)
    assert "paid" in paid.output and "Paid at" in paid.output


def test_status_of_an_unknown_order_is_bad_input(backend: Any) -> None:
    result = invoke("status", "mo_unknown_order_x", "--merchant-url", backend.url)
    assert result.exit_code == 2
    assert "not_found" in result.output


def test_a_backend_that_is_down_is_a_readable_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke(
        "request", "--amount", "1", "--currency", "EUR", "--merchant-url", f"http://127.0.0.1:{port}",
        "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "unavailable" in result.output


# --- request and status straight at the processor -------------------------------------------


def test_request_via_the_processor_with_an_api_key(
    processor: Any, key_file: Path, tmp_path: Path
) -> None:
    result = invoke(
        "request", "--amount", "3.20", "--currency", "EUR", "--processor", processor.url,
        "--api-key-file", str(key_file), "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    request_id = next(
        line.split()[-1] for line in result.output.splitlines() if line.startswith("Request")
    )
    assert (tmp_path / f"{request_id}.png").exists()
    sent = processor.fake.bodies[-1][2]
    assert sent["amount_minor"] == 320 and sent["idempotency_key"].startswith("ik_")
    status = invoke(
        "status", request_id, "--processor", processor.url, "--api-key-file", str(key_file)
    )
    assert status.exit_code == 0, status.output
    assert "open" in status.output and "3.20 EUR" in status.output


def test_a_wrong_api_key_is_refused(processor: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-key"
    write_secret(wrong, b"not-the-key")
    result = invoke(
        "request", "--amount", "1", "--currency", "EUR", "--processor", processor.url,
        "--api-key-file", str(wrong), "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "unauthenticated" in result.output


def test_an_exposed_api_key_file_is_refused(processor: Any, tmp_path: Path) -> None:
    exposed = tmp_path / "exposed-key"
    exposed.write_text(API_KEY)
    exposed.chmod(0o644)
    result = invoke(
        "request", "--amount", "1", "--currency", "EUR", "--processor", processor.url,
        "--api-key-file", str(exposed), "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "chmod 600" in result.output
    assert API_KEY not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "1", "--currency", "EUR"], "either --merchant-url or --processor"),
        (
            [
                "--amount",
                "1",
                "--currency",
                "EUR",
                "--merchant-url",
                "http://x",
                "--processor",
                "http://y",
            ],
            "either --merchant-url or --processor",
        ),
        (["--amount", "1", "--currency", "EUR", "--processor", "http://y"], "--api-key-file"),
        (
            ["--amount", "1.234", "--currency", "EUR", "--merchant-url", "http://x"],
            "amount_invalid",
        ),
        (["--amount", "ten", "--currency", "EUR", "--merchant-url", "http://x"], "amount_invalid"),
        (["--amount", "1", "--currency", "ZZZ", "--merchant-url", "http://x"], "currency_unknown"),
    ],
)
def test_bad_request_arguments_are_bad_input(args: list[str], message: str) -> None:
    result = invoke("request", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_malformed_id_is_bad_input() -> None:
    result = invoke("status", "../../etc/passwd", "--merchant-url", "http://x")
    assert result.exit_code == 2


# --- the real HTTP transport ----------------------------------------------------------------


def test_the_service_talks_to_its_processor_over_http(processor: Any, tmp_path: Path) -> None:
    async def main() -> None:
        database = Database(sqlite_url(tmp_path / "http.db"))
        await upgrade(database, "merchant")
        settings = MerchantSettings(
            merchant_id=MERCHANT, data_dir=tmp_path, processor_url=processor.url
        )
        service = MerchantService(
            settings,
            database,
            HttpProcessorTransport(processor.url),
            API_KEY,
            FixedClock(int(time.time())),
        )
        try:
            view = await service.create_order({"amount": "4.00", "currency": "EUR"})
            assert view["state"] == "open"
            matched, paid = await service.accept_notice(processor.fake.notice(view["request_id"]))
            assert matched and paid["state"] == "paid"
        finally:
            await service.close()
            await database.dispose()

    asyncio.run(main())


# --- serve as a process ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_runs_until_sigterm(processor: Any, key_file: Path, tmp_path: Path) -> None:
    port = _free_port()
    command = [
        sys.executable, "-c", "from semops.cli.merchant import merchant_app; merchant_app()",
        "serve", "--merchant-id", MERCHANT, "--data-dir", str(tmp_path / "shop"),
        "--processor", processor.url, "--api-key-file", str(key_file), "--port", str(port),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1)
                break
            except OSError:
                if process.poll() is not None:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    raise AssertionError(stderr) from None
                time.sleep(0.05)
        post = urllib.request.Request(
            f"{base}/v1/orders",
            data=json.dumps({"amount": "2.00", "currency": "EUR"}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        view = json.loads(urllib.request.urlopen(post, timeout=10).read())
        assert view["state"] == "open"
        page = urllib.request.urlopen(f"{base}/checkout/{view['order_id']}", timeout=10).read()
        assert b"2.00 EUR" in page
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert process.returncode == 0, process.stderr.read().decode() if process.stderr else ""
    assert (tmp_path / "shop" / f"{MERCHANT}.db").exists()
    log = (tmp_path / "shop" / "logs" / f"{MERCHANT}.log").read_text()
    assert API_KEY not in log
    assert os.stat(key_file).st_mode & 0o077 == 0
