"""The back office (/backoffice) at the HTTP level, on SQLite and PostgreSQL.

Real processor apps on real databases, driven as a browser would drive them: a cookie jar,
form posts, redirects read by hand. Every refusal is checked to change nothing: no session
cookie after a wrong token, the credential still locked and no audit entry after a forged
or token-less POST, the old cookie useless after logout.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest

from semops.audit.chain import ChainVerifier
from semops.core.clock import FixedClock
from semops.crypto import KeyRing
from semops.processor.backoffice import SESSION_COOKIE
from semops.processor.backoffice.pages import GENERIC_LOGIN_FAILURE
from semops.processor.backoffice.queries import PAGE_ROWS, PAGES_MAX, TRANSFER_VIEWS
from semops.processor.backoffice.sessions import (
    LOGIN_FAILURES_MAX,
    LOGIN_WINDOW_S,
    SESSION_IDLE_S,
    LoginThrottle,
    Sessions,
    token_matches,
)
from semops.store import audit as audit_store
from semops.store import processor as store
from tests.processor.network import (
    Network,
    Node,
    Wallet,
    device_key,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio

BO = "/backoffice"
WRONG_PIN = "9753"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_LOGIN_CSRF = re.compile(r'name="login_csrf" value="([^"]+)"')


def browser(node: Node) -> httpx.AsyncClient:
    """A fresh cookie jar on the processor's public app (one browser profile)."""
    transport = node.public._transport  # the same ASGI app, another client
    return httpx.AsyncClient(transport=transport, base_url=f"http://{node.id}.public")


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get(f"{BO}/login")
    assert form.status_code == 200, form.text
    (login_csrf,) = _LOGIN_CSRF.findall(form.text)
    return await client.post(f"{BO}/login", data={"login_csrf": login_csrf, "token": token})


async def signed_in(node: Node) -> httpx.AsyncClient:
    client = browser(node)
    answer = await sign_in(client, node.processor.context.keys.operator_token)
    assert answer.status_code == 303 and answer.headers["location"] == f"{BO}/", answer.text
    return client


async def csrf_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return _CSRF.findall(page.text)[0]


async def audit_entries(node: Node) -> list[dict[str, Any]]:
    async with node.processor.context.database.read() as connection:
        return await audit_store.entries_after(connection, store.audit_log, 0, 10_000)


async def credential(node: Node, account_id: str) -> tuple[int, bool]:
    async with node.processor.context.database.read() as connection:
        row = await store.get_row(connection, store.credentials, account_id)
    assert row is not None
    return int(row["failures"]), bool(row["locked"])


async def lock(wallet: Wallet, token: str) -> None:
    codes = []
    for _ in range(3):
        answer = await wallet.pay(token, pin=WRONG_PIN)
        codes.append(answer.json()["code"])
    assert codes == ["pin_invalid", "pin_invalid", "pin_locked"]


def shown(response: httpx.Response) -> str:
    """The page's text as a person reads it (entities decoded)."""
    return html.unescape(response.text)


def assert_page_headers(response: httpx.Response) -> None:
    headers = response.headers
    assert headers["cache-control"] == "no-store"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    policy = headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy


# --- sign-in ----------------------------------------------------------------------------------


@on_both
async def test_a_wrong_token_gets_one_generic_answer_and_no_session(network: Network) -> None:
    bank = await network.add("bank-a")
    client = browser(bank)
    first = await client.get(f"{BO}/customers")
    assert (first.status_code, first.headers["location"]) == (303, f"{BO}/login")

    token = bank.processor.context.keys.operator_token
    answers = [
        await sign_in(client, guess)
        for guess in ("wrong", token[:-1] + ("0" if token[-1] != "0" else "1"), " ")
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    for answer in answers:
        assert GENERIC_LOGIN_FAILURE in shown(answer)
        cookies = answer.headers.get_list("set-cookie")
        assert not [c for c in cookies if c.startswith(SESSION_COOKIE + "=")], cookies
        assert_page_headers(answer)
    assert token not in "".join(a.text for a in answers)
    assert SESSION_COOKIE not in client.cookies
    still_out = await client.get(f"{BO}/")
    assert still_out.status_code == 303


@on_both
async def test_the_right_token_opens_a_strict_httponly_session_scoped_to_the_back_office(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    client = browser(bank)
    answer = await sign_in(client, bank.processor.context.keys.operator_token)
    assert answer.status_code == 303
    (cookie,) = [
        c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    ]
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/backoffice"} <= flags
    value = cookie.split(";")[0].split("=", 1)[1]
    assert value not in json.dumps(await audit_entries(bank))
    overview = await client.get(f"{BO}/")
    assert overview.status_code == 200 and "Net position against the router" in overview.text
    assert_page_headers(overview)


@on_both
async def test_sign_in_without_the_form_token_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    client = browser(bank)
    token = bank.processor.context.keys.operator_token
    answer = await client.post(f"{BO}/login", data={"token": token})
    assert answer.status_code == 403 and "expired" in answer.text
    assert SESSION_COOKIE not in client.cookies


@on_both
async def test_sign_in_attempts_are_bounded_per_address_then_allowed_again(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    client = browser(bank)
    token = bank.processor.context.keys.operator_token
    for _ in range(LOGIN_FAILURES_MAX):
        assert (await sign_in(client, "guess")).status_code == 401
    blocked = await sign_in(client, token)  # even the right token waits now
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
    assert SESSION_COOKIE not in client.cookies
    network.clock.advance(LOGIN_WINDOW_S)
    assert (await sign_in(client, token)).status_code == 303


# --- pages ------------------------------------------------------------------------------------


@on_both
async def test_customers_accounts_and_balances_show_minor_units_formatted(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000, name="Ada Lovelace")
    await enrolled_wallet(bank, deposit_minor=100, name="Grace Hopper", phone="+447700900999")
    created = await shop.request(1250)
    assert (await wallet.pay(created["token"])).status_code == 200
    client = await signed_in(bank)

    listing = await client.get(f"{BO}/customers")
    assert listing.status_code == 200
    assert "2 customers" in listing.text and "Ada Lovelace" in listing.text
    ada_row = listing.text.split(f'data-account="{wallet.account_id}"')[1].split("</tr>")[0]
    assert "37.50 EUR" in ada_row
    found = await client.get(f"{BO}/customers", params={"q": "grace"})
    assert "1 customer " in found.text and "Ada Lovelace" not in found.text
    by_id = await client.get(f"{BO}/customers", params={"q": wallet.account_id})
    assert "Ada Lovelace" in by_id.text and "Grace Hopper" not in by_id.text
    wildcard = await client.get(f"{BO}/customers", params={"q": "%"})
    assert "0 customers" in wildcard.text

    page = await client.get(f"{BO}/accounts/{wallet.account_id}")
    assert page.status_code == 200
    assert re.search(r'id="balance" data-minor="3750">37\.50 EUR<', page.text)
    assert re.search(r'id="held" data-minor="0">0\.00 EUR<', page.text)
    assert "Corner Shop" in page.text and "+447700900123" in page.text
    assert_page_headers(page)

    overview = await client.get(f"{BO}/")
    assert re.search(r"<dt>Customers</dt><dd><a [^>]+>2</a>", overview.text)


@on_both
async def test_lists_are_bounded_and_bad_parameters_get_a_readable_page(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    for index in range(PAGE_ROWS + 2):
        await bank.admin(
            "POST",
            "/v1/admin/customers",
            {"name": f"Person {index:02d}", "phone": f"+4477009{index:05d}", "currency": "EUR"},
        )
    client = await signed_in(bank)
    first = await client.get(f"{BO}/customers")
    assert first.text.count("<tr data-account=") == PAGE_ROWS
    assert 'rel="next"' in first.text
    second = await client.get(f"{BO}/customers", params={"page": "2"})
    assert second.text.count("<tr data-account=") == 2 and 'rel="next"' not in second.text
    for params, status in (
        ({"page": "0"}, 400),
        ({"page": str(PAGES_MAX + 1)}, 400),
        ({"page": "x"}, 400),
        ({"q": "a" * 41}, 400),
    ):
        answer = await client.get(f"{BO}/customers", params=params)
        assert answer.status_code == status, params
        assert 'role="alert"' in answer.text and "Traceback" not in answer.text
    unknown = await client.get(f"{BO}/accounts/ac_nobody")
    assert unknown.status_code == 404 and "no account with that id" in unknown.text
    odd = await client.get(f"{BO}/accounts/" + "x" * 40)
    assert odd.status_code == 404
    bad_state = await client.get(f"{BO}/transfers", params={"view": "payments", "state": "x"})
    assert bad_state.status_code == 400 and "committed" in bad_state.text


@on_both
async def test_a_payment_appears_with_its_state_and_the_filter_selects_by_state(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(1250)
    assert (await wallet.pay(created["token"])).status_code == 200
    (order,) = await rows(bank, "orders")
    client = await signed_in(bank)

    payments = await client.get(f"{BO}/transfers", params={"view": "payments"})
    row = payments.text.split(f'data-transfer="{order["transfer_id"]}"')[1].split("</tr>")[0]
    assert 'class="state">committed<' in row and "12.50 EUR" in row and "on us" in row
    assert 'data-state="committed"' in payments.text
    none_aborted = await client.get(
        f"{BO}/transfers", params={"view": "payments", "state": "aborted"}
    )
    assert order["transfer_id"] not in none_aborted.text
    requests = await client.get(f"{BO}/transfers", params={"view": "requests", "state": "paid"})
    assert created["request_id"] in requests.text
    for view in ("inbound", "refunds_sent", "refunds_received"):
        assert (await client.get(f"{BO}/transfers", params={"view": view})).status_code == 200


@on_both
async def test_no_page_shows_what_the_back_office_must_not_see(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    created = await shop.request(700)
    assert (await wallet.pay(created["token"])).status_code == 200
    client = await signed_in(bank)
    pages = [
        await client.get(BO + path)
        for path in (
            "/",
            "/customers",
            f"/accounts/{wallet.account_id}",
            f"/accounts/{shop.account_id}",
            "/transfers?view=payments",
            "/transfers?view=requests",
            "/credentials",
            "/audit?all=1",
        )
    ]
    assert all(page.status_code == 200 for page in pages)
    text = "\n".join(page.text for page in pages)
    secrets = [row["pin_value"] for row in await rows(bank, "credentials")]
    secrets += [row["code_digest"] for row in await rows(bank, "activation_codes")]
    secrets += [json.loads(row["jwk"])["x"] for row in await rows(bank, "devices")]
    for request in await rows(bank, "requests"):
        secrets += [request["fulfilment"], request["token"][:60]]
    secrets += [
        row["api_key_digest"] for row in await rows(bank, "payees") if row["api_key_digest"]
    ]
    secrets += [bank.processor.context.keys.operator_token, shop.api_key]
    assert [secret for secret in secrets if secret in text] == []


# --- unlock, CSRF, logout -----------------------------------------------------------------------


@on_both
async def test_a_locked_pin_is_listed_and_an_audited_unlock_lets_the_customer_pay(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000, name="Ada Lovelace")
    created = await shop.request(800)
    await lock(wallet, created["token"])
    client = await signed_in(bank)

    locked = await client.get(f"{BO}/credentials")
    assert f'data-account="{wallet.account_id}"' in locked.text and "Ada Lovelace" in locked.text
    before = await audit_entries(bank)
    csrf = _CSRF.findall(locked.text)[-1]
    answer = await client.post(f"{BO}/credentials/{wallet.account_id}/unlock", data={"csrf": csrf})
    assert (answer.status_code, answer.headers["location"]) == (303, f"{BO}/credentials")
    assert await credential(bank, wallet.account_id) == (0, False)

    (entry,) = (await audit_entries(bank))[len(before) :]
    assert entry["kind"] == "credential_unlocked"
    assert json.loads(entry["data"]) == {"account_id": wallet.account_id}
    assert re.fullmatch(r"operator:backoffice:[0-9a-f]{12}", entry["actor"])
    after = await client.get(f"{BO}/credentials")
    assert f"Audit entry #{entry['seq']} records it." in after.text
    assert 'id="none-locked"' in after.text and entry["actor"] in after.text
    audit = await client.get(f"{BO}/audit")
    assert f'data-seq="{entry["seq"]}" data-kind="credential_unlocked"' in audit.text

    verifier = ChainVerifier(bank.id, KeyRing([bank.processor.context.keys.sign_record()]))
    assert all(verifier.feed(row) for row in await audit_entries(bank))
    assert verifier.finish().ok
    assert (await wallet.pay(created["token"])).status_code == 200


@on_both
async def test_a_post_without_the_sessions_csrf_token_changes_nothing(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    await lock(wallet, (await shop.request(800))["token"])
    client = await signed_in(bank)
    other = await signed_in(bank)
    other_csrf = await csrf_of(other, f"{BO}/credentials")
    own_csrf = await csrf_of(client, f"{BO}/credentials")
    before = await audit_entries(bank)
    path = f"{BO}/credentials/{wallet.account_id}/unlock"

    attempts = [
        await client.post(path, data={}),
        await client.post(path, data={"csrf": ""}),
        await client.post(path, data={"csrf": other_csrf}),  # another session's token
        await client.post(path, data={"csrf": own_csrf}, headers={"Origin": "http://evil.example"}),
        await client.post(path, content=json.dumps({"csrf": own_csrf})),  # not a form
        await browser(bank).post(path, data={"csrf": own_csrf}),  # no session cookie
    ]
    assert [a.status_code for a in attempts] == [403, 403, 403, 403, 415, 401]
    assert all('role="alert"' in a.text for a in attempts)
    assert await credential(bank, wallet.account_id) == (3, True)
    assert await audit_entries(bank) == before
    still = await client.get(f"{BO}/credentials")
    assert f'data-account="{wallet.account_id}"' in still.text


@on_both
async def test_revoking_a_device_from_its_account_page_is_audited_and_final(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    client = await signed_in(bank)
    page = await client.get(f"{BO}/accounts/{wallet.account_id}")
    (kid,) = re.findall(r'data-kid="([^"]+)"', page.text)
    csrf = _CSRF.findall(page.text)[-1]
    answer = await client.post(f"{BO}/devices/{kid}/revoke", data={"csrf": csrf})
    assert answer.headers["location"] == f"{BO}/accounts/{wallet.account_id}"
    shown = await client.get(answer.headers["location"])
    assert "revoked: it can no longer sign payments" in shown.text
    assert 'aria-label="Revoke' not in shown.text
    entry = (await audit_entries(bank))[-1]
    assert entry["kind"] == "device_revoked" and entry["actor"].startswith("operator:backoffice:")
    refused = await wallet.get("/v1/wallet/balance")
    assert refused.json()["code"] == "device_revoked"


@on_both
async def test_a_pin_reset_from_the_account_page_is_confirmed_audited_and_shown_once(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    client = await signed_in(bank)
    page_path = f"{BO}/accounts/{wallet.account_id}"
    path = f"{page_path}/reset"
    before = await audit_entries(bank)

    unconfirmed = await client.post(path, data={"csrf": await csrf_of(client, page_path)})
    assert unconfirmed.headers["location"] == page_path
    assert "Nothing was reset" in shown(await client.get(page_path))
    assert await audit_entries(bank) == before
    assert (await wallet.get("/v1/wallet/balance")).status_code == 200

    answer = await client.post(
        path, data={"csrf": await csrf_of(client, page_path), "confirm": "yes"}
    )
    assert answer.headers["location"] == page_path
    result = await client.get(page_path)
    (code,) = re.findall(
        r'id="activation-code">Activation code: <strong><code>([A-Z2-9-]+)<', result.text
    )
    assert "PIN reset: 1 device(s) revoked" in shown(result)
    assert code not in (await client.get(page_path)).text  # shown once
    (entry,) = (await audit_entries(bank))[len(before) :]
    assert entry["kind"] == "credential_reset" and entry["actor"].startswith("operator:backoffice:")
    assert json.loads(entry["data"]) == {"account_id": wallet.account_id, "devices_revoked": 1}
    assert (await wallet.get("/v1/wallet/balance")).json()["code"] == "device_revoked"
    fresh = Wallet(bank, device_key(), pin="2468")
    assert (await fresh.enrol(code)).status_code == 200


@on_both
async def test_a_code_for_a_new_phone_is_issued_from_the_account_page_and_needs_the_pin(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank, deposit_minor=5000)
    client = await signed_in(bank)
    page_path = f"{BO}/accounts/{wallet.account_id}"
    answer = await client.post(
        f"{page_path}/activation-codes", data={"csrf": await csrf_of(client, page_path)}
    )
    assert answer.headers["location"] == page_path
    (code,) = re.findall(r"<strong><code>([A-Z2-9-]+)<", (await client.get(page_path)).text)
    entry = (await audit_entries(bank))[-1]
    assert entry["kind"] == "activation_code_issued"
    stranger = Wallet(bank, device_key(), pin="0000")
    assert (await stranger.enrol(code)).json()["code"] == "pin_invalid"
    assert (await Wallet(bank, device_key()).enrol(code)).status_code == 200


@on_both
async def test_logout_ends_the_session_and_the_old_cookie_opens_nothing(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    client = await signed_in(bank)
    cookie = client.cookies[SESSION_COOKIE]
    csrf = await csrf_of(client, f"{BO}/")
    refused = await client.post(f"{BO}/logout", data={})
    assert refused.status_code == 403
    assert (await client.get(f"{BO}/customers")).status_code == 200  # still signed in

    out = await client.post(f"{BO}/logout", data={"csrf": csrf})
    assert (out.status_code, out.headers["location"]) == (303, f"{BO}/login?signed_out=1")
    assert "You have signed out." in (await client.get(out.headers["location"])).text
    replay = browser(bank)
    replay.cookies.set(SESSION_COOKIE, cookie, domain=f"{bank.id}.public", path=BO)
    for path in ("/", "/customers", "/credentials"):
        answer = await replay.get(BO + path)
        assert (answer.status_code, answer.headers["location"]) == (303, f"{BO}/login")


@on_both
async def test_an_idle_session_expires(network: Network) -> None:
    bank = await network.add("bank-a")
    client = await signed_in(bank)
    network.clock.advance(SESSION_IDLE_S - 1)
    assert (await client.get(f"{BO}/")).status_code == 200  # use keeps it alive
    network.clock.advance(SESSION_IDLE_S - 1)
    assert (await client.get(f"{BO}/")).status_code == 200
    network.clock.advance(SESSION_IDLE_S)
    assert (await client.get(f"{BO}/")).status_code == 303


@on_both
async def test_the_overview_shows_the_net_position_and_money_held(network: Network) -> None:
    bank = await network.add("bank-a")
    await enrolled_wallet(bank, deposit_minor=5000)
    client = await signed_in(bank)
    overview = await client.get(f"{BO}/")
    position = await bank.admin("GET", "/v1/admin/position")
    (eur,) = position.json()["positions"]
    assert f'class="net">{"+" if eur["net_position_minor"] > 0 else ""}' in overview.text
    assert f'data-minor="{eur["suspense_minor"]}" class="held"' in overview.text
    assert "50.00 EUR" in overview.text  # the customers' money


async def test_the_stylesheet_is_served_from_the_same_origin(network: Network) -> None:
    bank = await network.add("bank-a")
    client = browser(bank)
    css = await client.get(f"{BO}/static/backoffice.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["x-content-type-options"] == "nosniff"
    assert ":focus-visible" in css.text
    assert (await client.get(f"{BO}/static/../pages.py")).status_code == 404
    assert (await client.get(f"{BO}/static/other.js")).status_code == 404


def test_the_transfer_lists_select_existing_columns_and_no_secret_ones() -> None:
    forbidden = {"fulfilment", "token", "payer_ref", "receipt", "answer", "notice", "result"}
    for view in TRANSFER_VIEWS.values():
        assert set(view.columns) <= set(view.table.c.keys()), view.name
        assert not set(view.columns) & forbidden, view.name
        assert {"state", "created_at", "amount_minor", "currency"} <= set(view.columns)


# --- sessions and the sign-in throttle, on their own clock --------------------------------------


def test_sessions_are_bounded_and_keep_only_a_digest_of_the_cookie() -> None:
    clock = FixedClock(1_000)
    sessions = Sessions(clock, sessions_max=3)
    opened = []
    for _ in range(3):
        opened.append(sessions.open())
        clock.advance(1)
    cookie, session = sessions.open()  # the fourth pushes out the least recently used
    assert len(sessions) == 3
    assert sessions.get(opened[0][0]) is None
    assert sessions.get(cookie) is session and sessions.get(opened[1][0]) is opened[1][1]
    assert cookie not in repr(sessions._by_digest)
    assert re.fullmatch(r"operator:backoffice:[0-9a-f]{12}", session.actor)
    assert session.csrf_ok(session.csrf_token) and not session.csrf_ok(opened[1][1].csrf_token)
    assert not session.csrf_ok(None) and not session.csrf_ok("")
    assert sessions.get("x" * 10_000) is None and sessions.get(None) is None


def test_a_session_ends_at_its_lifetime_even_when_used() -> None:
    clock = FixedClock(1_000)
    sessions = Sessions(clock, idle_s=100, lifetime_s=250)
    cookie, _ = sessions.open()
    for _ in range(2):
        clock.advance(99)
        assert sessions.get(cookie) is not None
    clock.advance(60)
    assert sessions.get(cookie) is None and len(sessions) == 0


def test_the_throttle_counts_per_address_and_bounds_the_addresses_it_tracks() -> None:
    clock = FixedClock(1_000)
    throttle = LoginThrottle(clock, failures_max=2, window_s=60, clients_max=2)
    for _ in range(2):
        throttle.failed("10.0.0.1")
    assert throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.2")
    assert throttle.wait_s("10.0.0.1") == 60
    throttle.failed("10.0.0.2")
    # A third address while two are tracked and fresh shares the overflow bucket.
    throttle.failed("10.0.0.3")
    throttle.failed("10.0.0.4")
    assert throttle.blocked("10.0.0.5")
    clock.advance(60)
    assert not throttle.blocked("10.0.0.1") and not throttle.blocked("10.0.0.5")
    assert token_matches(" abc \n", "abc") and not token_matches("abd", "abc")
    assert not token_matches("", "") and not token_matches("a" * 300, "a" * 300)
