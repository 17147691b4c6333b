"""The merchant's pages in a real Chromium, against a real network.

The router, bank-a and mno-b run as OS processes (SQLite: the pages are the same on both
databases; the endpoints behind them are tested on both in
tests/merchant/test_pages_api.py), and so does the merchant backend of the Corner Café at
mno-b, started with an API token, as a shop would run it. Alice banks at bank-a and pays
with the real wallet code. Covered, as a person uses them:

- checkout: staff sign in, put a basket together, and the checkout page shows the amount,
  the QR code and the link; the customer's wallet reads the QR *from the screen* and pays,
  and the page turns to "paid", with its processor's guarantee, by itself (no reload);
- the QR round trip: the PNG the merchant serves decodes (zxing-cpp) to the same text,
  whose token is at most 600 bytes, and that text pays;
- the fallback: with the event stream blocked the page polls, says readably when the shop
  is unreachable, and still turns to "paid";
- orders: a partial refund on a phone by keyboard alone reaches the customer's history,
  the page shows nothing about the customer, a refund above what is left shows a readable
  error and changes nothing;
- an unpaid checkout turns to "expired" by itself.

Screenshots of every page and state go to test-artifacts/screenshots/merchant-*.png.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import Page, Route, expect

from semops.devnet.actors import Customer, balance, create_customer, create_merchant, enrol
from semops.devnet.demo import merchant_trust_args
from semops.devnet.network import Network, new_layout
from semops.devnet.processes import ServiceProcess, free_port
from semops.merchant.checkout import UNREACHABLE_TEXT, status_text
from semops.protocol import OrderState
from semops.service.files import write_secret
from tests.web.conftest import Shot

pytestmark = pytest.mark.timeout(300)
T = TypeVar("T")

PIN = "4821"
TOKEN = "corner-cafe-till-token-7d41c0b9"
TOKEN_MAX_BYTES = 600
WAIT_MS = 30_000  # a payment crosses three processes and a webhook; generous under load
PHONE_WIDTH = 390


@dataclass
class World:
    network: Network
    shop_url: str
    alice: Customer

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        request = urllib.request.Request(
            self.shop_url + path, data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.loads(response.read())

    def raw(self, path: str) -> bytes:
        with urllib.request.urlopen(self.shop_url + path, timeout=15) as response:
            return bytes(response.read())

    def alice_balance(self) -> int:
        return balance(self.network, "bank-a", self.alice.account_id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("merchant-pages")
    network = Network(new_layout(root / "net", fixed_ports=False, db_urls=None))
    port = free_port()
    shop_url = f"http://127.0.0.1:{port}"
    folder = root / "merchant"
    backend = ServiceProcess(
        name="merchant-corner-cafe",
        args=[
            "merchant", "serve", "--merchant-id", "corner-cafe", "--data-dir", str(folder),
            "--processor", network.layout.processor_url("mno-b"), "--port", str(port),
            "--api-token-file", str(folder / "api-token"),
            *merchant_trust_args(network, "mno-b"),
        ],
        output=folder / "logs" / "stdout.log",
        health_url=f"{shop_url}/healthz",
    )  # fmt: skip
    try:
        network.start()
        cafe = create_merchant(
            network, "mno-b", "corner-cafe", "Corner Café", webhook_url=f"{shop_url}/v1/notices"
        )
        write_secret(folder / "processor-api-key", cafe.api_key.encode())
        write_secret(folder / "api-token", TOKEN.encode())
        backend.start()
        alice, code = create_customer(
            network, "bank-a", "Alice Example", "+4915112345678", 50_000, PIN
        )
        run_async(enrol(network, alice, code))
        backend.wait_ready()
        yield World(network, shop_url, alice)
    finally:
        backend.stop()
        network.stop()


# --- helpers -------------------------------------------------------------------------------


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run wallet code to completion in a thread of its own: Playwright's sync API keeps
    an event loop running in this one."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result(timeout=120)


async def _pay(customer: Customer, text: str) -> Any:
    wallet = customer.wallet()
    try:
        return await wallet.pay(await wallet.verify(text), customer.pin)
    finally:
        await wallet.close()
        wallet.store.close()


async def _history(customer: Customer) -> dict[str, Any]:
    wallet = customer.wallet()
    try:
        return await wallet.history()
    finally:
        await wallet.close()
        wallet.store.close()


def pay(world: World, text: str) -> None:
    outcome = run_async(_pay(world.alice, text))
    assert outcome.state is OrderState.COMPLETED, outcome.order


def decode_qr(png: bytes) -> str:
    # QR only: in a page screenshot zxing may also "find" a linear barcode in the text
    # (one run read an EAN-13 beside the QR code).
    image = Image.open(io.BytesIO(png))
    results = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    texts = [result.text for result in results if result.valid]
    assert len(texts) == 1, texts
    return str(texts[0])


def token_of(link: str) -> str:
    assert link.startswith("semops:pay?r=")
    return link.removeprefix("semops:pay?r=")


def paid_order(world: World, amount: str, reference: str) -> dict[str, Any]:
    """An order of the shop, paid by Alice, once the shop has the processor's notice."""
    view = world.api(
        "POST", "/v1/orders", {"amount": amount, "currency": "EUR", "reference": reference}
    )
    pay(world, view["link"])
    deadline = time.monotonic() + WAIT_MS / 1000
    while time.monotonic() < deadline:
        order = world.api("GET", f"/v1/orders/{view['order_id']}")
        if order["state"] == "paid":
            return dict(order)
        time.sleep(0.2)
    raise AssertionError(f"the order was not paid: {order['state']}")


def tab_to(page: Page, element_id: str, presses_max: int = 80) -> None:
    """Move the keyboard focus with Tab alone until it is on the element, which must show
    that it has focus."""
    for _ in range(presses_max):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            assert page.evaluate("document.activeElement.matches(':focus-visible')")
            return
    raise AssertionError(f"Tab never reached #{element_id}")


def sign_in_by_keyboard(page: Page, world: World, next_path: str) -> None:
    page.goto(f"{world.shop_url}{next_path}")
    expect(page).to_have_url(f"{world.shop_url}/login?next={next_path}")
    tab_to(page, "token")
    page.keyboard.type(TOKEN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{world.shop_url}{next_path}")


def fits_the_phone(page: Page) -> bool:
    return bool(page.evaluate(f"document.documentElement.scrollWidth <= {PHONE_WIDTH}"))


def page_shows_nothing_of(page: Page, customer: Customer) -> None:
    shown = page.content() + page.inner_text("body")
    for datum in (customer.name, "Alice", customer.phone, customer.account_id, "bank-a"):
        assert datum not in shown, datum


# --- checkout ------------------------------------------------------------------------------


def test_checkout_turns_paid_by_itself_after_the_wallet_pays_its_qr(
    world: World, page: Page, shot: Shot
) -> None:
    page.goto(f"{world.shop_url}/shop/new")
    expect(page).to_have_url(f"{world.shop_url}/login?next=/shop/new")
    expect(page.get_by_role("heading", name="Sign in to the shop")).to_be_visible()
    shot(page, "merchant-login")
    page.get_by_label("Access token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That access token is not right.")
    assert "not-the-token" not in page.content()
    shot(page, "merchant-login-wrong-token")
    page.get_by_label("Access token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{world.shop_url}/shop/new")

    # A basket of two lines; the page can add a fourth line for more.
    page.get_by_label("Item 1", exact=True).fill("Flat white")
    page.get_by_label("Quantity of item 1").fill("2")
    page.get_by_label("Unit price of item 1").fill("3.40")
    page.get_by_label("Item 2", exact=True).fill("Croissant")
    page.get_by_label("Quantity of item 2").fill("1")
    page.get_by_label("Unit price of item 2").fill("2.10")
    page.get_by_role("button", name="Add a line").click()
    expect(page.get_by_label("Item 4", exact=True)).to_be_focused()
    page.get_by_label("Reference (optional)").fill("TABLE-7")
    shot(page, "merchant-new-order")
    page.get_by_role("button", name="Create the order and show its QR code").click()

    page.wait_for_url(f"{world.shop_url}/checkout/**")
    status = page.locator("#status")
    expect(page.locator("#amount")).to_have_text("8.90 EUR")
    expect(page.get_by_role("heading", name="Pay Corner Café")).to_be_visible()
    expect(page.get_by_role("cell", name="Flat white")).to_be_visible()
    expect(status).to_have_text(status_text("open"))
    expect(status).to_have_attribute("data-live", "sse", timeout=WAIT_MS)
    link = page.get_by_role("link", name="Pay with SEMOPS").get_attribute("href")
    assert link is not None and len(token_of(link).encode()) <= TOKEN_MAX_BYTES
    shot(page, "merchant-checkout-open")

    # The customer's camera reads the code on the screen; the shop's PNG says the same.
    on_screen = decode_qr(page.locator("#qr svg").screenshot())
    order_id = page.url.rsplit("/", 1)[1]
    assert on_screen == link == decode_qr(world.raw(f"/v1/orders/{order_id}/qr.png"))

    page.evaluate("window.stillTheSamePage = true")
    before = world.alice_balance()
    pay(world, on_screen)
    expect(status).to_have_text(status_text("paid"), timeout=WAIT_MS)
    assert page.evaluate("window.stillTheSamePage === true")  # no reload: pushed live
    expect(status).to_have_attribute("data-state", "paid")
    guarantee = page.locator("#guarantee")
    expect(guarantee).to_be_visible()
    expect(guarantee).to_contain_text("Guaranteed irrevocable by mno-b")
    expect(guarantee).to_contain_text("signed payment notice was verified")
    expect(page.locator("#transfer-id")).to_have_text(
        world.api("GET", f"/v1/orders/{order_id}")["transfer_id"]
    )
    expect(page.locator("#pay")).to_be_hidden()
    assert world.alice_balance() == before - 890
    page_shows_nothing_of(page, world.alice)
    shot(page, "merchant-checkout-paid")


def test_the_merchants_png_qr_decodes_to_a_small_token_that_pays(world: World) -> None:
    view = world.api(
        "POST", "/v1/orders", {"amount": "1.20", "currency": "EUR", "reference": "QR-1"}
    )
    text = decode_qr(world.raw(f"/v1/orders/{view['order_id']}/qr.png"))
    assert text == view["link"]
    assert len(token_of(text).encode()) <= TOKEN_MAX_BYTES
    before = world.alice_balance()
    pay(world, text)
    assert world.alice_balance() == before - 120


def test_checkout_polls_when_the_stream_is_blocked_and_says_when_offline(
    world: World, phone_page: Page, shot: Shot
) -> None:
    page = phone_page
    view = world.api(
        "POST", "/v1/orders", {"amount": "2.30", "currency": "EUR", "reference": "POLL-1"}
    )
    page.route("**/events", lambda route: route.abort())
    offline = "**/v1/orders/*/status"

    def refuse(route: Route) -> None:
        route.abort("connectionrefused")

    page.route(offline, refuse)
    page.goto(f"{world.shop_url}/checkout/{view['order_id']}")
    connection = page.locator("#connection")
    expect(connection).to_have_text(UNREACHABLE_TEXT, timeout=WAIT_MS)
    expect(connection).to_have_attribute("role", "alert")
    assert fits_the_phone(page)
    shot(page, "merchant-checkout-offline")

    page.unroute(offline)
    expect(connection).to_be_hidden(timeout=WAIT_MS)
    status = page.locator("#status")
    expect(status).to_have_attribute("data-live", "poll")
    pay(world, view["link"])
    expect(status).to_have_text(status_text("paid"), timeout=WAIT_MS)
    expect(page.locator("#guarantee")).to_contain_text("mno-b")


def test_an_unpaid_checkout_turns_expired_by_itself(
    world: World, phone_page: Page, shot: Shot
) -> None:
    page = phone_page
    sign_in_by_keyboard(page, world, "/shop/new")
    assert fits_the_phone(page)
    # First a mistake: the amount is not what the basket adds up to.
    tab_to(page, "line-name-1")
    page.keyboard.type("Espresso")
    page.keyboard.press("Tab")
    page.keyboard.type("1")
    page.keyboard.press("Tab")
    page.keyboard.type("1.80")
    tab_to(page, "amount")
    page.keyboard.type("2.00")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The basket adds up to 1.80 EUR, not 2.00 EUR.")
    expect(alert).to_contain_text("leave it empty to charge the basket's total")
    expect(page.get_by_label("Item 1", exact=True)).to_have_value(
        "Espresso"
    )  # nothing typed is lost
    shot(page, "merchant-new-order-error")

    page.get_by_label("Amount", exact=True).fill("")
    page.get_by_label("Payable for").select_option(label="30 seconds")
    page.get_by_label("Amount", exact=True).focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{world.shop_url}/checkout/**")
    status = page.locator("#status")
    expect(status).to_have_text(status_text("open"))
    expect(page.locator("#amount")).to_have_text("1.80 EUR")
    assert fits_the_phone(page)
    shot(page, "merchant-checkout-phone")
    # The request is payable for 30 s; the shop's poller sees it expire within seconds.
    expect(status).to_have_text(status_text("expired"), timeout=90_000)
    expect(page.locator("#pay")).to_be_hidden()
    expect(status).to_have_attribute("data-state", "expired")
    shot(page, "merchant-checkout-expired")


# --- orders and refunds --------------------------------------------------------------------


def test_a_partial_refund_by_keyboard_on_a_phone_reaches_the_customer_and_never_exceeds(
    world: World, phone_page: Page, shot: Shot
) -> None:
    page = phone_page
    order = paid_order(world, "12.50", "INV-PHONE")
    order_id = order["order_id"]
    sign_in_by_keyboard(page, world, "/shop/orders")
    row = page.locator(f"#order-{order_id}")
    expect(row.locator(".order-state")).to_have_text("Paid")
    assert fits_the_phone(page)
    shot(page, "merchant-orders")

    before = world.alice_balance()
    expect(page.locator(f"#refund-{order_id}")).to_be_hidden()  # folded away until asked
    tab_to(page, f"refund-open-{order_id}")
    page.keyboard.press("Enter")
    tab_to(page, f"refund-{order_id}")
    page.keyboard.type("4.00")
    page.keyboard.press("Enter")
    notice = page.get_by_role("status")
    expect(notice).to_contain_text("Refunded 4.00 EUR of INV-PHONE.", timeout=WAIT_MS)
    row = page.locator(f"#order-{order_id}")
    expect(row.locator(".order-state")).to_have_text("Paid, partly refunded")
    expect(row.locator(".order-refunded")).to_have_text("4.00 EUR")
    expect(row.locator(".help")).to_have_text("At most 8.50 EUR can still be refunded.")
    page_shows_nothing_of(page, world.alice)
    shot(page, "merchant-orders-refunded")

    # The customer sees the refund in the wallet's history; the money is back.
    deadline = time.monotonic() + WAIT_MS / 1000
    refunds: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not refunds:
        entries = run_async(_history(world.alice))["entries"]
        refunds = [e for e in entries if e["kind"] == "refund" and e["amount_minor"] == 400]
        time.sleep(0.2)
    assert refunds, "the refund is not in the customer's history"
    assert world.alice_balance() == before + 400

    # More than is left: a readable error, focus back on the field, nothing changed.
    tab_to(page, f"refund-open-{order_id}")
    page.keyboard.press("Enter")
    tab_to(page, f"refund-{order_id}")
    page.keyboard.type("9.00")
    page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("That is more than can still be refunded for this order.")
    expect(alert).to_contain_text("Refund at most 8.50 EUR.")
    field = page.locator(f"#refund-{order_id}")
    expect(field).to_be_focused()
    expect(field).to_have_attribute("aria-invalid", "true")
    assert fits_the_phone(page)
    page_shows_nothing_of(page, world.alice)
    shot(page, "merchant-orders-refund-too-large")
    after = world.api("GET", f"/v1/orders/{order_id}")
    assert (after["state"], after["refunded_minor"], len(after["refunds"])) == (
        "partially_refunded",
        400,
        1,
    )
    assert world.alice_balance() == before + 400


def test_checkout_turns_paid_when_a_web_wallet_on_a_phone_pays_its_link(
    world: World, page: Page, phone_page: Page, shot: Shot
) -> None:
    """The whole journey in browsers: the shop's checkout on its screen, a customer of
    another processor (bank-a) enrolling and paying in the web wallet on a phone, and the
    checkout turning to "paid" by itself."""
    from tests.web.test_wallet_pages import enrol as enrol_in_browser
    from tests.web.test_wallet_pages import pay as pay_in_browser

    view = world.api("POST", "/v1/orders", {"amount": "4.20", "currency": "EUR"})
    page.goto(f"{world.shop_url}/checkout/{view['order_id']}")
    status = page.locator("#status")
    expect(status).to_have_attribute("data-live", "sse", timeout=WAIT_MS)
    link = page.get_by_role("link", name="Pay with SEMOPS").get_attribute("href")
    assert link is not None and link == view["link"]

    person = enrol_in_browser(phone_page, world.network, "bank-a", "Dora Web")
    pay_in_browser(phone_page, person, link)
    expect(phone_page.locator("#receipt")).to_contain_text("Corner Café")
    shot(phone_page, "journey-wallet-receipt")

    expect(status).to_have_text(status_text("paid"), timeout=WAIT_MS)
    expect(page.locator("#guarantee")).to_contain_text("Guaranteed irrevocable by mno-b")
    assert balance(world.network, "bank-a", person.account_id) == 50_000 - 420
    assert "Dora" not in page.content() and person.account_id not in page.content()
    shot(page, "journey-checkout-paid")
