"""`semops wallet` through typer's CliRunner, against the in-memory payer processor:
arguments, validation, readable errors, exit codes, QR images, and the PIN never shown."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import segno
from typer.testing import CliRunner

from semops.cli import wallet as wallet_cli
from semops.cli.wallet import EXIT_PENDING, wallet_app
from semops.core.limits import REQUEST_TOKEN_MAX_BYTES
from semops.service.clock import SystemClock
from semops.wallet.core import pay_link
from semops.wallet.qr import decode_qr_image
from semops.wallet.store import WalletStore

from .scheme import ACTIVATION_CODE, FakeProcessor, Scheme

PIN = "4821"
runner = CliRunner()


@pytest.fixture
def processor(monkeypatch: pytest.MonkeyPatch) -> FakeProcessor:
    scheme = Scheme.build(int(time.time()))
    fake = FakeProcessor(scheme, SystemClock(), pin=PIN)
    monkeypatch.setattr(wallet_cli, "transport_factory", lambda url: fake)
    return fake


@pytest.fixture
def wallet_dir(tmp_path: Path) -> Path:
    return tmp_path / "wallet"


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(wallet_app, list(args), input=input)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def enroll(wallet_dir: Path) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test",
        "--code",
        ACTIVATION_CODE,
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input=f"{PIN}\n",
    )
    assert result.exit_code == 0, result.output


def pay(wallet_dir: Path, request: str, *extra: str, input: str = f"{PIN}\n"):
    return invoke(
        "pay", request, "--yes", "--pin-stdin", "--wallet-dir", str(wallet_dir), *extra, input=input
    )


# --- enroll ---------------------------------------------------------------------------------


def test_enroll_reads_the_pin_from_stdin_and_never_prints_it(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test/",
        "--code",
        ACTIVATION_CODE.lower(),
        "--name",
        "Alice's phone",
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input=f"{PIN}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Enrolled" in result.output and "alice-001" in result.output
    assert PIN not in result.output
    assert processor.pin == PIN


def test_enroll_asks_the_pin_twice_without_echo(processor: FakeProcessor, wallet_dir: Path) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test",
        "--code",
        ACTIVATION_CODE,
        "--wallet-dir",
        str(wallet_dir),
        input=f"{PIN}\n{PIN}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Choose a PIN" in result.output and "Repeat for confirmation" in result.output
    assert PIN not in result.output


def test_enroll_with_a_malformed_pin_is_bad_input(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test",
        "--code",
        ACTIVATION_CODE,
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input="12\n",
    )
    assert result.exit_code == 2
    assert "pin_format" in result.output
    assert processor.received == []


def test_enroll_with_a_wrong_code_is_refused(processor: FakeProcessor, wallet_dir: Path) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test",
        "--code",
        "WRONG-CODE-00",
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input=f"{PIN}\n",
    )
    assert result.exit_code == 1
    assert "activation_invalid" in result.output


def test_enroll_with_a_bad_url_is_bad_input(processor: FakeProcessor, wallet_dir: Path) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "ftp://bank-a",
        "--code",
        ACTIVATION_CODE,
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input=f"{PIN}\n",
    )
    assert result.exit_code == 2
    assert "validation_failed" in result.output


def test_enroll_without_required_options_is_a_usage_error(wallet_dir: Path) -> None:
    result = runner.invoke(wallet_app, ["enroll", "--wallet-dir", str(wallet_dir)])
    assert result.exit_code == 2
    assert "--processor" in result.output


def test_enroll_without_a_pin_on_stdin_is_bad_input(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    result = invoke(
        "enroll",
        "--processor",
        "http://bank-a.test",
        "--code",
        ACTIVATION_CODE,
        "--pin-stdin",
        "--wallet-dir",
        str(wallet_dir),
        input="",
    )
    assert result.exit_code == 2
    assert "no PIN" in result.output


# --- pay ------------------------------------------------------------------------------------


def test_pay_shows_the_verified_request_and_prints_the_receipt(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request(reference="INV-2031"))
    result = pay(wallet_dir, token)
    assert result.exit_code == 0, result.output
    for shown in ("Corner Shop", "12.50 EUR", "INV-2031", "signature verified", "Paid."):
        assert shown in result.output
    assert PIN not in result.output
    assert processor.payments == 1


def test_pay_accepts_a_link(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    result = pay(wallet_dir, pay_link(token))
    assert result.exit_code == 0, result.output


def test_pay_accepts_a_qr_image(processor: FakeProcessor, wallet_dir: Path, tmp_path: Path) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    image = tmp_path / "request.png"
    segno.make(pay_link(token), error="m").save(str(image), scale=4)
    result = pay(wallet_dir, str(image))
    assert result.exit_code == 0, result.output
    assert "Paid." in result.output


def test_pay_asks_for_confirmation_and_a_no_pays_nothing(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    result = invoke("pay", token, "--wallet-dir", str(wallet_dir), input="n\n")
    assert result.exit_code == 1
    assert "Pay 12.50 EUR to Corner Shop (corner-shop at MNO B)?" in result.output
    assert "internal" not in result.output  # a "no" is an answer, not a crash
    assert "nothing was paid" in result.output
    assert processor.payments == 0
    assert not [p for m, p, _ in processor.received if p == "/v1/wallet/orders"]


def test_pay_with_confirmation_and_a_hidden_pin_prompt(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    result = invoke("pay", token, "--wallet-dir", str(wallet_dir), input=f"y\n{PIN}\n")
    assert result.exit_code == 0, result.output
    assert "PIN" in result.output and PIN not in result.output


def test_pay_with_a_wrong_pin_fails_readably(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    result = pay(wallet_dir, token, input="0000\n")
    assert result.exit_code == 1
    assert "pin_invalid" in result.output and "attempts left" in result.output
    assert "0000" not in result.output


def test_pay_with_a_malformed_pin_is_bad_input(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    result = pay(wallet_dir, token, input="12ab\n")
    assert result.exit_code == 2
    assert "pin_format" in result.output
    assert "12ab" not in result.output


@pytest.mark.parametrize("garbage", ["hello", "semops:pay?r=", "a.b", "semops:other?r=a.b.c"])
def test_pay_with_something_that_is_not_a_request_is_bad_input(
    processor: FakeProcessor, wallet_dir: Path, garbage: str
) -> None:
    enroll(wallet_dir)
    result = pay(wallet_dir, garbage)
    assert result.exit_code == 2
    assert "token_invalid" in result.output


def test_pay_with_a_forged_request_is_refused(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    token, _ = processor.scheme.request(signer="bank-a")
    result = pay(wallet_dir, token)
    assert result.exit_code == 1
    assert "signer_mismatch" in result.output
    assert processor.payments == 0


def test_pay_with_an_image_that_holds_no_qr_is_bad_input(
    processor: FakeProcessor, wallet_dir: Path, tmp_path: Path
) -> None:
    enroll(wallet_dir)
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (64, 64), 255).save(blank)
    result = pay(wallet_dir, str(blank))
    assert result.exit_code == 2
    assert "no QR code" in result.output
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    result = pay(wallet_dir, str(not_an_image))
    assert result.exit_code == 2


def test_pay_before_enrolment_says_how_to_enrol(processor: FakeProcessor, wallet_dir: Path) -> None:
    token = processor.knows(processor.scheme.request())
    result = pay(wallet_dir, token)
    assert result.exit_code == 1
    assert "semops wallet enroll" in result.output


def test_a_lost_reply_is_pending_with_a_way_to_ask_and_never_pays_twice(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    processor.lose_replies = 1
    first = pay(wallet_dir, token)
    assert first.exit_code == EXIT_PENDING, first.output
    assert "Pending" in first.output
    store = WalletStore.open(wallet_dir)
    order_id = store.orders()[0].order_id
    store.close()
    assert f"semops wallet status {order_id}" in first.output
    # Paying the same request again resumes the same order: no PIN, no second payment.
    again = invoke("pay", token, "--wallet-dir", str(wallet_dir))
    assert again.exit_code == 0, again.output
    assert f"Resuming order {order_id}" in again.output
    assert processor.payments == 1
    posts = [jose for m, p, jose in processor.received if p == "/v1/wallet/orders"]
    assert len(posts) == 2 and posts[0] == posts[1]


def test_status_settles_a_pending_order(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    processor.lose_replies = 1
    pay(wallet_dir, token)
    store = WalletStore.open(wallet_dir)
    order_id = store.orders()[0].order_id
    store.close()
    result = invoke("status", order_id, "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 0, result.output
    assert "Paid." in result.output and order_id in result.output


def test_status_while_the_processor_is_down_is_pending(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    token = processor.knows(processor.scheme.request())
    processor.unavailable = True
    assert pay(wallet_dir, token).exit_code == EXIT_PENDING
    store = WalletStore.open(wallet_dir)
    order_id = store.orders()[0].order_id
    store.close()
    result = invoke("status", order_id, "--wallet-dir", str(wallet_dir))
    assert result.exit_code == EXIT_PENDING


def test_status_of_an_unknown_order_is_bad_input(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    result = invoke("status", "or_unknown_order", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 2
    assert "not_found" in result.output


# --- balance and history --------------------------------------------------------------------


def test_balance_is_printed_in_the_currency(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    result = invoke("balance", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 0, result.output
    assert "100.00 EUR" in result.output and "alice-001" in result.output


def test_history_lists_the_processors_entries(processor: FakeProcessor, wallet_dir: Path) -> None:
    enroll(wallet_dir)
    result = invoke("history", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 0, result.output
    assert "payment" in result.output and "deposit" in result.output
    assert "12.50 EUR" in result.output


def test_local_history_lists_this_wallets_orders(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    pay(wallet_dir, processor.knows(processor.scheme.request()))
    result = invoke("history", "--local", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "Corner Shop" in result.output


def test_a_processor_that_is_down_is_a_readable_error(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)
    processor.unavailable = True
    result = invoke("balance", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 1
    assert "unavailable" in result.output


# --- QR round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["token", "link"])
def test_a_qr_code_round_trips_the_token(
    processor: FakeProcessor, tmp_path: Path, kind: str
) -> None:
    token, _ = processor.scheme.request(reference="R" * 35)
    assert len(token.encode()) <= REQUEST_TOKEN_MAX_BYTES
    text = token if kind == "token" else pay_link(token)
    image = tmp_path / "qr.png"
    buffer = io.BytesIO()
    segno.make(text, error="m", micro=False).save(buffer, kind="png", scale=3, border=4)
    image.write_bytes(buffer.getvalue())
    assert decode_qr_image(image) == text


def test_an_unexpected_failure_is_one_line_not_a_traceback(
    processor: FakeProcessor, wallet_dir: Path
) -> None:
    enroll(wallet_dir)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom with secret details")

    processor.request = broken  # type: ignore[assignment,method-assign]
    result = invoke("balance", "--wallet-dir", str(wallet_dir))
    assert result.exit_code == 1
    assert "unexpected RuntimeError (internal)" in result.output
    assert "secret details" not in result.output


def test_help_lists_every_command() -> None:
    result = runner.invoke(wallet_app, ["--help"])
    assert result.exit_code == 0
    for command in ("enroll", "pay", "status", "balance", "history"):
        assert command in result.output


def test_the_wallet_folder_can_come_from_the_environment(
    processor: FakeProcessor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "from-env"
    monkeypatch.setenv("SEMOPS_WALLET_DIR", str(folder))
    result = invoke(
        "enroll", "--processor", "http://bank-a.test", "--code", ACTIVATION_CODE, "--pin-stdin",
        input=f"{PIN}\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (folder / "device.key").exists()
