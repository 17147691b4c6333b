"""The web wallet in a real Chromium, against real processes (router, bank-a, mno-b).

Everything a person does happens in the page: enrolment with an activation code from the
back office (the key pair is made by WebCrypto, its private half non-extractable), paying
a merchant by pasting the link and by uploading the QR picture, P2P between a bank
customer and an MNO customer in two browser profiles, the PIN lockout, a merchant's
refund in the history, devices listed, added and revoked. The processors must accept what
the browser signed and sealed: that is the interoperability proof of the JavaScript
crypto, checked primitive by primitive against the Python implementation at the end.
The pages are the same on both databases, so this runs on SQLite only (the API of the
wallet pages is tested on both in tests/processor/test_wallet_web_api.py).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import pytest
import segno
from playwright.sync_api import Browser, Page, expect

from semops.core.encoding import (
    b64url_decode,
    b64url_encode,
    canonical_json,
    digest_of,
    sha256_b64url,
)
from semops.core.money import format_amount, parse_amount
from semops.crypto import KeyUse, derive_key, open_pin_block, open_sealed
from semops.crypto.keys import make_kid, public_jwk
from semops.devnet.actors import (
    Merchant,
    balance,
    create_customer,
    create_merchant,
    merchant_call,
    request_payment,
)
from semops.devnet.network import Network, new_layout
from semops.merchant.qr import qr_png
from tests.web.conftest import Shot

pytestmark = pytest.mark.timeout(240)

PIN: Final = "4821"
WAIT_MS: Final = 30_000
_phones = iter(range(10_000_000, 99_999_999, 7919))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    layout = new_layout(tmp_path_factory.mktemp("wallet-web"), fixed_ports=False, db_urls=None)
    network = Network(layout)
    try:
        network.start()
        yield network
    finally:
        network.stop()


@pytest.fixture(scope="module")
def shops(net: Network) -> dict[str, Merchant]:
    return {
        "cafe": create_merchant(net, "mno-b", "corner-cafe", "Corner Café"),
        "books": create_merchant(net, "bank-a", "book-shop", "Book Shop"),
    }


@pytest.fixture(scope="module")
def short_lived(net: Network, shops: dict[str, Merchant]) -> dict[str, Any]:
    """A request that expires 30 s after the first test starts (see the last test)."""
    return request_payment(net, shops["cafe"], 100, ttl_s=30)


@pytest.fixture
def second_page(browser: Browser) -> Iterator[Page]:
    """Another person's browser: a profile of its own (its own IndexedDB)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


@dataclass
class Person:
    name: str
    processor_id: str
    account_id: str
    base_url: str


def _url(net: Network, processor_id: str, path: str) -> str:
    return net.layout.wallet_url(processor_id) + path


def enrol(
    page: Page,
    net: Network,
    processor_id: str,
    name: str,
    *,
    deposit_minor: int = 50_000,
    device_name: str = "Web browser",
    shot: Shot | None = None,
) -> Person:
    """A new customer at `processor_id`, enrolled by typing the code into the page."""
    phone = f"+4915{next(_phones)}"
    customer, code = create_customer(net, processor_id, name, phone, deposit_minor, PIN)
    page.goto(_url(net, processor_id, "/wallet/enrol"))
    page.get_by_label("Activation code").fill(code)
    page.get_by_label("Name of this device").fill(device_name)
    page.get_by_label("PIN (4 to 6 digits)", exact=True).fill(PIN)
    page.get_by_label("The same PIN again").fill(PIN)
    if shot is not None:
        shot(page, "wallet-enrol")
    page.get_by_role("button", name="Set up this device").click()
    expect(page.locator("#enrol-done")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#enrolled-name")).to_have_text(name)
    if shot is not None:
        shot(page, "wallet-enrol-done")
    return Person(name, processor_id, customer.account_id, net.layout.wallet_url(processor_id))


def review(page: Page, person: Person, link: str) -> None:
    page.goto(person.base_url + "/wallet/pay")
    page.get_by_label("Payment link or code").fill(link)
    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator("#step-review")).to_be_visible(timeout=WAIT_MS)


def enter_pin_on_pad(page: Page, pin: str) -> None:
    page.get_by_role("button", name="Continue to PIN").click()
    for digit in pin:
        page.locator("#step-pin").get_by_role("button", name=digit, exact=True).click()
    page.get_by_role("button", name="Pay now").click()


def pay(page: Page, person: Person, link: str, pin: str = PIN) -> None:
    review(page, person, link)
    enter_pin_on_pad(page, pin)
    expect(page.locator("#receipt")).to_be_visible(timeout=WAIT_MS)


def wait_paid(net: Network, shop: Merchant, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = merchant_call(net, shop, "GET", f"/v1/merchant/requests/{request_id}")
        # "reserved": the payer side has its receipt; the router's word is on its way.
        if status["state"] not in ("open", "reserved") or time.monotonic() > deadline:
            return status  # type: ignore[no-any-return]
        time.sleep(0.2)


def stored_device(page: Page) -> dict[str, Any]:
    """What the page's IndexedDB holds about the device, and whether its key exports."""
    result = page.evaluate(
        """async () => {
          const store = await import("/wallet/static/store.js");
          const device = await store.loadDevice();
          let exported = "exported";
          try { await crypto.subtle.exportKey("jwk", device.privateKey); }
          catch (error) { exported = error.name; }
          let exportedRaw = "exported";
          try { await crypto.subtle.exportKey("pkcs8", device.privateKey); }
          catch (error) { exportedRaw = error.name; }
          return {
            kid: device.kid, jwk: device.jwk, account_id: device.account_id,
            type: device.privateKey.type, extractable: device.privateKey.extractable,
            usages: device.privateKey.usages, exported, exportedRaw,
          };
        }"""
    )
    assert isinstance(result, dict)
    return result


# --- paying a merchant ---------------------------------------------------------------------


def test_enrol_in_the_browser_and_pay_a_merchant_by_pasting_the_link(
    page: Page, net: Network, shops: dict[str, Merchant], shot: Shot, short_lived: Any
) -> None:
    page.goto(_url(net, "bank-a", "/wallet/"))
    expect(page.locator("#signed-out")).to_be_visible(timeout=WAIT_MS)
    shot(page, "wallet-signed-out")
    alice = enrol(page, net, "bank-a", "Alice Browser", shot=shot)

    device = stored_device(page)
    assert device["account_id"] == alice.account_id
    assert device["type"] == "private" and device["extractable"] is False
    assert device["usages"] == ["sign"]
    assert device["exported"] == "InvalidAccessError" == device["exportedRaw"]
    assert device["kid"] == make_kid("device", device["jwk"])
    devices = net.admin("bank-a", "GET", f"/v1/admin/accounts/{alice.account_id}/devices")
    assert [each["kid"] for each in devices["devices"]] == [device["kid"]]

    page.goto(alice.base_url + "/wallet/")
    expect(page.locator("#customer-name")).to_have_text("Alice Browser", timeout=WAIT_MS)
    expect(page.locator("#balance")).to_have_text("500.00 EUR", timeout=WAIT_MS)
    shot(page, "wallet-home")

    cafe = shops["cafe"]
    cafe_before = balance(net, "mno-b", cafe.account_id)
    created = request_payment(net, cafe, 1250, reference="Flat white x2")
    page.goto(alice.base_url + "/wallet/pay")
    shot(page, "wallet-pay-input")
    review(page, alice, created["link"])
    expect(page.locator("#review-payee")).to_have_text("Corner Café")
    expect(page.locator("#review-amount")).to_have_text("12.50 EUR")
    expect(page.locator("#review-reference")).to_have_text("Flat white x2")
    expect(page.locator("#review-processor")).to_have_text("Beta Mobile")
    # The payee's id next to its name: a look-alike name cannot pass for another payee.
    expect(page.locator("#review-payee-id")).to_have_text("corner-cafe")
    shot(page, "wallet-pay-review")
    page.get_by_role("button", name="Continue to PIN").click()
    expect(page.locator("#pin-input")).to_be_focused()
    expect(page.locator("#pin-payee")).to_have_text("Corner Café (corner-cafe, Beta Mobile)")
    shot(page, "wallet-pay-pin")
    for digit in PIN:
        page.locator("#step-pin").get_by_role("button", name=digit, exact=True).click()
    page.get_by_role("button", name="Pay now").click()
    expect(page.locator("#receipt")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#receipt-payee")).to_have_text("Corner Café")
    expect(page.locator("#receipt-amount")).to_have_text("12.50 EUR")
    expect(page.locator("#status")).to_have_text("Paid 12.50 EUR to Corner Café.")
    shot(page, "wallet-receipt")

    assert wait_paid(net, cafe, created["request_id"])["state"] == "paid"
    assert balance(net, "bank-a", alice.account_id) == 50_000 - 1250
    assert balance(net, "mno-b", cafe.account_id) == cafe_before + 1250
    order_id = page.locator("#receipt-order").inner_text()
    stored = page.evaluate(
        "async (id) => (await (await import('/wallet/static/store.js')).loadOrder(id)).state",
        order_id,
    )
    assert stored == "completed"

    # The same request again: this wallet knows it paid it, and says so before any PIN.
    review_again = page.goto(alice.base_url + "/wallet/pay")
    assert review_again is not None
    page.get_by_label("Payment link or code").fill(created["link"])
    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator("#alert")).to_contain_text("already been paid", timeout=WAIT_MS)
    assert balance(net, "bank-a", alice.account_id) == 50_000 - 1250


def test_pay_by_uploading_the_merchants_qr_png_on_a_phone_with_the_keyboard(
    phone_page: Page, net: Network, shops: dict[str, Merchant], shot: Shot
) -> None:
    page = phone_page
    bea = enrol(page, net, "mno-b", "Bea Phone", device_name="Bea's phone")
    books = shops["books"]
    created = request_payment(net, books, 899, reference="Paperback")
    png = qr_png(created["link"])
    assert png.startswith(b"\x89PNG")
    assert len(created["token"].encode()) <= 600

    page.goto(bea.base_url + "/wallet/pay")
    page.get_by_label("Or upload a picture of the QR code").set_input_files(
        files=[{"name": "checkout-qr.png", "mimeType": "image/png", "buffer": png}]
    )
    expect(page.locator("#step-review")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#pay-input")).to_have_value(created["link"])
    expect(page.locator("#review-payee")).to_have_text("Book Shop")
    expect(page.locator("#review-amount")).to_have_text("8.99 EUR")
    shot(page, "wallet-phone-review")

    # Keyboard only from here: Tab to the button, Enter, type the PIN, Enter.
    page.locator("#to-pin").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#pin-input")).to_be_focused()
    page.keyboard.type(PIN)
    shot(page, "wallet-phone-pin")
    page.keyboard.press("Enter")
    expect(page.locator("#receipt")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#receipt-amount")).to_have_text("8.99 EUR")
    shot(page, "wallet-phone-receipt")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert wait_paid(net, books, created["request_id"])["state"] == "paid"
    assert balance(net, "mno-b", bea.account_id) == 50_000 - 899

    # A phone photo is larger than the processor takes: the page shrinks it first.
    big = _large_qr_picture(request_payment(net, books, 100)["link"])
    assert len(big) > 16 * 1024
    page.goto(bea.base_url + "/wallet/pay")
    page.get_by_label("Or upload a picture of the QR code").set_input_files(
        files=[{"name": "photo.png", "mimeType": "image/png", "buffer": big}]
    )
    settled = page.locator("#step-review:visible, #alert:visible").first
    expect(settled).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#alert")).to_have_text("")
    expect(page.locator("#review-amount")).to_have_text("1.00 EUR")

    # A picture without a QR code: a readable error, nothing else happens.
    page.goto(bea.base_url + "/wallet/pay")
    page.get_by_label("Or upload a picture of the QR code").set_input_files(
        files=[{"name": "blank.png", "mimeType": "image/png", "buffer": _blank_png()}]
    )
    expect(page.locator("#alert")).to_have_text(
        "This is not a SEMOPS payment link or QR code. Check what you pasted or uploaded.",
        timeout=WAIT_MS,
    )
    expect(page.locator("#step-review")).to_be_hidden()
    shot(page, "wallet-phone-qr-unreadable")


def _large_qr_picture(link: str) -> bytes:
    """The QR code as a noisy, large RGB picture: what a camera would hand over."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    segno.make(link, error="m").save(buffer, kind="png", scale=12, border=6)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    noise = Image.effect_noise(image.size, 40).convert("RGB")
    blended = Image.blend(image, noise, 0.25)
    out = io.BytesIO()
    blended.save(out, format="PNG")
    return out.getvalue()


def _blank_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (64, 64), 255).save(out, format="PNG")
    return out.getvalue()


# --- P2P ------------------------------------------------------------------------------------


def test_p2p_between_a_bank_customer_and_an_mno_customer_in_two_browsers(
    page: Page, second_page: Page, net: Network, shot: Shot
) -> None:
    carol = enrol(page, net, "bank-a", "Carol Bank")
    dan = enrol(second_page, net, "mno-b", "Dan Mobile")

    page.goto(carol.base_url + "/wallet/request")
    page.get_by_label("Amount (EUR)").fill("7.25")
    page.get_by_label("What it is for (optional)").fill("Dinner")
    shot(page, "wallet-request-form")
    page.get_by_role("button", name="Create the request").click()
    expect(page.locator("#request-result")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#request-summary")).to_have_text("7.25 EUR to Carol Bank · Dinner")
    qr = page.locator("#request-qr")
    expect(qr).to_have_attribute("src", re.compile(r"^/wallet/qr\.svg\?link=semops"))
    width = qr.evaluate(
        """img => img.complete ? img.naturalWidth
            : new Promise(done => { img.onload = () => done(img.naturalWidth); })"""
    )
    assert width > 100
    shot(page, "wallet-request-qr")
    link = page.locator("#request-link").input_value()
    assert link.startswith("semops:pay?r=")
    assert len(link.removeprefix("semops:pay?r=").encode()) <= 600
    svg = page.request.get(carol.base_url + "/wallet/qr.svg?link=" + link)
    assert svg.ok and svg.headers["content-type"] == "image/svg+xml"

    pay(second_page, dan, link)
    expect(second_page.locator("#receipt-payee")).to_have_text("Carol Bank")
    expect(second_page.locator("#receipt-amount")).to_have_text("7.25 EUR")
    shot(second_page, "wallet-p2p-receipt")
    assert balance(net, "mno-b", dan.account_id) == 50_000 - 725

    def carol_history_shows_it() -> bool:
        page.goto(carol.base_url + "/wallet/history")
        entries = page.locator("#history-list li[data-kind='payment_received']")
        entries.first.wait_for(state="attached", timeout=WAIT_MS)
        return entries.count() == 1

    assert _eventually(carol_history_shows_it)
    received = page.locator("#history-list li[data-kind='payment_received']")
    expect(received.locator(".entry-amount")).to_have_text("7.25 EUR")
    expect(page.locator("#history-balance")).to_have_text("507.25 EUR")
    shot(page, "wallet-history-p2p")


def _eventually(check: Any, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return True
        except AssertionError:
            pass
        except Exception as error:  # a locator timed out: try again until the deadline
            if time.monotonic() > deadline:
                raise error
        if time.monotonic() > deadline:
            return False
        time.sleep(0.3)


# --- refused payments -----------------------------------------------------------------------


def test_a_wrong_pin_three_times_locks_and_the_right_pin_is_then_refused_too(
    page: Page, net: Network, shops: dict[str, Merchant], shot: Shot
) -> None:
    erin = enrol(page, net, "bank-a", "Erin Forgetful")
    cafe = shops["cafe"]
    created = request_payment(net, cafe, 500)
    review(page, erin, created["link"])
    enter_pin_on_pad(page, "0000")
    alert = page.locator("#alert")
    expect(alert).to_have_text(
        "The PIN is wrong. You have 2 attempts left before your PIN is locked.", timeout=WAIT_MS
    )
    expect(page.locator("#step-pin")).to_be_visible()
    shot(page, "wallet-pin-wrong")
    page.locator("#pin-input").fill("1111")
    page.get_by_role("button", name="Pay now").click()
    expect(alert).to_have_text(
        "The PIN is wrong. You have 1 attempt left before your PIN is locked.", timeout=WAIT_MS
    )
    page.locator("#pin-input").fill("2222")
    page.get_by_role("button", name="Pay now").click()
    locked = (
        "Your PIN is locked after too many wrong attempts, so no payment can be made. "
        "Contact Alpha Bank to unlock it."
    )
    expect(alert).to_have_text(locked, timeout=WAIT_MS)
    expect(page.locator("#result-failed")).to_be_visible()
    shot(page, "wallet-pin-locked")

    # The fourth attempt, with the right PIN, is refused as well.
    page.get_by_role("button", name="Try again").click()
    expect(alert).to_be_hidden()
    page.locator("#pin-input").fill(PIN)
    page.get_by_role("button", name="Pay now").click()
    expect(alert).to_have_text(locked, timeout=WAIT_MS)
    assert balance(net, "bank-a", erin.account_id) == 50_000
    status = merchant_call(net, cafe, "GET", f"/v1/merchant/requests/{created['request_id']}")
    assert status["state"] == "open"
    account = net.admin("bank-a", "GET", f"/v1/admin/accounts/{erin.account_id}")
    assert account["pin_locked"] is True


def test_insufficient_funds_is_a_readable_refusal_and_moves_no_money(
    page: Page, net: Network, shops: dict[str, Merchant], shot: Shot
) -> None:
    frank = enrol(page, net, "mno-b", "Frank Broke", deposit_minor=300)
    books = shops["books"]
    created = request_payment(net, books, 1000)
    review(page, frank, created["link"])
    enter_pin_on_pad(page, PIN)
    expect(page.locator("#alert")).to_have_text(
        "There is not enough money in your account for this payment. "
        "Top up your account, or pay a smaller amount.",
        timeout=WAIT_MS,
    )
    expect(page.locator("#result-failed")).to_be_visible()
    shot(page, "wallet-insufficient-funds")
    assert balance(net, "mno-b", frank.account_id) == 300
    assert (
        merchant_call(net, books, "GET", f"/v1/merchant/requests/{created['request_id']}")["state"]
        == "open"
    )

    # Not a payment link at all, and the processor down: readable too.
    page.goto(frank.base_url + "/wallet/pay")
    page.get_by_label("Payment link or code").fill("https://example.com/pay?x=1")
    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator("#alert")).to_contain_text("This is not a SEMOPS payment link")
    page.context.route("**/v1/wallet/verify", lambda route: route.abort("connectionrefused"))
    page.get_by_label("Payment link or code").fill(created["link"])
    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator("#alert")).to_have_text(
        "We could not reach Beta Mobile. Check your internet connection and try again.",
        timeout=WAIT_MS,
    )
    shot(page, "wallet-network-failure")


# --- history with a refund ------------------------------------------------------------------


def test_the_history_shows_a_partial_refund_made_by_the_merchant(
    page: Page, net: Network, shops: dict[str, Merchant], shot: Shot
) -> None:
    gus = enrol(page, net, "bank-a", "Gus Refunded")
    cafe = shops["cafe"]
    created = request_payment(net, cafe, 2000, reference="Cake")
    pay(page, gus, created["link"])
    assert wait_paid(net, cafe, created["request_id"])["state"] == "paid"
    refund_id = "rf_" + secrets.token_urlsafe(16)
    merchant_call(
        net,
        cafe,
        "POST",
        f"/v1/merchant/requests/{created['request_id']}/refunds",
        {"refund_id": refund_id, "amount_minor": 500, "reason": "Out of cake"},
    )

    def refund_listed() -> bool:
        page.goto(gus.base_url + "/wallet/history")
        page.locator("#history-list li").first.wait_for(timeout=WAIT_MS)
        return page.locator("#history-list li[data-kind='refund']").count() == 1

    assert _eventually(refund_listed)
    refund = page.locator("#history-list li[data-kind='refund']")
    expect(refund.locator(".entry-label")).to_have_text("Refund from Corner Café")
    expect(refund.locator(".entry-amount")).to_have_text("5.00 EUR")
    payment = page.locator("#history-list li[data-kind='payment']")
    expect(payment.locator(".entry-label")).to_have_text("Payment to Corner Café")
    expect(payment.locator(".entry-amount")).to_have_text("-20.00 EUR")
    expect(payment.locator(".entry-meta")).to_contain_text("Completed")
    expect(page.locator("#history-balance")).to_have_text("485.00 EUR")
    shot(page, "wallet-history-refund")
    assert balance(net, "bank-a", gus.account_id) == 50_000 - 2000 + 500


# --- devices ---------------------------------------------------------------------------------


def test_devices_are_listed_added_and_revoked_and_a_revoked_device_cannot_pay(
    page: Page, second_page: Page, net: Network, shops: dict[str, Merchant], shot: Shot
) -> None:
    hana = enrol(page, net, "mno-b", "Hana Two Devices", device_name="Hana's laptop")
    page.goto(hana.base_url + "/wallet/devices")
    page.get_by_label("Your PIN").fill(PIN)
    page.get_by_role("button", name="Get an activation code").click()
    code = page.locator("#new-code-value")
    expect(code).to_have_text(re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$"), timeout=WAIT_MS)
    shot(page, "wallet-devices-new-code")

    second_page.goto(hana.base_url + "/wallet/enrol")
    second_page.get_by_label("Activation code").fill(code.inner_text())
    second_page.get_by_label("Name of this device").fill("Hana's tablet")
    second_page.get_by_label("PIN (4 to 6 digits)", exact=True).fill(PIN)
    second_page.get_by_label("The same PIN again").fill(PIN)
    second_page.get_by_role("button", name="Set up this device").click()
    expect(second_page.locator("#enrol-done")).to_be_visible(timeout=WAIT_MS)
    tablet_kid = stored_device(second_page)["kid"]

    # The laptop is told: a code was issued and a device added (a leaked code shows here).
    page.goto(hana.base_url + "/wallet/")
    notices = page.locator("#notice-list li")
    expect(notices).to_have_count(3, timeout=WAIT_MS)
    expect(notices.nth(0)).to_contain_text("A new device was added to your account: Hana's tablet.")
    expect(notices.nth(1)).to_contain_text("You issued a code to add a device to your account.")
    expect(notices.nth(2)).to_contain_text("A new device was added to your account: Hana's laptop.")
    shot(page, "wallet-home-notices")

    page.goto(hana.base_url + "/wallet/devices")
    rows = page.locator("#device-list li")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#device-list")).to_contain_text("Hana's laptop (this device)")
    shot(page, "wallet-devices")
    page.get_by_role("button", name="Revoke Hana's tablet").click()
    shot(page, "wallet-devices-confirm")
    page.get_by_role("button", name="Yes, revoke").click()
    tablet = page.locator(f"#device-list li[data-kid='{tablet_kid}']")
    expect(tablet).to_have_attribute("data-status", "revoked", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text(
        "Hana's tablet is revoked: it can no longer pay or read your account."
    )
    shot(page, "wallet-devices-revoked")

    # The revoked tablet cannot pay; it says why and forgets its dead key.
    created = request_payment(net, shops["books"], 300)
    second_page.goto(hana.base_url + "/wallet/pay")
    second_page.get_by_label("Payment link or code").fill(created["link"])
    second_page.get_by_role("button", name="Continue", exact=True).click()
    expect(second_page.locator("#alert")).to_have_text(
        "This device has been revoked and can no longer be used. "
        "Set it up again with a new activation code.",
        timeout=WAIT_MS,
    )
    shot(second_page, "wallet-revoked-device")
    assert balance(net, "mno-b", hana.account_id) == 50_000

    # The laptop still pays; then it revokes itself and is signed out.
    pay(page, hana, created["link"])
    page.goto(hana.base_url + "/wallet/devices")
    page.get_by_role("button", name="Revoke Hana's laptop").click()
    page.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("#self-revoked")).to_be_visible(timeout=WAIT_MS)
    page.goto(hana.base_url + "/wallet/")
    expect(page.locator("#signed-out")).to_be_visible(timeout=WAIT_MS)
    devices = net.admin("mno-b", "GET", f"/v1/admin/accounts/{hana.account_id}/devices")
    assert {each["status"] for each in devices["devices"]} == {"revoked"}


# --- the page itself --------------------------------------------------------------------------


def test_every_wallet_page_is_self_contained_and_says_so_in_its_headers(
    page: Page, net: Network
) -> None:
    base = net.layout.wallet_url("bank-a")
    enrol(page, net, "bank-a", "Jo Headers")
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: foreign.append(request.url) if not request.url.startswith(base) else None,
    )
    for path in ("/wallet/", "/wallet/enrol", "/wallet/pay", "/wallet/history",
                 "/wallet/devices", "/wallet/request"):  # fmt: skip
        response = page.goto(base + path)
        assert response is not None and response.status == 200
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert page.locator("html").get_attribute("lang") == "en"
        expect(page.locator("h1")).to_have_count(1)
        page.wait_for_selector("body[data-ready]")
    assert foreign == []
    # No inline script anywhere, so the CSP needs no nonce.
    assert page.locator("script:not([src])").count() == 0
    missing = page.request.get(base + "/wallet/static/../app.py")
    assert missing.status == 404
    assert page.request.get(base + "/wallet/qr.svg?link=https://evil.example").status == 400


# --- the JavaScript crypto against the Python implementation --------------------------------

VECTORS: Final = [
    {"b": 1, "a": [True, False, None], "c": {"z": "", "é": "\u2028", "\U0001f600": "x"}},
    {"\ue000": 1, "\U0001f600": 2, "ä": '\x00\x1f\x7f"\\/', "n": -9007199254740991},
    ["Corner Café", "\u202e", 0, 10**15],
]


def test_the_javascript_crypto_matches_the_python_implementation(page: Page, net: Network) -> None:
    page.goto(net.layout.wallet_url("bank-a") + "/wallet/enrol")
    page.wait_for_selector("body[data-ready]")
    for vector in VECTORS:
        js = page.evaluate(
            """async (value) => {
              const jose = await import("/wallet/static/jose.js");
              return {canonical: jose.canonicalJson(value), digest: await jose.digestOf(value)};
            }""",
            vector,
        )
        assert js["canonical"].encode() == canonical_json(vector)
        assert js["digest"] == digest_of(vector)

    # Concat KDF (RFC 7518 §4.6.2) against the implementation joserfc relies on.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

    z = secrets.token_bytes(32)
    for algorithm, bits, apu, apv in (("ECDH-ES+A256KW", 256, b"", b""),
                                      ("A128GCM", 128, b"Alice", b"Bob"),
                                      ("A256CBC-HS512", 512, b"", b"v")):  # fmt: skip
        other = b"".join(
            len(part).to_bytes(4, "big") + part for part in (algorithm.encode(), apu, apv)
        ) + bits.to_bytes(4, "big")
        expected = ConcatKDFHash(hashes.SHA256(), bits // 8, other).derive(z)
        js_kdf = page.evaluate(
            """async ([z, alg, bits, apu, apv]) => {
              const jose = await import("/wallet/static/jose.js");
              const bytes = (list) => new Uint8Array(list);
              return Array.from(await jose.concatKdf(bytes(z), alg, bits, bytes(apu), bytes(apv)));
            }""",
            [list(z), algorithm, bits, list(apu), list(apv)],
        )
        assert bytes(js_kdf) == expected

    # A JWE sealed by the page opens with the Python recipe; a PIN block binds its digest.
    key = derive_key("bank-a", KeyUse.ENCRYPT, secrets.token_bytes(48))
    record = key.public_record(0, 2**33)
    sealed = page.evaluate(
        """async ([jwk, kid]) => {
          const jose = await import("/wallet/static/jose.js");
          return [await jose.sealFor({v: 1, note: "Grüße", n: 42}, jwk, kid),
                  await jose.makePinBlock("4821", "digest-of-an-order", {jwk, kid})];
        }""",
        [record.jwk, record.kid],
    )
    assert open_sealed(sealed[0], key) == {"v": 1, "note": "Grüße", "n": 42}
    assert open_pin_block(sealed[1], key, "digest-of-an-order") == "4821"
    header = json.loads(_b64(sealed[0].split(".")[0]))
    assert set(header) == {"alg", "enc", "epk", "kid"} and set(header["epk"]) == {
        "kty", "crv", "x", "y"
    }  # fmt: skip

    # A JWS the page signs verifies in Python, and one Python signs verifies in the page.
    from semops.crypto import KeyRing, sign_message, verify_message

    signed = page.evaluate(
        """async () => {
          const jose = await import("/wallet/static/jose.js");
          const key = await jose.generateDeviceKey();
          const kid = await jose.makeKid("device", key.jwk);
          const tokens = [];  // WebCrypto's s is high half the time: each one made low
          for (let i = 0; i < 16; i += 1) {
            tokens.push(await jose.signJws({v: 1, x: "é", i}, key.privateKey, kid));
          }
          return {jwk: key.jwk, kid, tokens};
        }"""
    )
    assert signed["kid"] == make_kid("device", signed["jwk"])
    device_record = _sign_record(signed["jwk"], signed["kid"])
    for number, token in enumerate(signed["tokens"]):
        claims = verify_message(token, KeyRing([device_record]), 0).claims  # refuses a high s
        assert claims == {"v": 1, "x": "é", "i": number}
    signer = derive_key("bank-a", KeyUse.SIGN, secrets.token_bytes(48))
    python_token = sign_message({"amt": 5, "pn": "Café"}, signer)
    checked = page.evaluate(
        """async ([token, jwk, kid, twin]) => {
          const jose = await import("/wallet/static/jose.js");
          const claims = await jose.verifyJws(token, jwk, kid);
          let tampered = "accepted";
          try { await jose.verifyJws(token.slice(0, -3) + "AAA", jwk, kid); }
          catch (error) { tampered = "refused"; }
          let highS = "accepted";
          try { await jose.verifyJws(twin, jwk, kid); } catch (error) { highS = "refused"; }
          return {claims, tampered, highS};
        }""",
        [python_token, public_jwk(signer.key), signer.kid, _high_s_twin(python_token)],
    )
    assert checked == {
        "claims": {"amt": 5, "pn": "Café"},
        "tampered": "refused",
        "highS": "refused",
    }
    fulfils = page.evaluate(
        """async ([f, c]) => (await import("/wallet/static/jose.js")).fulfils(f, c)""",
        ["A" * 43, sha256_b64url(bytes(32))],
    )
    assert fulfils is True

    # Money at the edge: the page formats and parses exactly as core/money.py does.
    for minor, currency in ((1250, "EUR"), (5, "EUR"), (-2000, "EUR"), (500, "JPY"),
                            (1, "BHD"), (10**15, "EUR")):  # fmt: skip
        shown = page.evaluate(
            "async ([m, c]) => (await import('/wallet/static/wallet.js')).formatAmount(m, c)",
            [minor, currency],
        )
        assert shown == f"{format_amount(minor, currency)} {currency}"
    for text in ("12.50", "0.05", "7", "12.5"):
        parsed = page.evaluate(
            "async (t) => (await import('/wallet/static/wallet.js')).parseAmount(t, 'EUR')", text
        )
        assert parsed == parse_amount(text, "EUR")


def _b64(text: str) -> bytes:
    from semops.core.encoding import b64url_decode

    return b64url_decode(text)


def _sign_record(jwk: dict[str, str], kid: str) -> Any:
    from semops.crypto import PublicKeyRecord

    return PublicKeyRecord(kid=kid, owner="device", use=KeyUse.SIGN, jwk=jwk, not_before=0,
                           not_after=2**33)  # fmt: skip


# --- expiry (last: the short-lived request has long expired by now) ----------------------------


def test_an_expired_request_is_refused_with_a_readable_message(
    page: Page, net: Network, short_lived: dict[str, Any], shot: Shot
) -> None:
    ivy = enrol(page, net, "bank-a", "Ivy Late")
    deadline = time.monotonic() + 60
    while int(time.time()) < short_lived["expires_at"] + 1 and time.monotonic() < deadline:
        time.sleep(0.5)  # waiting for the precondition (the request's expiry), not asserting
    page.goto(ivy.base_url + "/wallet/pay")
    page.get_by_label("Payment link or code").fill(short_lived["link"])
    page.get_by_role("button", name="Continue", exact=True).click()
    expect(page.locator("#alert")).to_have_text(
        "This payment request has expired. Ask the payee for a new one.", timeout=WAIT_MS
    )
    expect(page.locator("#step-review")).to_be_hidden()
    shot(page, "wallet-request-expired")
    assert balance(net, "bank-a", ivy.account_id) == 50_000


def _high_s_twin(token: str) -> str:
    """The token with the other valid form of its ECDSA signature, (r, n - s)."""
    from semops.crypto.jose import P256_ORDER

    head, body, signature = token.split(".")
    raw = b64url_decode(signature)
    high = raw[:32] + (P256_ORDER - int.from_bytes(raw[32:], "big")).to_bytes(32, "big")
    return f"{head}.{body}.{b64url_encode(high)}"
