"""`semops merchant`: run the merchant backend, and make or look up payment requests.

`request`, `refund` and `status` talk either to a running merchant backend
(`--merchant-url`, with `--api-token-file`, the backend's API token in a 0600 file) or, for
a till without a backend, straight to the processor's merchant API (`--processor` with
`--api-key-file`, the key the processor's admin handed out, in a 0600 file). The request is
printed as its token, its `semops:pay?r=` link and a QR code in the terminal, and written as
PNG and SVG files inside `--out-dir` (named by the order id, which must be an id: nothing is
ever written elsewhere). Every call that moves money carries an idempotency key
(`--idempotency-key`, else a fresh one, printed when the outcome is unknown): the same
command again with the same key never does it twice. Errors are one readable line with
their code.

Exit codes: 0 done, 1 refused or failed, 2 bad input.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import click
import typer
from rich.markup import escape

from semops.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, err, out, run_async
from semops.core.encoding import b64url_encode
from semops.core.errors import E, SemopsError
from semops.core.ids import check_id
from semops.core.limits import ID_RANDOM_BYTES, MERCHANT_CALL_TIMEOUT_S, REQUEST_TTL_DEFAULT_S
from semops.core.money import format_amount, parse_amount
from semops.merchant.main import SettingsRefused, check_settings, run
from semops.merchant.qr import make_qr, qr_png, qr_svg
from semops.merchant.service import PAY_LINK_PREFIX, MerchantSettings
from semops.service.files import SecretFileError, read_secret
from semops.service.http import Peer, error_from_problem

merchant_app = typer.Typer(
    help="The merchant backend: serve it, make payment requests, follow their status.",
    no_args_is_help=True,
)

_BAD_INPUT_CODES: Final = frozenset(
    {
        E.VALIDATION_FAILED.code,
        E.MALFORMED.code,
        E.AMOUNT_INVALID.code,
        E.AMOUNT_OUT_OF_RANGE.code,
        E.CURRENCY_UNKNOWN.code,
        E.NOT_FOUND.code,
    }
)

MerchantUrl = Annotated[
    str | None,
    typer.Option("--merchant-url", help="A running merchant backend, e.g. http://127.0.0.1:8600."),
]
ProcessorUrl = Annotated[
    str | None, typer.Option("--processor", help="Your processor's URL (without a backend).")
]
ApiKeyFile = Annotated[
    Path | None,
    typer.Option("--api-key-file", help="Your API key at the processor (a 0600 file)."),
]
ApiTokenFile = Annotated[
    Path | None,
    typer.Option("--api-token-file", help="The merchant backend's API token (a 0600 file)."),
]
IdempotencyKeyOption = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Repeat a call safely: the same key never does it twice (default: a new one).",
    ),
]
_NO_ANSWER: Final = frozenset({E.TIMEOUT.code, E.UNAVAILABLE.code})


def _exit(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def _readable_errors() -> Iterator[None]:
    try:
        yield
    except SemopsError as error:
        code = EXIT_BAD_INPUT if error.code in _BAD_INPUT_CODES else EXIT_FAILED
        _exit(f"{error.detail} ({error.code})", code)
    except SettingsRefused as error:
        _exit(str(error), EXIT_BAD_INPUT)
    except SecretFileError as error:
        _exit(str(error), EXIT_FAILED)
    except OSError as error:
        _exit(f"{error.filename or ''} {error.strerror or error}".strip(), EXIT_FAILED)
    except (
        typer.Exit,
        typer.Abort,
        click.exceptions.Exit,
        click.exceptions.Abort,
        click.ClickException,
    ):
        raise
    except Exception as error:  # a bug: one line for the person, never a traceback
        _exit(f"unexpected {type(error).__name__} (internal)", EXIT_FAILED)


def _field(label: str, value: str) -> None:
    out.print(f"[bold]{label:<13}[/bold] {escape(value)}")


async def http_json(
    method: str, url: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> Any:
    """One JSON call; a problem answer raises its SemopsError."""
    peer = Peer()
    try:
        status, content_type, raw = await peer.request(
            method, url, timeout_s=MERCHANT_CALL_TIMEOUT_S, json_body=body, headers=headers
        )
    finally:
        await peer.close()
    if not 200 <= status < 300:
        raise error_from_problem(status, content_type, raw)
    try:
        return json.loads(raw)
    except ValueError:
        raise SemopsError(E.MALFORMED, "the answer is not JSON") from None


def _target(
    merchant_url: str | None, processor: str | None, api_key_file: Path | None
) -> tuple[str, str]:
    """('merchant', url) or ('processor', url), or a usage error."""
    if (merchant_url is None) == (processor is None):
        _exit("give either --merchant-url or --processor (with --api-key-file)", EXIT_BAD_INPUT)
    if merchant_url is not None:
        return "merchant", merchant_url.rstrip("/")
    assert processor is not None
    if api_key_file is None:
        _exit("--processor needs --api-key-file", EXIT_BAD_INPUT)
    return "processor", processor.rstrip("/")


def _bearer(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    return {"Authorization": f"Bearer {read_secret(path).decode('ascii').strip()}"}


def _idempotency_key(given: str | None) -> str:
    """The key of a money-moving call: the one given (to repeat a call), else a new one."""
    if given is not None:
        try:
            return check_id(given)
        except SemopsError as error:
            _exit(f"--idempotency-key: {error.detail}", EXIT_BAD_INPUT)
    return f"ik_{b64url_encode(secrets.token_bytes(ID_RANDOM_BYTES))}"


@contextmanager
def _retry_hint(key: str, command: str) -> Iterator[None]:
    """When no answer came, say how to ask again without doing it twice."""
    try:
        yield
    except SemopsError as error:
        if error.code in _NO_ANSWER:
            err.print(
                f"[yellow]The outcome is not known.[/yellow] Run the same {command} again "
                f"with --idempotency-key {escape(key)}: it is never done twice."
            )
        raise


# --- serve --------------------------------------------------------------------------------


@merchant_app.command("serve")
def serve(
    merchant_id: Annotated[str, typer.Option("--merchant-id", help="Your id at the processor.")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Folder: database, logs.")],
    processor: Annotated[str, typer.Option("--processor", help="Your processor's URL.")],
    db: Annotated[str | None, typer.Option("--db", help="Database URL.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8600,
    api_key_file: ApiKeyFile = None,
    public_url: Annotated[
        str | None, typer.Option("--public-url", help="Where customers reach the checkout.")
    ] = None,
    api_token_file: ApiTokenFile = None,
    ttl: Annotated[
        int, typer.Option("--ttl", help="Seconds a payment request stays payable.")
    ] = REQUEST_TTL_DEFAULT_S,
    root_ca: Annotated[
        Path | None,
        typer.Option("--root-ca", help="The scheme root certificate (PEM), set up out of band."),
    ] = None,
    processor_id: Annotated[
        str | None,
        typer.Option("--processor-id", help="Your processor's scheme id, e.g. mno-b."),
    ] = None,
    processor_key_pin: Annotated[
        str | None,
        typer.Option(
            "--processor-key-pin",
            help="Or pin your processor's signing key: its RFC 7638 thumbprint.",
        ),
    ] = None,
    development: Annotated[
        bool,
        typer.Option(
            "--development", help="No API token: open order API and pages, on loopback only."
        ),
    ] = False,
) -> None:
    """Run the merchant backend until interrupted (Ctrl-C).

    It needs an API token (--api-token-file) and a trust anchor for its processor's notice
    key (--root-ca with --processor-id, or --processor-key-pin)."""
    settings = MerchantSettings(
        merchant_id=merchant_id,
        data_dir=data_dir,
        processor_url=processor,
        db_url=db,
        host=host,
        port=port,
        api_key_file=api_key_file,
        public_url=public_url,
        api_token_file=api_token_file,
        request_ttl_s=ttl,
        root_ca_file=root_ca,
        processor_id=processor_id,
        processor_key_pin=processor_key_pin,
        development=development,
    )
    with _readable_errors():
        check_settings(settings)
        run_async(run(settings))


# --- request ------------------------------------------------------------------------------


async def _request_via_merchant(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await http_json("POST", f"{url}/v1/orders", body=body, headers=headers)


async def _request_via_processor(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await http_json("POST", f"{url}/v1/merchant/requests", body=body, headers=headers)


def _file_name(document: dict[str, Any]) -> str:
    """The name of the QR files: the answer's order (or request) id, if it is an id.

    The name comes from a server's answer, so it is checked like any input: an id has only
    letters, digits, '_' and '-' (no '/', no '..'), so the files stay in --out-dir."""
    name = document.get("order_id") or document.get("request_id")
    try:
        return check_id(name) if name is not None else "request"
    except SemopsError:
        raise SemopsError(E.MALFORMED, "the answer's order id is not an id") from None


def _write_inside(folder: Path, name: str, data: bytes) -> Path:
    """Write `folder/name`, never through a link planted there, never outside `folder`."""
    path = folder / name
    if path.resolve().parent != folder.resolve():
        raise SemopsError(E.MALFORMED, "the file would be written outside --out-dir")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, 0o644)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return path


def _print_request(document: dict[str, Any], out_dir: Path) -> None:
    token = document.get("token")
    if not isinstance(token, str):
        raise SemopsError(E.MALFORMED, "the answer carries no request token")
    link = document.get("link") if isinstance(document.get("link"), str) else None
    link = link or PAY_LINK_PREFIX + token
    if not link.startswith(PAY_LINK_PREFIX):
        raise SemopsError(E.MALFORMED, "the answer's link is not a payment link")
    name = _file_name(document)
    out.print("[bold green]Payment request created.[/bold green]")
    for label, member in (("Order", "order_id"), ("Request", "request_id")):
        if document.get(member):
            _field(label, str(document[member]))
    if document.get("checkout_url"):
        _field("Checkout", str(document["checkout_url"]))
    _field("Token", token)
    _field("Link", link)
    make_qr(link).terminal(out=sys.stdout, compact=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = _write_inside(out_dir, f"{name}.png", qr_png(link))
    svg = _write_inside(out_dir, f"{name}.svg", qr_svg(link))
    _field("QR (PNG)", str(png))
    _field("QR (SVG)", str(svg))


@merchant_app.command("request")
def request(
    amount: Annotated[str, typer.Option("--amount", help="Amount, e.g. 12.50.")],
    currency: Annotated[str, typer.Option("--currency", help="ISO 4217 code, e.g. EUR.")],
    reference: Annotated[
        str | None, typer.Option("--reference", help="Your reference (invoice, till).")
    ] = None,
    merchant_url: MerchantUrl = None,
    processor: ProcessorUrl = None,
    api_key_file: ApiKeyFile = None,
    api_token_file: ApiTokenFile = None,
    ttl: Annotated[int | None, typer.Option("--ttl", help="Seconds it stays payable.")] = None,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Where to write the QR code files.")
    ] = Path("."),
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Create a payment request and show it as token, link and QR code."""
    kind, url = _target(merchant_url, processor, api_key_file)
    key = _idempotency_key(idempotency_key)
    with _readable_errors(), _retry_hint(key, "request"):
        currency = currency.upper()
        amount_minor = parse_amount(amount, currency)  # bad input fails here, before a call
        if kind == "merchant":
            body: dict[str, Any] = {"amount": amount, "currency": currency}
            if reference is not None:
                body["reference"] = reference
            if ttl is not None:
                body["ttl_s"] = ttl
            headers = {**_bearer(api_token_file), "Idempotency-Key": key}
            document = run_async(_request_via_merchant(url, body, headers))
        else:
            body = {
                "amount_minor": amount_minor,
                "currency": currency,
                "ttl_s": ttl or REQUEST_TTL_DEFAULT_S,
                "idempotency_key": key,
            }
            if reference is not None:
                body["reference"] = reference
            document = run_async(_request_via_processor(url, body, _bearer(api_key_file)))
        if not isinstance(document, dict):
            raise SemopsError(E.MALFORMED, "the answer is not an object")
        _print_request(document, out_dir)


# --- refund -------------------------------------------------------------------------------


def _checked_id(identifier: str) -> str:
    try:
        return check_id(identifier)
    except SemopsError:
        _exit("an id is 8 to 64 letters, digits, '_' and '-'", EXIT_BAD_INPUT)


@merchant_app.command("refund")
def refund(
    identifier: Annotated[
        str, typer.Argument(help="Order id (backend) or request id (processor).")
    ],
    amount: Annotated[
        str | None,
        typer.Option("--amount", help="Amount to refund, e.g. 2.50 (backend: default all)."),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (one line).")] = None,
    merchant_url: MerchantUrl = None,
    processor: ProcessorUrl = None,
    api_key_file: ApiKeyFile = None,
    api_token_file: ApiTokenFile = None,
    currency: Annotated[
        str, typer.Option("--currency", help="The payment's currency (processor only).")
    ] = "EUR",
    idempotency_key: IdempotencyKeyOption = None,
) -> None:
    """Refund a paid order (all of it, or --amount), once per idempotency key."""
    kind, url = _target(merchant_url, processor, api_key_file)
    identifier = _checked_id(identifier)
    key = _idempotency_key(idempotency_key)
    if kind == "processor" and amount is None:
        _exit("--processor needs --amount (the processor refunds exact amounts)", EXIT_BAD_INPUT)
    with _readable_errors(), _retry_hint(key, "refund"):
        if kind == "merchant":
            body: dict[str, Any] = {} if amount is None else {"amount": amount}
            if reason is not None:
                body["reason"] = reason
            headers = {**_bearer(api_token_file), "Idempotency-Key": key}
            answer = run_async(
                http_json(
                    "POST", f"{url}/v1/orders/{identifier}/refunds", body=body, headers=headers
                )
            )
            document = answer.get("refund") if isinstance(answer, dict) else None
        else:
            assert amount is not None, "checked before the call"
            body = {
                "refund_id": key,
                "amount_minor": parse_amount(amount, currency.upper()),
            }
            if reason is not None:
                body["reason"] = reason
            document = run_async(
                http_json(
                    "POST",
                    f"{url}/v1/merchant/requests/{identifier}/refunds",
                    body=body,
                    headers=_bearer(api_key_file),
                )
            )
    if not isinstance(document, dict):
        _exit("the answer is not an object", EXIT_FAILED)
    state = str(document.get("state", "?"))
    if state == "failed":
        reason_code = document.get("reason_code") or document.get("error_code")
        _exit(f"the refund was refused ({reason_code})", EXIT_FAILED)
    done = state == "completed"
    out.print(
        "[bold green]Refunded.[/bold green]"
        if done
        else "[bold yellow]The refund is on its way.[/bold yellow]"
    )
    _field("Refund", str(document.get("refund_id", "")))
    _field("State", state)
    _field("Key", key)


# --- status -------------------------------------------------------------------------------


def _when(timestamp: Any) -> str:
    if type(timestamp) is not int:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@merchant_app.command("status")
def status(
    identifier: Annotated[
        str, typer.Argument(help="Order id (backend) or request id (processor).")
    ],
    merchant_url: MerchantUrl = None,
    processor: ProcessorUrl = None,
    api_key_file: ApiKeyFile = None,
    api_token_file: ApiTokenFile = None,
) -> None:
    """Show where an order or request stands (paid, open, expired, refunded…)."""
    kind, url = _target(merchant_url, processor, api_key_file)
    identifier = _checked_id(identifier)
    with _readable_errors():
        if kind == "merchant":
            # Without the token the backend shows what a customer may see (no refunds).
            document = run_async(
                http_json("GET", f"{url}/v1/orders/{identifier}", headers=_bearer(api_token_file))
            )
        else:
            document = run_async(
                http_json(
                    "GET",
                    f"{url}/v1/merchant/requests/{identifier}",
                    headers=_bearer(api_key_file),
                )
            )
    if not isinstance(document, dict):
        _exit("the answer is not an object", EXIT_FAILED)
    state = str(document.get("state", "?"))
    colour = "green" if state in ("paid", "partially_refunded", "refunded") else "yellow"
    _field("State", "")
    out.print(f"[bold {colour}]{escape(state)}[/bold {colour}]")
    currency = str(document.get("currency"))
    with suppress(KeyError, SemopsError, TypeError):
        _field("Amount", f"{format_amount(document['amount_minor'], currency)} {currency}")
    for label, member in (
        ("Order", "order_id"),
        ("Request", "request_id"),
        ("Reference", "reference"),
        ("Transfer", "transfer_id"),
    ):
        if document.get(member):
            _field(label, str(document[member]))
    if document.get("paid_at"):
        _field("Paid at", _when(document["paid_at"]))
    if document.get("expires_at"):
        _field("Expires at", _when(document["expires_at"]))
    if document.get("refunded_minor"):
        _field("Refunded", f"{format_amount(document['refunded_minor'], currency)} {currency}")


__all__ = ["http_json", "merchant_app"]
