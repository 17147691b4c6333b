"""`semops wallet`: the customer's wallet on the command line.

A shell over `semops.wallet`: it asks (confirmation, PIN without echo), calls the wallet's
operations and prints readable results. The PIN is never printed, logged or stored; it
lives in memory until it is sealed into the PIN block. Errors are one line with their
stable code, never a traceback.

Exit codes: 0 done, 1 refused or failed, 2 bad input, 3 pending (the outcome is not known
yet: `semops wallet status ORDER_ID` asks again, and paying the same request again re-sends
the same order, which can never pay twice).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, TypeVar

import click
import typer
from rich.markup import escape
from rich.table import Table

from semops.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, err, out, run_async
from semops.core.errors import E, SemopsError
from semops.core.money import format_amount
from semops.protocol import OrderState, Receipt
from semops.service.clock import SystemClock
from semops.service.files import SecretFileError
from semops.wallet.client import HttpTransport, Transport
from semops.wallet.service import PaymentOutcome, VerifiedRequest, Wallet
from semops.wallet.store import DEFAULT_WALLET_DIR, OrderRecord, WalletStore

EXIT_PENDING: Final = 3
DEFAULT_DEVICE_NAME: Final = "SEMOPS CLI wallet"
# Refusals caused by what the person typed or pointed at, answered with exit code 2.
_BAD_INPUT_CODES: Final = frozenset(
    {
        E.TOKEN_INVALID.code,
        E.MALFORMED.code,
        E.VALIDATION_FAILED.code,
        E.PIN_FORMAT.code,
        E.AMOUNT_INVALID.code,
        E.CURRENCY_UNKNOWN.code,
        E.TOO_LARGE.code,
        E.NOT_FOUND.code,
    }
)

# The wallet's transport to its processor; tests replace it with an in-memory processor.
transport_factory: Callable[[str], Transport] = HttpTransport

wallet_app = typer.Typer(
    help="The customer's wallet: enrol a device, pay requests, see balance and history.",
    no_args_is_help=True,
)

WalletDir = Annotated[
    Path,
    typer.Option(
        "--wallet-dir",
        envvar="SEMOPS_WALLET_DIR",
        help="Wallet folder (device key and local state).",
    ),
]
PinStdin = Annotated[
    bool,
    typer.Option("--pin-stdin", help="Read the PIN from the first line of standard input."),
]

T = TypeVar("T")


def _exit(message: str, code: int) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(code)


@contextmanager
def _readable_errors() -> Iterator[None]:
    """Every expected failure becomes one line with its code and an exit code."""
    try:
        yield
    except SemopsError as error:
        code = EXIT_BAD_INPUT if error.code in _BAD_INPUT_CODES else EXIT_FAILED
        _exit(f"{error.detail} ({error.code})", code)
    except SecretFileError as error:
        _exit(str(error), EXIT_FAILED)
    except FileExistsError as error:
        _exit(f"{error.filename} already exists; refusing to overwrite it", EXIT_FAILED)
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


def _with_wallet(wallet_dir: Path, operation: Callable[[Wallet], Awaitable[T]]) -> T:
    """Open the wallet folder, run one async operation on it, close everything."""
    store = WalletStore.open(wallet_dir)

    async def main() -> T:
        wallet = Wallet(store, transport_factory, SystemClock())
        try:
            return await operation(wallet)
        finally:
            await wallet.close()

    try:
        return run_async(main())
    finally:
        store.close()


def _read_pin_line() -> str:
    line = sys.stdin.readline()
    if not line:
        _exit("no PIN on standard input", EXIT_BAD_INPUT)
    return line.rstrip("\r\n")


def _money(amount_minor: Any, currency: Any) -> str:
    try:
        return f"{format_amount(amount_minor, currency)} {currency}"
    except (SemopsError, TypeError):
        return "?"


def _when(timestamp: Any) -> str:
    if type(timestamp) is not int:
        return "?"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _field(label: str, value: str) -> None:
    out.print(f"[bold]{label:<13}[/bold] {escape(value)}")


# --- enroll -------------------------------------------------------------------------------


@wallet_app.command("enroll")
def enroll(
    processor: Annotated[str, typer.Option("--processor", help="Your processor's URL.")],
    code: Annotated[str, typer.Option("--code", help="Activation code from your processor.")],
    name: Annotated[str, typer.Option("--name", help="A name for this device.")] = (
        DEFAULT_DEVICE_NAME
    ),
    pin_stdin: PinStdin = False,
    wallet_dir: WalletDir = DEFAULT_WALLET_DIR,
) -> None:
    """Enrol this device at your processor: choose a PIN, or, if your account already has
    a device, type the PIN you use there (it is checked, not changed)."""
    if pin_stdin:
        pin = _read_pin_line()
    else:
        pin = typer.prompt(
            "Choose a PIN (4 to 6 digits; or your current one, to add this device)",
            hide_input=True,
            confirmation_prompt=True,
        )
    with _readable_errors():
        enrolled = _with_wallet(
            wallet_dir, lambda wallet: wallet.enroll(processor, code.strip().upper(), name, pin)
        )
    out.print("[bold green]Enrolled.[/bold green]")
    _field("Processor", f"{enrolled.processor_id} ({enrolled.processor_url})")
    _field("Account", enrolled.account_id)
    if enrolled.customer_name:
        _field("Customer", enrolled.customer_name)
    _field("Device key", enrolled.device_kid)
    _field("Wallet", str(wallet_dir.expanduser()))


# --- pay ----------------------------------------------------------------------------------


def _read_payment_input(source: str) -> str:
    """The text of the request: a QR image file, or the token or link itself."""
    path = Path(source)
    try:
        is_image = not source.startswith("semops:") and path.is_file()
    except OSError:  # a token is longer than a file name may be
        is_image = False
    if is_image:
        from semops.wallet.qr import decode_qr_image

        return decode_qr_image(path)
    return source


def _show_request(verified: VerifiedRequest, now: int) -> None:
    request = verified.request
    out.print("[bold]Payment request[/bold] (signature verified)")
    _field("Pay to", f"{request.payee_name}")
    _field("Payee id", f"{request.payee_id} at {verified.payee_processor_name}")
    _field("Amount", _money(request.amount_minor, request.currency))
    if request.reference:
        _field("Reference", request.reference)
    minutes, seconds = divmod(max(request.expires_at - now, 0), 60)
    _field("Expires in", f"{minutes} min {seconds} s")


def _show_receipt(receipt: Receipt) -> None:
    out.print("[bold green]Paid.[/bold green] Receipt (signed by your processor):")
    _field("Paid to", receipt.payee_name)
    _field("Amount", _money(receipt.amount_minor, receipt.currency))
    if receipt.reference:
        _field("Reference", receipt.reference)
    _field("Order", receipt.order_id)
    _field("Transfer", receipt.transfer_id)
    _field("Committed", _when(receipt.committed_at))
    _field("Proof", f"fulfilment {receipt.fulfilment} (hashes to the request's condition)")


def _report(outcome: PaymentOutcome) -> int:
    """Print where the order stands; return the exit code that says it."""
    order = outcome.order
    if outcome.note:
        err.print(f"[yellow]warning:[/yellow] {escape(outcome.note)}")
    if order.state is OrderState.COMPLETED and outcome.receipt is not None:
        _show_receipt(outcome.receipt)
        return EXIT_OK
    if order.state is OrderState.FAILED:
        detail = order.error_detail or "refused"
        err.print(
            f"[bold red]Not paid:[/bold red] {escape(detail)} ({escape(order.error_code or '?')})"
        )
        return EXIT_FAILED
    if order.state is OrderState.ABANDONED:
        err.print("[bold red]Not paid:[/bold red] the order was abandoned before it was sent")
        return EXIT_FAILED
    out.print(
        "[bold yellow]Pending:[/bold yellow] your processor has not confirmed the payment yet. "
        "Nothing will be paid twice."
    )
    _field("Order", order.order_id)
    out.print(f"Ask again with: [bold]semops wallet status {escape(order.order_id)}[/bold]")
    return EXIT_PENDING


def _confirm(verified: VerifiedRequest) -> None:
    request = verified.request
    # The name with the id and the bank that vouches for both: a look-alike name cannot pass
    # for another payee's (DESIGN.md §6).
    payee = f"{request.payee_name} ({request.payee_id} at {verified.payee_processor_name})"
    question = f"Pay {_money(request.amount_minor, request.currency)} to {payee}?"
    if not typer.confirm(question, default=False):
        err.print("Cancelled: nothing was paid.")
        raise typer.Exit(EXIT_FAILED)


@wallet_app.command("pay")
def pay(
    request: Annotated[
        str, typer.Argument(help="The request: a token, a semops:pay?r= link, or a QR image.")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    pin_stdin: PinStdin = False,
    wallet_dir: WalletDir = DEFAULT_WALLET_DIR,
) -> None:
    """Verify a payment request, confirm it, approve it with your PIN, and pay."""

    async def operation(wallet: Wallet) -> int:
        verified = await wallet.verify(_read_payment_input(request))
        _show_request(verified, wallet.clock.now())
        existing = wallet.existing_order(verified.request.request_id)
        if existing is not None:
            if not existing.is_terminal:
                out.print(
                    f"Resuming order {escape(existing.order_id)} for this request "
                    "(the same order is sent again; it cannot pay twice)."
                )
            return _report(await wallet.resume(existing))
        if not yes:
            _confirm(verified)
        pin = _read_pin_line() if pin_stdin else typer.prompt("PIN", hide_input=True)
        return _report(await wallet.pay(verified, pin))

    with _readable_errors():
        code = _with_wallet(wallet_dir, operation)
    raise typer.Exit(code)


# --- status, balance, history --------------------------------------------------------------


@wallet_app.command("status")
def status(
    order_id: Annotated[str, typer.Argument(help="The order id printed by `semops wallet pay`.")],
    wallet_dir: WalletDir = DEFAULT_WALLET_DIR,
) -> None:
    """Ask your processor where a payment stands."""

    async def operation(wallet: Wallet) -> int:
        record = wallet.store.require_order(order_id)
        return _report(await wallet.status(record.order_id))

    with _readable_errors():
        code = _with_wallet(wallet_dir, operation)
    raise typer.Exit(code)


@wallet_app.command("balance")
def balance(wallet_dir: WalletDir = DEFAULT_WALLET_DIR) -> None:
    """Show your account's balance at your processor."""
    with _readable_errors():
        document = _with_wallet(wallet_dir, lambda wallet: wallet.balance())
    currency = document.get("currency")
    _field("Account", str(document.get("account_id", "?")))
    _field("Balance", _money(document.get("balance_minor"), currency))
    if "available_minor" in document:
        _field("Available", _money(document.get("available_minor"), currency))


def _local_history(records: list[OrderRecord]) -> Table:
    table = Table(title="Orders made by this wallet", show_lines=False)
    for column in ("Created", "State", "Amount", "Payee", "Reference", "Order"):
        table.add_column(column)
    for record in records:
        table.add_row(
            _when(record.created_at),
            record.state.value,
            _money(record.amount_minor, record.currency),
            escape(record.payee_name),
            escape(record.reference or ""),
            record.order_id,
        )
    return table


@wallet_app.command("history")
def history(
    local: Annotated[
        bool, typer.Option("--local", help="Show this wallet's own orders instead.")
    ] = False,
    wallet_dir: WalletDir = DEFAULT_WALLET_DIR,
) -> None:
    """Show your account's history at your processor (newest first)."""
    if local:
        with _readable_errors():
            store = WalletStore.open(wallet_dir)
            try:
                out.print(_local_history(store.orders()))
            finally:
                store.close()
        return
    with _readable_errors():
        document = _with_wallet(wallet_dir, lambda wallet: wallet.history())
    entries = document.get("entries")
    table = Table(title="Account history")
    for column in ("When", "Kind", "Amount", "Payee", "Order / transfer"):
        table.add_column(column)
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        table.add_row(
            _when(entry.get("created_at")),
            escape(str(entry.get("kind", "?"))),
            _money(entry.get("amount_minor"), entry.get("currency")),
            escape(str(entry.get("payee_name") or "")),
            escape(str(entry.get("order_id") or entry.get("transfer_id") or "")),
        )
    out.print(table)


_NOTICE_TEXTS: Final = {
    "activation_code_issued": "{who} issued a code to add a device",
    "device_enrolled": "device {device} was added",
    "device_revoked": "{who} revoked device {device}",
    "credential_reset": "{who} reset the PIN and revoked every device",
    "credential_unlocked": "{who} unlocked the PIN",
}


@wallet_app.command("notices")
def notices(wallet_dir: WalletDir = DEFAULT_WALLET_DIR) -> None:
    """Show what changed on your account's security: codes issued, devices added or
    revoked, PIN reset. Anything you did not do: revoke that device and call your bank."""
    with _readable_errors():
        document = _with_wallet(wallet_dir, lambda wallet: wallet.notices())
    table = Table(title="Changes to your account's security")
    for column in ("When", "What"):
        table.add_column(column)
    listed = document.get("notices")
    for notice in listed if isinstance(listed, list) else []:
        if not isinstance(notice, dict):
            continue
        who = "your bank" if notice.get("actor") == "operator" else "you"
        template = _NOTICE_TEXTS.get(str(notice.get("kind")), str(notice.get("kind")))
        text = template.format(who=who, device=notice.get("device_name") or "?")
        table.add_row(_when(notice.get("created_at")), escape(text[:1].upper() + text[1:]))
    out.print(table)


__all__ = ["EXIT_PENDING", "wallet_app"]
