"""`semops merchant`: run the merchant backend, and make or look up payment requests.

`request` and `status` talk either to a running merchant backend (`--merchant-url`) or,
for a till without a backend, straight to the processor's merchant API (`--processor`
with `--api-key-file`, the key the processor's admin handed out, in a 0600 file). The
request is printed as its token, its `semops:pay?r=` link and a QR code in the terminal,
and written as PNG and SVG files. Errors are one readable line with their code.

Exit codes: 0 done, 1 refused or failed, 2 bad input.
"""

from __future__ import annotations

import json
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
from semops.core.limits import ID_RANDOM_BYTES, MERCHANT_CALL_TIMEOUT_S, REQUEST_TTL_DEFAULT_S
from semops.core.money import format_amount, parse_amount
from semops.merchant.main import run
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
    typer.Option("--api-token-file", help="The merchant backend's API token, if it has one."),
]


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
) -> None:
    """Run the merchant backend until interrupted (Ctrl-C)."""
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
    )
    with _readable_errors():
        run_async(run(settings))


# --- request ------------------------------------------------------------------------------


async def _request_via_merchant(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await http_json("POST", f"{url}/v1/orders", body=body, headers=headers)


async def _request_via_processor(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    return await http_json("POST", f"{url}/v1/merchant/requests", body=body, headers=headers)


def _print_request(document: dict[str, Any], out_dir: Path) -> None:
    token = document.get("token")
    if not isinstance(token, str):
        raise SemopsError(E.MALFORMED, "the answer carries no request token")
    link = document.get("link") if isinstance(document.get("link"), str) else None
    link = link or PAY_LINK_PREFIX + token
    name = str(document.get("order_id") or document.get("request_id") or "request")
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
    png, svg = out_dir / f"{name}.png", out_dir / f"{name}.svg"
    png.write_bytes(qr_png(link))
    svg.write_bytes(qr_svg(link))
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
) -> None:
    """Create a payment request and show it as token, link and QR code."""
    kind, url = _target(merchant_url, processor, api_key_file)
    with _readable_errors():
        currency = currency.upper()
        amount_minor = parse_amount(amount, currency)  # bad input fails here, before a call
        if kind == "merchant":
            body: dict[str, Any] = {"amount": amount, "currency": currency}
            if reference is not None:
                body["reference"] = reference
            if ttl is not None:
                body["ttl_s"] = ttl
            document = run_async(_request_via_merchant(url, body, _bearer(api_token_file)))
        else:
            body = {
                "amount_minor": amount_minor,
                "currency": currency,
                "ttl_s": ttl or REQUEST_TTL_DEFAULT_S,
                "idempotency_key": f"ik_{b64url_encode(secrets.token_bytes(ID_RANDOM_BYTES))}",
            }
            if reference is not None:
                body["reference"] = reference
            document = run_async(_request_via_processor(url, body, _bearer(api_key_file)))
        if not isinstance(document, dict):
            raise SemopsError(E.MALFORMED, "the answer is not an object")
        _print_request(document, out_dir)


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
) -> None:
    """Show where an order or request stands (paid, open, expired, refunded…)."""
    kind, url = _target(merchant_url, processor, api_key_file)
    if not identifier.replace("_", "").replace("-", "").isalnum() or len(identifier) > 64:
        _exit("an id uses only letters, digits, '_' and '-'", EXIT_BAD_INPUT)
    with _readable_errors():
        if kind == "merchant":
            document = run_async(http_json("GET", f"{url}/v1/orders/{identifier}"))
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
