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

from .fakes import API_KEY, MERCHANT, PROCESSOR, FakeMerchantProcessor
from .live import LiveServer, processor_app

runner = CliRunner()
TOKEN = "cli-test-backend-token-20c4e9"


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
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-token"
    write_secret(path, TOKEN.encode())
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
        service = MerchantService(
            settings, database, fake, API_KEY, SystemClock(), trust=fake.trust
        )
        holder["service"] = service
        return create_merchant_app(service, TOKEN)

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
    backend: Any, token_file: Path, tmp_path: Path
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
        "--api-token-file",
        str(token_file),
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

    order = urllib.request.Request(
        f"{backend.url}/v1/orders/{order_id}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    request_id = json.loads(urllib.request.urlopen(order, timeout=10).read())["request_id"]
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
    # Every call that can move money carried a key; the order's was the CLI's own.
    (sent,) = [body for method, path, body in backend.fake.bodies if path.endswith("requests")]
    assert sent["idempotency_key"].startswith("ik_")


def test_a_refund_through_the_backend_is_done_once_per_key(
    backend: Any, token_file: Path, tmp_path: Path
) -> None:
    view = backend.call(backend.service.create_order({"amount": "9.00", "currency": "EUR"}))
    backend.call(backend.service.accept_notice(backend.fake.notice(view["request_id"])))
    args = ["--merchant-url", backend.url, "--api-token-file", str(token_file)]
    first = invoke("refund", view["order_id"], "--amount", "2.00", *args)
    assert first.exit_code == 0, first.output
    assert "Refunded." in first.output
    key = next(line.split()[-1] for line in first.output.splitlines() if line.startswith("Key"))
    again = invoke("refund", view["order_id"], "--amount", "2.00", "--idempotency-key", key, *args)
    assert again.exit_code == 0, again.output
    assert len(backend.fake.refunds) == 1  # the same key: the same refund, once
    other = invoke("refund", view["order_id"], "--amount", "3.00", "--idempotency-key", key, *args)
    assert other.exit_code == 1 and "idempotency_conflict" in other.output
    no_token = invoke("refund", view["order_id"], "--merchant-url", backend.url)
    assert no_token.exit_code == 1 and "unauthenticated" in no_token.output
    assert len(backend.fake.refunds) == 1


def test_a_refund_straight_at_the_processor_uses_the_key_as_refund_id(
    processor: Any, key_file: Path
) -> None:
    fake = processor.fake
    created = fake._create({"amount_minor": 500, "currency": "EUR", "idempotency_key": "ik_cli1"})
    request_id = json.loads(created.body)["request_id"]
    fake.mark_paid(request_id)
    args = ["--processor", processor.url, "--api-key-file", str(key_file)]
    result = invoke(
        "refund", request_id, "--amount", "1.50", "--idempotency-key", "ik_cli_r1", *args
    )
    assert result.exit_code == 0, result.output
    assert fake.refunds["ik_cli_r1"]["amount_minor"] == 150
    assert invoke("refund", request_id, *args).exit_code == 2  # the processor needs an amount


class _Answering:
    """A merchant "backend" that answers every order with the given document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    async def __call__(self) -> Any:
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse

        app = FastAPI()
        document = self.document

        @app.post("/v1/orders")
        async def order() -> JSONResponse:
            return JSONResponse(document, status_code=201)

        return app


@pytest.mark.parametrize("order_id", ["../../x", "/tmp/semops-cli-owned", "a/b", "..", "mo_ok\n"])
def test_an_order_id_from_the_answer_is_checked_before_it_names_a_file(
    order_id: str, tmp_path: Path, processor: Any
) -> None:
    created = processor.fake._create(
        {"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_x1"}
    )
    token = json.loads(created.body)["token"]
    out = tmp_path / "a" / "b" / "qr"
    before = sorted(tmp_path.rglob("*"))
    with LiveServer(_Answering({"order_id": order_id, "token": token})) as evil:
        result = invoke(
            "request", "--amount", "1", "--currency", "EUR", "--merchant-url", evil.url,
            "--out-dir", str(out),
        )  # fmt: skip
    assert result.exit_code != 0, result.output
    assert "not an id" in result.output
    assert sorted(tmp_path.rglob("*")) == before
    assert not Path("/tmp/semops-cli-owned.png").exists()


def test_a_planted_link_in_the_out_dir_is_not_followed(tmp_path: Path, processor: Any) -> None:
    created = processor.fake._create(
        {"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_x2"}
    )
    token = json.loads(created.body)["token"]
    out, victim = tmp_path / "qr", tmp_path / "victim"
    out.mkdir()
    victim.write_text("keep me")
    (out / "mo_planted01.png").symlink_to(victim)
    with LiveServer(_Answering({"order_id": "mo_planted01", "token": token})) as evil:
        result = invoke(
            "request", "--amount", "1", "--currency", "EUR", "--merchant-url", evil.url,
            "--out-dir", str(out),
        )  # fmt: skip
    assert result.exit_code != 0, result.output
    assert victim.read_text() == "keep me"


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
            trust=processor.fake.trust,
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


def _root_file(processor: Any, tmp_path: Path) -> Path:
    from semops.crypto.pki import certificate_pem

    path = tmp_path / "root-ca.crt"
    path.write_bytes(certificate_pem(processor.fake.pki.root))
    return path


def test_serve_runs_until_sigterm(
    processor: Any, key_file: Path, token_file: Path, tmp_path: Path
) -> None:
    port = _free_port()
    command = [
        sys.executable, "-c", "from semops.cli.merchant import merchant_app; merchant_app()",
        "serve", "--merchant-id", MERCHANT, "--data-dir", str(tmp_path / "shop"),
        "--processor", processor.url, "--api-key-file", str(key_file), "--port", str(port),
        "--api-token-file", str(token_file), "--root-ca", str(_root_file(processor, tmp_path)),
        "--processor-id", PROCESSOR,
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
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
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
    assert API_KEY not in log and TOKEN not in log
    assert os.stat(key_file).st_mode & 0o077 == 0
