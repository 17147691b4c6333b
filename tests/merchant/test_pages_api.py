"""The endpoints behind the merchant's pages, over real HTTP, on SQLite and PostgreSQL.

The merchant backend runs in uvicorn (a thread of this process) against a real database
and the in-memory test processor, which signs real requests and notices. Covered: the
orders list (paging, bounds, the token), the live status stream (what it sends, that it
ends on a final state, keep-alives, its time and count bounds), and the page forms (sign
in, sessions, new orders from a basket, refunds bounded by the paid amount, forms from
another site refused) -- each refusal leaving the state as it was.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from semops.core.clock import FixedClock
from semops.core.errors import E
from semops.merchant.app import create_merchant_app
from semops.merchant.events import StreamLimits
from semops.merchant.pages import SESSION_COOKIE, SESSION_TTL_S, SESSIONS_MAX
from semops.merchant.service import MerchantService, MerchantSettings
from semops.merchant.sessions import ShopSessions
from semops.service.throttle import LOGIN_FAILURES_MAX, LOGIN_WINDOW_S
from semops.store import merchant as store
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade
from tests.databases import BACKENDS, PostgresDatabases, postgres_or_skip

from .fakes import API_KEY, MERCHANT, Entropy, FakeMerchantProcessor
from .live import LiveServer

NOW = 1_800_000_000
TOKEN = "shop-api-token-5f1c9a7e2b"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ORDER = {"amount": "12.50", "currency": "EUR", "reference": "INV-1"}
# Short stream bounds so the bounds themselves can be watched within a test.
QUICK = StreamLimits(max_s=1.5, keepalive_s=0.3, recheck_s=0.2, streams_max=2, retry_ms=500)


@dataclass
class Shop:
    server: LiveServer
    service: MerchantService
    processor: FakeMerchantProcessor
    clock: FixedClock
    http: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def order(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post("/v1/orders", json=body or ORDER, headers=BEARER)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def get(self, order_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/orders/{order_id}", headers=BEARER)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def notify(self, request_id: str) -> None:
        token = self.processor.mark_paid(request_id)
        response = self.http.post(
            "/v1/notices", content=token, headers={"Content-Type": "application/jose"}
        )
        assert response.status_code == 200, response.text

    def paid_order(self, body: dict[str, Any] | None = None) -> dict[str, Any]:
        view = self.order(body)
        self.notify(view["request_id"])
        return self.get(view["order_id"])

    def refund_form(self, order_id: str, data: dict[str, Any], **headers: str) -> httpx.Response:
        """A refund form as the orders page renders it: with a key of its own."""
        key = f"ik_form_{len(self.processor.bodies):04d}_{secrets.token_hex(4)}"
        return self.http.post(
            f"/shop/orders/{order_id}/refunds",
            data={"idempotency_key": key, **data},
            headers=headers or self.origin,
        )

    def sign_in(self) -> None:
        response = self.http.post(
            "/login", data={"token": TOKEN, "next": "/shop/orders"}, headers=self.origin
        )
        assert response.status_code == 303, response.text
        assert SESSION_COOKIE in self.http.cookies

    @property
    def origin(self) -> dict[str, str]:
        return {"Origin": self.url}

    @property
    def browser(self) -> dict[str, str]:
        """What a browser sends with a form of our pages (Referrer-Policy: no-referrer)."""
        return {"Sec-Fetch-Site": "same-origin", "Origin": "null"}


def _database_url(backend: str, tmp_path: Path) -> tuple[str, PostgresDatabases | None]:
    if backend == "sqlite":
        return sqlite_url(tmp_path / "merchant.db"), None
    databases = postgres_or_skip()
    return databases.make(["merchant"])["merchant"], databases


@pytest.fixture(params=BACKENDS)
def shop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Shop]:
    url, databases = _database_url(request.param, tmp_path)
    clock = FixedClock(NOW)
    processor = FakeMerchantProcessor(clock)
    made: dict[str, Any] = {}

    async def make_app() -> Any:
        database = Database(url)
        await upgrade(database, "merchant")
        settings = MerchantSettings(
            merchant_id=MERCHANT, data_dir=tmp_path, processor_url="http://processor.test"
        )
        made["service"] = MerchantService(
            settings,
            database,
            processor,
            API_KEY,
            clock,
            Entropy(request.param),
            trust=processor.trust,
        )
        return create_merchant_app(made["service"], TOKEN, QUICK)

    try:
        with LiveServer(make_app) as server:
            service = made["service"]
            with httpx.Client(base_url=server.url, timeout=10) as http:
                yield Shop(server, service, processor, clock, http)
            server.call(service.database.dispose())
    finally:
        if databases is not None:
            databases.drop()


def _events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(kind, value) from a text/event-stream: ("event", (name, data)), ("comment", text),
    ("retry", ms)."""
    name, data = None, None
    for line in lines:
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("retry:"):
            yield "retry", int(line.removeprefix("retry:"))
        elif line.startswith("event:"):
            name = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = json.loads(line.removeprefix("data:"))
        elif line == "" and name is not None:
            yield "event", (name, data)
            name, data = None, None


# --- the orders list -----------------------------------------------------------------------


def test_the_order_list_pages_newest_first_and_only_for_the_shop(shop: Shop) -> None:
    made = []
    for number in range(5):
        if number != 3:  # two orders in the same second: the order id breaks the tie
            shop.clock.advance(1)
        made.append(shop.order(dict(ORDER, reference=f"INV-{number}")))
    # Orders 2 and 3 (from 0) share a second: newest first by (created_at, order_id).
    rows = [(NOW + 1, made[0]), (NOW + 2, made[1]), (NOW + 3, made[2]), (NOW + 3, made[3])]
    rows.append((NOW + 4, made[4]))
    expected = [v["order_id"] for _, v in sorted(rows, key=lambda r: (r[0], r[1]["order_id"]))]
    expected.reverse()

    refused = shop.http.get("/v1/orders")
    assert refused.status_code == 401 and refused.json()["code"] == E.UNAUTHENTICATED.code

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"before": cursor} if cursor else {})}
        page = shop.http.get("/v1/orders", params=params, headers=BEARER)
        assert page.status_code == 200, page.text
        document = page.json()
        assert len(document["orders"]) <= 2
        seen += [order["order_id"] for order in document["orders"]]
        for order in document["orders"]:
            assert not {"token", "notice", "idempotency_key", "link"} & set(order)
        cursor = document["next"]
        if cursor is None:
            break
    assert seen == expected


def test_the_order_list_refuses_what_is_out_of_bounds(shop: Shop) -> None:
    shop.order()
    for params in ({"limit": 0}, {"limit": 101}, {"before": "yesterday"}, {"before": "1.bad id"}):
        response = shop.http.get("/v1/orders", params=params, headers=BEARER)
        assert response.status_code == 422, params
        assert response.json()["code"] == E.VALIDATION_FAILED.code
    assert len(shop.http.get("/v1/orders", headers=BEARER).json()["orders"]) == 1


def test_the_order_list_shows_what_may_still_be_refunded(shop: Shop) -> None:
    paid = shop.paid_order()
    response = shop.http.post(
        f"/v1/orders/{paid['order_id']}/refunds",
        json={"amount": "4.00"},
        headers={**BEARER, "Idempotency-Key": "ik_list_refund_1"},
    )
    assert response.status_code == 200, response.text
    shop.processor.refund_state = "sent"  # the next refund is still on its way
    response = shop.http.post(
        f"/v1/orders/{paid['order_id']}/refunds",
        json={"amount": "1.50"},
        headers={**BEARER, "Idempotency-Key": "ik_list_refund_2"},
    )
    assert response.status_code == 200, response.text
    [summary] = shop.http.get("/v1/orders", headers=BEARER).json()["orders"]
    assert summary["state"] == "partially_refunded"
    assert (summary["refunded_minor"], summary["refund_pending_minor"]) == (400, 150)
    assert (summary["refundable_minor"], summary["refundable"]) == (700, "7.00")


# --- the live status stream ----------------------------------------------------------------


def test_the_stream_pushes_paid_with_the_guarantee_and_ends(shop: Shop) -> None:
    view = shop.order()
    url = f"/v1/orders/{view['order_id']}/events"
    with shop.http.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        events = _events(response.iter_lines())
        assert next(events) == ("retry", QUICK.retry_ms)
        kind, (name, first) = next(events)
        assert (kind, name, first["state"]) == ("event", "order", "open")
        assert first["expires_at"] == NOW + 600 and first["guarantee"] is None
        shop.notify(view["request_id"])
        paid = next(event for event in events if event[0] == "event")[1][1]
        assert list(events) == []  # the server ended the stream on the final state
    assert paid["state"] == "paid"
    assert paid["guarantee"] == {"processor": "mno-b", "guarantee": "irrevocable"}
    assert paid["transfer_id"] == shop.get(view["order_id"])["transfer_id"]
    assert paid["paid_at"] == NOW and paid["paid_at_text"].endswith("UTC")
    assert not {"token", "notice", "link", "idempotency_key", "request_id"} & set(paid)
    status = shop.http.get(f"/v1/orders/{view['order_id']}/status").json()
    assert status == paid  # the polling fallback sees the same


def test_the_stream_of_a_final_order_sends_one_event_and_ends(shop: Shop) -> None:
    view = shop.order()
    shop.processor.by_id[view["request_id"]]["state"] = "expired"
    shop.clock.advance(601)
    shop.server.call(shop.service.poll_once())
    assert shop.get(view["order_id"])["state"] == "expired"
    with shop.http.stream("GET", f"/v1/orders/{view['order_id']}/events") as response:
        sent = [event for event in _events(response.iter_lines()) if event[0] == "event"]
    assert [(name, data["state"]) for _, (name, data) in sent] == [("order", "expired")]


def test_the_stream_keeps_alive_and_ends_after_its_time(shop: Shop) -> None:
    view = shop.order()
    started = time.monotonic()
    with shop.http.stream("GET", f"/v1/orders/{view['order_id']}/events") as response:
        kinds = [kind for kind, _ in _events(response.iter_lines())]
    took_s = time.monotonic() - started
    assert kinds.count("event") == 1  # nothing changed: one state, never repeated
    assert kinds.count("comment") >= 2  # keep-alives while nothing happens
    assert QUICK.max_s <= took_s < QUICK.max_s + 5  # it ended by itself
    # The server counts the stream closed just after its last byte: allow it that moment.
    deadline = time.monotonic() + 5
    while shop.service.changes.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert shop.service.changes.open_streams == 0


def test_the_number_of_streams_is_bounded(shop: Shop) -> None:
    view = shop.order()
    url = f"/v1/orders/{view['order_id']}/events"
    with (
        httpx.Client(base_url=shop.url, timeout=10) as one,
        httpx.Client(base_url=shop.url, timeout=10) as two,
        one.stream("GET", url) as first,
        two.stream("GET", url) as second,
    ):
        assert first.status_code == second.status_code == 200
        # Read from both (and keep the readers: a dropped reader closes its stream).
        readers = [first.iter_lines(), second.iter_lines()]
        assert [next(reader) for reader in readers] == [f"retry: {QUICK.retry_ms}"] * 2
        refused = shop.http.get(url)
        assert refused.status_code == 503
        assert refused.json()["code"] == E.UNAVAILABLE.code
    deadline = time.monotonic() + 10
    while shop.service.changes.open_streams and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the two clients left
    assert shop.service.changes.open_streams == 0
    with shop.http.stream("GET", url) as again:
        assert again.status_code == 200


def test_there_is_no_stream_for_an_unknown_order(shop: Shop) -> None:
    response = shop.http.get("/v1/orders/mo_nothing_here_at_all/events")
    assert response.status_code == 404 and response.json()["code"] == E.NOT_FOUND.code
    assert shop.service.changes.open_streams == 0


# --- the pages themselves -----------------------------------------------------------------


def test_pages_load_only_from_here_and_say_so(shop: Shop) -> None:
    view = shop.order()
    shop.sign_in()
    for path in (f"/checkout/{view['order_id']}", "/shop/new", "/shop/orders", "/login"):
        response = shop.http.get(path)
        assert response.status_code == 200, path
        headers, page = response.headers, response.text
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'nonce-" in csp, path
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
        assert '<html lang="en">' in page and 'name="viewport"' in page
        assert "//" not in "".join(re.findall(r'(?:src|href|action)="([^"]*)"', page))
        for script in re.findall(r"<script[^>]*>", page):
            assert "nonce=" in script, (path, script)
    for name, kind in (("merchant.css", "text/css"), ("checkout.js", "text/javascript")):
        response = shop.http.get(f"/static/{name}")
        assert response.headers["content-type"].startswith(kind)
        assert response.headers["x-content-type-options"] == "nosniff"
    assert shop.http.get("/static/..%2Fweb.py").status_code == 404
    assert shop.http.get("/static/nothing.js").status_code == 404


def test_an_unknown_checkout_is_a_readable_page_for_people(shop: Shop) -> None:
    person = shop.http.get("/checkout/mo_no_such_order_here", headers={"Accept": "text/html"})
    assert person.status_code == 404 and "There is no such order." in person.text
    program = shop.http.get("/checkout/mo_no_such_order_here")
    assert program.json()["code"] == E.NOT_FOUND.code


# --- the page forms ------------------------------------------------------------------------


def _order_count(shop: Shop) -> int:
    return len(shop.http.get("/v1/orders", headers=BEARER).json()["orders"])


def test_the_staff_pages_need_the_token(shop: Shop) -> None:
    for path in ("/shop/orders", "/shop/new"):
        response = shop.http.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
    wrong = shop.http.post(
        "/login", data={"token": "guess", "next": "/shop/new"}, headers=shop.origin
    )
    assert wrong.status_code == 401
    assert "That access token is not right." in wrong.text and "guess" not in wrong.text
    assert SESSION_COOKIE not in shop.http.cookies
    right = shop.http.post(
        "/login", data={"token": TOKEN, "next": "/shop/new"}, headers=shop.origin
    )
    assert right.status_code == 303 and right.headers["location"] == "/shop/new"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and TOKEN.lower() not in cookie
    assert shop.http.get("/shop/orders").status_code == 200
    # A forged or old cookie is not a session.
    value = shop.http.cookies[SESSION_COOKIE]
    shop.http.cookies.set(SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert shop.http.get("/shop/orders").status_code == 303
    shop.http.cookies.set(SESSION_COOKIE, value)
    shop.clock.advance(SESSION_TTL_S)
    assert shop.http.get("/shop/orders").status_code == 303


def test_logout_ends_the_session_on_the_server_at_once(shop: Shop) -> None:
    shop.sign_in()
    copied = shop.http.cookies[SESSION_COOKIE]
    assert shop.http.get("/shop/orders").status_code == 200
    assert shop.http.post("/logout", headers=shop.browser).status_code == 303
    with httpx.Client(base_url=shop.url, timeout=10) as other:
        other.cookies.set(SESSION_COOKIE, copied)
        assert other.get("/shop/orders").status_code == 303  # the copy died with the session
        assert other.get("/v1/orders").status_code == 401
    assert shop.server.call(_session_count(shop)) == 0


async def _session_count(shop: Shop) -> int:
    async with shop.service.database.read() as connection:
        result = await connection.execute(store.sessions.select())
        return len(result.all())


def test_a_session_keeps_no_credential_and_ends_with_its_token(shop: Shop) -> None:
    shop.sign_in()
    cookie = shop.http.cookies[SESSION_COOKIE]

    async def stored() -> list[dict[str, Any]]:
        async with shop.service.database.read() as connection:
            result = await connection.execute(store.sessions.select())
            return [dict(row) for row in result.mappings()]

    (row,) = shop.server.call(stored())
    assert cookie not in json.dumps(row) and TOKEN not in json.dumps(row)
    assert row["expires_at"] == NOW + SESSION_TTL_S
    rotated = ShopSessions(shop.service.database, shop.clock, "a-new-token-after-rotation")
    assert not shop.server.call(rotated.live(cookie))
    assert shop.server.call(ShopSessions(shop.service.database, shop.clock, TOKEN).live(cookie))


def test_signing_in_again_and_again_keeps_a_bounded_number_of_sessions(shop: Shop) -> None:
    sessions = ShopSessions(shop.service.database, shop.clock, TOKEN)
    cookies = [shop.server.call(sessions.open()) for _ in range(SESSIONS_MAX + 5)]
    assert shop.server.call(_session_count(shop)) == SESSIONS_MAX
    assert shop.server.call(sessions.live(cookies[-1]))


def test_the_sign_in_is_throttled_per_address(shop: Shop) -> None:
    for attempt in range(LOGIN_FAILURES_MAX):
        wrong = shop.http.post("/login", data={"token": f"guess-{attempt}"}, headers=shop.origin)
        assert wrong.status_code == 401
    blocked = shop.http.post("/login", data={"token": TOKEN}, headers=shop.origin)
    assert blocked.status_code == 429
    assert "Too many wrong tokens" in blocked.text and SESSION_COOKIE not in shop.http.cookies
    shop.clock.advance(LOGIN_WINDOW_S)
    shop.sign_in()  # the window is over


def test_a_refund_form_sent_twice_refunds_once(shop: Shop) -> None:
    shop.sign_in()
    paid = shop.paid_order()
    page = shop.http.get("/shop/orders").text
    (key,) = re.findall(r'name="idempotency_key" value="([^"]+)"', page)
    form = {"amount": "2.00", "mode": "amount", "idempotency_key": key}
    path = f"/shop/orders/{paid['order_id']}/refunds"
    first = shop.http.post(path, data=form, headers=shop.browser)
    second = shop.http.post(path, data=form, headers=shop.browser)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    order = shop.get(paid["order_id"])
    assert [r["amount_minor"] for r in order["refunds"]] == [200]
    keyless = shop.http.post(path, data={"amount": "1.00", "mode": "amount"}, headers=shop.browser)
    assert keyless.status_code == 422 and "This refund form is out of date." in keyless.text
    assert len(shop.get(paid["order_id"])["refunds"]) == 1
    # A fresh page has fresh keys: the next refund is another one.
    (fresh,) = re.findall(
        r'name="idempotency_key" value="([^"]+)"', shop.http.get("/shop/orders").text
    )
    assert fresh != key


def test_a_basket_form_becomes_an_order_once(shop: Shop) -> None:
    shop.sign_in()
    form = {
        "idempotency_key": "ik_page-form-0000000001",
        "line_name": ["Coffee", "Cake", ""],
        "line_quantity": ["2", "1", ""],
        "line_price": ["2.50", "3.20", ""],
        "amount": "",
        "currency": "EUR",
        "reference": "TABLE-4",
        "ttl_s": "120",
    }
    created = shop.http.post("/shop/orders", data=form, headers=shop.browser)
    assert created.status_code == 303, created.text
    order_id = created.headers["location"].removeprefix("/checkout/")
    order = shop.get(order_id)
    assert (order["amount_minor"], order["reference"], order["state"]) == (820, "TABLE-4", "open")
    assert order["basket"] == [
        {"name": "Coffee", "quantity": 2, "unit_amount_minor": 250},
        {"name": "Cake", "quantity": 1, "unit_amount_minor": 320},
    ]
    assert order["basket_digest"] and order["expires_at"] == NOW + 120
    again = shop.http.post("/shop/orders", data=form, headers=shop.origin)
    assert again.headers["location"] == created.headers["location"]  # a resent form
    assert _order_count(shop) == 1


WRONG_FORMS = [
    ({"amount": "9.99"}, "The basket adds up to 8.20 EUR, not 9.99 EUR."),
    ({"line_quantity": ["two", "1", ""]}, "The quantity of item 1 is not a whole number"),
    ({"line_price": ["2.50", "", ""]}, "Item 2 is not complete."),
    ({"line_price": ["2.505", "3.20", ""]}, "The price of Item 1 is not an amount."),
    ({"currency": "XXX"}, "That currency is not supported."),
    ({"currency": "euro"}, "The currency is not a three-letter code."),
    ({"line_name": ["x"] * 101}, "A basket has at most"),
    (
        {"line_name": [""] * 3, "line_quantity": [""] * 3, "line_price": [""] * 3},
        "There is nothing to charge yet.",
    ),
]


def test_a_wrong_order_form_is_shown_again_with_a_readable_error(shop: Shop) -> None:
    shop.sign_in()
    good = {
        "idempotency_key": "ik_page-form-0000000002",
        "line_name": ["Coffee", "Cake", ""],
        "line_quantity": ["2", "1", ""],
        "line_price": ["2.50", "3.20", ""],
        "currency": "EUR",
        "reference": "<b>TABLE</b>",
    }
    for changes, sentence in WRONG_FORMS:
        response = shop.http.post("/shop/orders", data={**good, **changes}, headers=shop.browser)
        assert response.status_code == 422, changes
        page = response.text
        assert 'role="alert"' in page and sentence in page, changes
        assert "Traceback" not in page and "validation_failed" not in page
        assert "&lt;b&gt;TABLE&lt;/b&gt;" in page and "<b>TABLE" not in page  # kept, escaped
        assert 'value="ik_page-form-0000000002"' in page  # a resend is the same order
    assert _order_count(shop) == 0


def test_forms_from_another_site_are_refused(shop: Shop) -> None:
    shop.sign_in()
    paid = shop.paid_order()
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://till.shop.example"},
    ):
        made = shop.http.post("/shop/orders", data={"amount": "1.00"}, headers=headers)
        refunded = shop.refund_form(paid["order_id"], {"amount": "1.00"}, **headers)
        assert made.status_code == refunded.status_code == 403
        assert "came from another site" in refunded.text
    assert _order_count(shop) == 1
    assert shop.get(paid["order_id"])["refunds"] == []


def test_refund_forms_never_refund_more_than_was_paid(shop: Shop) -> None:
    shop.sign_in()
    paid = shop.paid_order()
    path = f"/shop/orders/{paid['order_id']}/refunds"
    order_id = paid["order_id"]
    partial = shop.refund_form(order_id, {"amount": "4.00", "mode": "amount"})
    assert partial.status_code == 303
    shown = shop.http.get(partial.headers["location"])
    assert "Refunded 4.00 EUR of INV-1." in shown.text

    too_much = shop.refund_form(order_id, {"amount": "8.51", "mode": "amount"})
    assert too_much.status_code == 422
    assert "That is more than can still be refunded for this order." in too_much.text
    assert "Refund at most 8.50 EUR." in too_much.text and 'role="alert"' in too_much.text
    empty = shop.refund_form(order_id, {"amount": "", "mode": "amount"})
    assert empty.status_code == 422 and "Type the amount to refund." in empty.text
    after = shop.get(paid["order_id"])
    assert (after["state"], after["refunded_minor"], len(after["refunds"])) == (
        "partially_refunded",
        400,
        1,
    )

    rest = shop.refund_form(order_id, {"amount": "", "mode": "rest"})
    assert rest.status_code == 303
    final = shop.get(paid["order_id"])
    assert (final["state"], final["refunded_minor"]) == ("refunded", 1250)
    page = shop.http.get("/shop/orders").text
    assert f'action="{path}"' not in page  # nothing left to refund: no form
    again = shop.refund_form(order_id, {"amount": "0.01"})
    assert again.status_code == 409 and "This order cannot be refunded." in again.text
    assert shop.get(paid["order_id"])["refunded_minor"] == 1250


def test_without_an_api_token_the_pages_are_open_like_the_api(tmp_path: Path) -> None:
    from .test_service import Shop as InProcessShop
    from .test_service import scenario

    async def body(shop: InProcessShop) -> None:
        assert (await shop.client.get("/shop/orders")).status_code == 200
        assert (await shop.client.get("/v1/orders")).status_code == 200
        login = await shop.client.get("/login?next=/shop/new")
        assert (login.status_code, login.headers["location"]) == (303, "/shop/new")
        elsewhere = await shop.client.get("/login?next=https://evil.example/")
        assert elsewhere.headers["location"] == "/shop/orders"
        # Open, but still not to forms posted from another site.
        forged = await shop.client.post(
            "/shop/orders", data={"amount": "1.00"}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert forged.status_code == 403

    scenario(tmp_path, body)
