"""The processor back office in a real Chromium, against real processes.

The router, bank-a and mno-b run as OS processes on SQLite (the pages are the same on
PostgreSQL; tests/processor/test_backoffice.py runs the back office's queries and actions
on both). Customers pay with the real wallet code; the operator uses the pages the way a
person does: typing the token, following links, tabbing to a button and pressing Enter.
Each page and state is kept as a screenshot under test-artifacts/screenshots/backoffice-*.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from playwright.sync_api import Locator, Page, expect

from semops.audit.verify import verify_data_dir
from semops.core.money import format_amount
from semops.devnet.actors import (
    Customer,
    Merchant,
    balance,
    create_customer,
    create_merchant,
    enrol,
    request_payment,
)
from semops.devnet.network import Network, new_layout
from semops.protocol import OrderState
from semops.wallet.service import PaymentOutcome
from tests.web.conftest import Shot

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
PIN: Final = "4821"
WRONG_PIN: Final = "9753"
BANK: Final = "bank-a"
# Generous: two cores are shared with other test runs.
WAIT_MS: Final = 20_000
GENERIC_FAILURE: Final = "Sign-in failed: that operator token was not accepted."


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run the async wallet code beside Playwright's own event loop, in a thread."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(work())).result()  # type: ignore[arg-type]


def pay(customer: Customer, token: str, pin: str) -> PaymentOutcome:
    async def work() -> PaymentOutcome:
        wallet = customer.wallet()
        try:
            return await wallet.pay(await wallet.verify(token), pin)
        finally:
            await wallet.close()
            wallet.store.close()

    return run(work)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    layout = new_layout(tmp_path_factory.mktemp("backoffice"), fixed_ports=False, db_urls=None)
    network = Network(layout)
    try:
        network.start()
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def people(net: Network) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, name, phone in (
        ("alice", "Alice Example", "+4915112345678"),
        ("dave", "Dave Locked", "+4915100000042"),
    ):
        customer, code = create_customer(net, BANK, name, phone, 50_000, PIN)
        run(lambda customer=customer, code=code: enrol(net, customer, code))  # type: ignore[misc]
        found[key] = customer
    found["cafe"] = create_merchant(net, "mno-b", "corner-cafe", "Corner Café")
    found["books"] = create_merchant(net, BANK, "book-shop", "Book Shop")
    return found


def base(net: Network) -> str:
    return net.layout.processor_url(BANK) + "/backoffice"


def sign_in(page: Page, net: Network, token: str | None = None) -> None:
    """Type the token into the sign-in page (focused on arrival) and press Enter."""
    page.goto(base(net) + "/")
    expect(page).to_have_url(re.compile(r"/backoffice/login$"), timeout=WAIT_MS)
    expect(page.get_by_label("Operator token")).to_be_focused(timeout=WAIT_MS)
    page.keyboard.type(token if token is not None else net.operator_token(BANK))
    page.keyboard.press("Enter")


def tab_to(page: Page, target: Locator, tabs_max: int = 80) -> None:
    """Press Tab until `target` has the focus, as a keyboard user would."""
    for _ in range(tabs_max):
        page.keyboard.press("Tab")
        if target.evaluate("element => element === document.activeElement"):
            return
    raise AssertionError("the control cannot be reached with the Tab key")


def focus_is_visible(target: Locator) -> bool:
    return bool(target.evaluate("element => getComputedStyle(element).outlineStyle !== 'none'"))


def watch_console(page: Page) -> list[str]:
    """Console errors of the page (a Content-Security-Policy violation is one)."""
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    return errors


def page_errors(console_errors: list[str]) -> list[str]:
    """Errors other than an HTTP status the test asked for (the refused sign-in's 401, the
    unknown account's 404, the favicon nobody serves): a CSP violation stays in."""
    return [e for e in console_errors if not e.startswith("Failed to load resource")]


def session_cookies(page: Page) -> list[dict[str, Any]]:
    return [c for c in page.context.cookies() if c["name"] == "semops_backoffice"]


def audit_rows(net: Network, kind: str) -> list[tuple[int, str, dict[str, Any]]]:
    with sqlite3.connect(Path(net.data_dir) / BANK / f"{BANK}.db", timeout=10) as db:
        found = db.execute("SELECT seq, actor, data FROM audit_log WHERE kind = ?", (kind,))
        return [(int(seq), str(actor), json.loads(data)) for seq, actor, data in found]


def test_sign_in_then_customers_balances_and_a_payments_state(
    page: Page, net: Network, people: dict[str, Any], shot: Shot
) -> None:
    alice: Customer = people["alice"]
    cafe: Merchant = people["cafe"]
    created = request_payment(net, cafe, 1250, reference="INV-7")
    outcome = pay(alice, created["token"], PIN)
    assert outcome.state is OrderState.COMPLETED and outcome.receipt is not None
    transfer_id = outcome.receipt.transfer_id
    console_errors = watch_console(page)

    sign_in(page, net, token="not-the-token")
    expect(page.get_by_role("alert")).to_contain_text(GENERIC_FAILURE, timeout=WAIT_MS)
    assert session_cookies(page) == []
    shot(page, "backoffice-login-refused")

    sign_in(page, net)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=WAIT_MS)
    (cookie,) = session_cookies(page)
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
        True,
        "Strict",
        "/backoffice",
    )
    (eur,) = net.admin(BANK, "GET", "/v1/admin/position")["positions"]
    assert eur["net_position_minor"] <= -1250  # at least Alice's payment is owed to the scheme
    net_text = f"{format_amount(eur['net_position_minor'], 'EUR')} EUR"
    expect(page.locator("#position-EUR .net")).to_contain_text(net_text, timeout=WAIT_MS)
    expect(page.locator("#position-EUR .net")).to_contain_text("(we owe the scheme)")
    shot(page, "backoffice-overview")

    page.get_by_role("link", name="Customers", exact=True).click()
    row = page.locator(f'tr[data-account="{alice.account_id}"]')
    expect(row.locator(".balance")).to_have_text("487.50 EUR", timeout=WAIT_MS)
    page.get_by_label("Name, phone, or exact account or customer id").fill("dave")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#result-count")).to_contain_text("1 customer matching", timeout=WAIT_MS)
    expect(page.locator("#customers tbody tr")).to_have_count(1)
    shot(page, "backoffice-customers-search")
    page.get_by_label("Name, phone, or exact account or customer id").fill("")
    page.get_by_role("button", name="Search").click()
    shot(page, "backoffice-customers")

    page.get_by_role("link", name="Alice Example").click()
    expect(page.locator("#balance")).to_have_text("487.50 EUR", timeout=WAIT_MS)
    expect(page.locator("#available")).to_have_text("487.50 EUR")
    expect(page.locator("#held")).to_have_text("0.00 EUR")
    expect(page.locator("#movements")).to_contain_text("Corner Café")
    expect(page.locator("#movements")).to_contain_text("-12.50 EUR")
    expect(page.locator("#devices")).to_contain_text("Alice Example's phone")
    shot(page, "backoffice-account")

    page.get_by_role("link", name="Transfers").click()
    payment = page.locator(f'#transfers tr[data-transfer="{transfer_id}"]')
    expect(payment.locator(".state")).to_have_text("committed", timeout=WAIT_MS)
    expect(payment).to_contain_text("12.50 EUR")
    expect(payment).to_contain_text("routed")
    page.get_by_label("State").select_option("aborted")
    page.get_by_role("button", name="Show").click()
    expect(page.locator(f'tr[data-transfer="{transfer_id}"]')).to_have_count(0)
    page.get_by_label("State").select_option("committed")
    page.get_by_role("button", name="Show").click()
    expect(payment.locator(".state")).to_have_text("committed", timeout=WAIT_MS)
    shot(page, "backoffice-transfers")
    # The merchant's side of it lives at mno-b; at bank-a only our customer's order shows.
    assert balance(net, "mno-b", cafe.account_id) == 1250
    assert page_errors(console_errors) == []


def test_three_wrong_pins_lock_and_a_keyboard_unlock_is_audited_and_lets_them_pay(
    page: Page, net: Network, people: dict[str, Any], shot: Shot
) -> None:
    dave: Customer = people["dave"]
    created = request_payment(net, people["books"], 900)
    codes = [pay(dave, created["token"], WRONG_PIN).order.error_code for _ in range(3)]
    assert codes == ["pin_invalid", "pin_invalid", "pin_locked"]
    unlocks_before = audit_rows(net, "credential_unlocked")

    sign_in(page, net)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=WAIT_MS)
    page.goto(base(net) + "/credentials")
    locked = page.locator(f'#locked tr[data-account="{dave.account_id}"]')
    expect(locked).to_contain_text("Dave Locked", timeout=WAIT_MS)
    expect(locked).to_contain_text("3")
    shot(page, "backoffice-locked-pins")

    # A POST without the session's CSRF token, from this very browser: refused, no change.
    forged = page.request.post(
        f"{base(net)}/credentials/{dave.account_id}/unlock", form={"account": "x"}
    )
    assert forged.status == 403 and "nothing was changed" in forged.text()
    assert net.admin(BANK, "GET", f"/v1/admin/accounts/{dave.account_id}")["pin_locked"]
    assert audit_rows(net, "credential_unlocked") == unlocks_before

    button = page.get_by_role("button", name="Unlock the PIN of Dave Locked")
    page.locator("body").focus()
    tab_to(page, button)
    assert focus_is_visible(button)
    page.keyboard.press("Enter")
    status = page.get_by_role("status").filter(has_text="unlocked")
    expect(status).to_contain_text(f"PIN of account {dave.account_id} unlocked", timeout=WAIT_MS)
    expect(page.locator("#none-locked")).to_be_visible()
    shot(page, "backoffice-unlocked")

    (seq, actor, data) = audit_rows(net, "credential_unlocked")[-1]
    assert len(audit_rows(net, "credential_unlocked")) == len(unlocks_before) + 1
    assert data == {"account_id": dave.account_id}
    assert re.fullmatch(r"operator:backoffice:[0-9a-f]{12}", actor)
    expect(status).to_contain_text(f"Audit entry #{seq} records it.")
    page.get_by_role("link", name="Audit log").click()
    entry = page.locator(f'table.audit tr[data-seq="{seq}"]')
    expect(entry.locator(".actor")).to_have_text(actor, timeout=WAIT_MS)
    expect(entry).to_contain_text(dave.account_id)
    shot(page, "backoffice-audit")
    reports = run(lambda: verify_data_dir(net.data_dir))
    assert reports and all(report.ok for report in reports), reports

    assert not net.admin(BANK, "GET", f"/v1/admin/accounts/{dave.account_id}")["pin_locked"]
    again = pay(dave, created["token"], PIN)
    assert again.state is OrderState.COMPLETED
    assert balance(net, BANK, dave.account_id) == 50_000 - 900


def test_phone_viewport_then_logout_ends_the_session(
    phone_page: Page, net: Network, people: dict[str, Any], shot: Shot
) -> None:
    page = phone_page
    console_errors = watch_console(page)
    sign_in(page, net)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible(timeout=WAIT_MS)
    for path, name in (("/", "overview"), ("/customers", "customers"), ("/transfers", "transfers")):
        page.goto(base(net) + path)
        expect(page.locator("h1")).to_be_visible(timeout=WAIT_MS)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (path, width)  # wide tables scroll inside their own region
        shot(page, f"backoffice-{name}-phone")
    page.goto(f"{base(net)}/accounts/{people['alice'].account_id}")
    expect(page.locator("#balance")).to_contain_text("EUR", timeout=WAIT_MS)
    shot(page, "backoffice-account-phone")

    page.goto(f"{base(net)}/accounts/ac_nobody")
    expect(page.get_by_role("alert")).to_contain_text("no account with that id", timeout=WAIT_MS)
    shot(page, "backoffice-error-phone")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status").filter(has_text="You have signed out.")).to_be_visible(
        timeout=WAIT_MS
    )
    assert session_cookies(page) == []
    shot(page, "backoffice-signed-out")
    page.goto(base(net) + "/customers")
    expect(page).to_have_url(re.compile(r"/backoffice/login$"), timeout=WAIT_MS)
    expect(page.get_by_role("heading", name="Sign in to the back office")).to_be_visible()
    assert page_errors(console_errors) == []
