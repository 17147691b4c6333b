"""The merchant backend under attack (issue 11: H2, H3, M1, M3's payee side, and the lower
findings on `semops merchant request --out-dir` and the shop's sessions).

Real processes: the scene's network, shop-y's backend (its own process, at mno-b), and for
H2 one more backend whose link to mno-b passes an attacker's proxy (onpath.py). Where an
attack is refused, every service's rows are unchanged (Scene.assert_unchanged).

This module takes about a minute per backend, so it is named to run after test_replay.py,
whose first test replays a capture that must still be unexpired (30 s after the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from sqlalchemy import text

from semops.crypto import KeyUse, derive_key, derive_private_key, read_unverified_claims
from semops.crypto.pki import certificate_pem, issue_party_certificate, make_root_ca
from semops.devnet.actors import Customer, balance, create_merchant
from semops.devnet.demo import merchant_backend, merchant_trust_args
from semops.devnet.processes import ServiceProcess, free_port
from semops.merchant.service import KEYS_REFRESH_MIN_S
from semops.protocol import DirectoryKey, OrderState, PaymentNotice, PaymentRequest, parse_claims
from semops.protocol import sign as sign_message
from semops.service.files import write_secret
from semops.store.db import Database, sqlite_url
from tests.attack.attacker import pay, post_jose
from tests.attack.conftest import SHOP_Y, SHOP_Y_AUTH, SHOP_Y_SERVICE, SHOP_Y_TOKEN, Scene
from tests.attack.onpath import OnPath
from tests.attack.state import differences, snapshot

CALL_TIMEOUT_S: Final = 30.0
# A refund crossing a suspension: the router expires the attempt it could not forward
# (30 s), the payee side tries again after a wait, shop-y's poller hears of it (5 s).
REFUND_SETTLE_S: Final = 120.0
PAID_WAIT_S: Final = 30.0


# --- helpers ------------------------------------------------------------------------------


def _y(scene: Scene) -> str:
    return f"http://127.0.0.1:{scene.layout.ports[SHOP_Y]}"


def _call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(timeout=CALL_TIMEOUT_S, follow_redirects=False) as client:
        return client.request(method, url, json=body, headers=headers)


def _wait(predicate: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.3)


def _order(url: str, amount: str, auth: dict[str, str], reference: str | None = None) -> Any:
    body = {"amount": amount, "currency": "EUR", **({"reference": reference} if reference else {})}
    answer = _call("POST", url + "/v1/orders", body, auth)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _view(url: str, order_id: str, auth: dict[str, str]) -> Any:
    answer = _call("GET", f"{url}/v1/orders/{order_id}", headers=auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _paid(url: str, auth: dict[str, str], payer: Customer, amount: str) -> Any:
    """An order of the backend at `url`, paid by `payer`, once its backend knows it."""
    order = _order(url, amount, auth)
    outcome = pay(payer, order["token"])
    assert outcome.state is OrderState.COMPLETED, outcome.order
    paid = _wait(
        lambda: (v := _view(url, order["order_id"], auth))["state"] == "paid" and v, PAID_WAIT_S
    )
    assert paid, _view(url, order["order_id"], auth)
    return paid


def _rows(url: str, table: str, **where: Any) -> list[dict[str, Any]]:
    """A service's rows as an auditor reads them, from outside the service."""

    async def read() -> list[dict[str, Any]]:
        database = Database(url)
        try:
            async with database.read() as connection:
                condition = " AND ".join(f"{name} = :{name}" for name in where) or "1 = 1"
                query = text(f'SELECT * FROM "{table}" WHERE {condition}')
                result = await connection.execute(query, where)
                return [dict(row) for row in result.mappings()]
        finally:
            await database.dispose()

    return asyncio.run(read())


def _refund(
    url: str, order_id: str, body: Any, key: str | None, auth: dict[str, str] = SHOP_Y_AUTH
) -> httpx.Response:
    headers = {**auth, **({"Idempotency-Key": key} if key is not None else {})}
    return _call("POST", f"{url}/v1/orders/{order_id}/refunds", body, headers)


def _semops(*args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The `semops` command as a person runs it (a real process)."""
    return subprocess.run(
        [sys.executable, "-m", "semops", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


# --- H2: the notice key is trusted only if it chains to the scheme ------------------------


def _attacker_keys_document() -> tuple[Any, dict[str, Any]]:
    """A key that calls itself mno-b's, with a certificate from the attacker's own root."""
    key = derive_key("mno-b", KeyUse.SIGN, secrets.token_bytes(48))
    root_key = derive_private_key(secrets.token_bytes(48))
    at = datetime.now(UTC)
    root = make_root_ca(root_key, "SEMOPS Root CA", at, 1)
    certificate = issue_party_certificate(
        root_key, root, key.key.public_key(), "mno-b", "processor", at, 2
    )
    record = key.public_record(0, 2**34)
    document = {
        "processor_id": "mno-b",
        "signing_key": DirectoryKey.from_record(record).model_dump(mode="json"),
        "signing_certificate": certificate_pem(certificate).decode("ascii"),
    }
    return key, document


@pytest.fixture
def proxied_shop(scene: Scene) -> Iterator[tuple[str, dict[str, str], OnPath, str]]:
    """A merchant backend whose link to mno-b passes the attacker's proxy:
    (its URL, its auth header, the proxy, its database URL)."""
    name = f"shop-h{secrets.token_hex(3)}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    shop = create_merchant(scene.network, "mno-b", name, "Shop H", f"{url}/v1/notices")
    folder = scene.data_dir / "merchants" / name
    write_secret(folder / "processor-api-key", shop.api_key.encode())
    token = secrets.token_hex(24)
    write_secret(folder / "api-token", token.encode())
    proxy = OnPath(scene.layout.processor_url("mno-b"))
    process = ServiceProcess(
        name=name,
        args=[
            "merchant", "serve", "--merchant-id", name, "--data-dir", str(folder),
            "--processor", proxy.url, "--port", str(port),
            "--api-token-file", str(folder / "api-token"),
            *merchant_trust_args(scene.network, "mno-b"),
        ],
        output=folder / "logs" / "stdout.log",
        health_url=f"{url}/healthz",
    )  # fmt: skip
    try:
        process.start()
        process.wait_ready()
        yield url, {"Authorization": f"Bearer {token}"}, proxy, sqlite_url(folder / f"{name}.db")
    finally:
        process.stop()
        proxy.close()


def test_a_swapped_notice_key_on_the_processor_link_marks_nothing_paid(
    scene: Scene, proxied_shop: tuple[str, dict[str, str], OnPath, str]
) -> None:
    url, auth, proxy, db_url = proxied_shop
    order = _order(url, "250.00", auth, reference="TV-250")
    request = parse_claims(read_unverified_claims(order["token"]), PaymentRequest)
    attacker, document = _attacker_keys_document()
    proxy.swap_keys = document
    # Past the backend's refresh bound, so an unknown kid makes it fetch the keys again:
    # through the proxy, which answers with the attacker's key.
    time.sleep(KEYS_REFRESH_MIN_S + 1)
    before, before_shop = scene.quiet(), snapshot({"shop": db_url})

    forged = PaymentNotice(
        request_id=request.request_id,
        transfer_id="tr_" + secrets.token_urlsafe(16),
        payee_processor="mno-b",
        payee_id=request.payee_id,
        amount_minor=request.amount_minor,
        currency=request.currency,
        reference=request.reference,
        paid_at=int(time.time()),
        guarantee="irrevocable",
    )
    answer = post_jose(f"{url}/v1/notices", sign_message(forged, attacker))
    assert answer.status == 401, answer.body
    assert answer.code in ("certificate_invalid", "key_unknown"), answer.body
    assert proxy.swapped >= 1  # the backend did fetch the swapped key, and refused it
    assert _view(url, order["order_id"], auth)["state"] == "open"
    scene.assert_unchanged(before)
    assert not differences(before_shop, snapshot({"shop": db_url}))

    # With the genuine processor on the link, the order is paid as ever.
    proxy.swap_keys = None
    payer = scene.customer("bank-a", deposit_minor=30_000)
    assert pay(payer, order["token"]).state is OrderState.COMPLETED
    paid = _wait(lambda: _view(url, order["order_id"], auth)["state"] == "paid", PAID_WAIT_S)
    assert paid, _view(url, order["order_id"], auth)


# --- H3: nothing that moves money is open by default --------------------------------------


def _serve_args(scene: Scene, folder: Path) -> list[str]:
    key_file = folder / "processor-api-key"
    if not key_file.exists():
        write_secret(key_file, scene.shops["y"].api_key.encode())
    return [
        "merchant", "serve", "--merchant-id", SHOP_Y, "--data-dir", str(folder),
        "--processor", scene.layout.processor_url("mno-b"), "--port", str(free_port()),
        "--api-key-file", str(key_file),
    ]  # fmt: skip


def _refused_to_start(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        result = _semops(*args, timeout_s=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`semops {' '.join(args[:2])}` started and served: {args}")
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    return result


def test_a_merchant_backend_without_a_credential_refuses_to_start(
    scene: Scene, tmp_path: Path
) -> None:
    args = _serve_args(scene, tmp_path / "shop")
    refused = _refused_to_start(args)  # no token, no trust anchor: what the README ran
    assert "--api-token-file" in refused.stderr, refused.stderr
    # The development flag opens the API, so only on loopback.
    wide = _refused_to_start([*args, "--development", "--host", "0.0.0.0"])
    assert "loopback" in wide.stderr, wide.stderr
    # A token, but no trust anchor for the notice key.
    write_secret(tmp_path / "token", secrets.token_hex(24).encode())
    no_anchor = _refused_to_start([*args, "--api-token-file", str(tmp_path / "token")])
    assert "--root-ca" in no_anchor.stderr, no_anchor.stderr
    assert not (tmp_path / "shop" / f"{SHOP_Y}.db").exists()  # refused before anything


@pytest.fixture
def up_shop(scene: Scene) -> Iterator[tuple[str, dict[str, str]]]:
    """The merchant backend exactly as `semops up` starts it (devnet.demo.merchant_backend),
    and the header its owner uses (no header if it was started without a credential)."""
    name = f"cafe-up-{secrets.token_hex(3)}"
    port = scene.layout.ports["merchant"]
    shop = create_merchant(
        scene.network, "mno-b", name, "Cafe Up", f"http://127.0.0.1:{port}/v1/notices"
    )
    folder = scene.data_dir / "merchants" / name
    write_secret(folder / "processor-api-key", shop.api_key.encode())
    process = merchant_backend(scene.network, name, "mno-b")
    try:
        process.start()
        process.wait_ready()
        token_file = folder / "api-token"
        token = token_file.read_text().strip() if token_file.exists() else None
        yield f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"} if token else {}
    finally:
        process.stop()


def test_an_order_id_alone_gives_no_refund_and_no_order_list(
    scene: Scene, up_shop: tuple[str, dict[str, str]]
) -> None:
    url, owner = up_shop
    order = _paid(url, owner, scene.customer("mno-b", 5_000), "8.00")
    before = scene.quiet()
    # The paying customer, with the order id from the checkout link, and no token.
    for auth in ({}, {"Authorization": "Bearer guessed-token-000000000000"}):
        refund = _refund(url, order["order_id"], {"amount": "6.00"}, "ik_customer-attack-1", auth)
        assert refund.status_code == 401, refund.text
        assert refund.json()["code"] == "unauthenticated"
        listing = _call("GET", f"{url}/v1/orders", headers=auth)
        assert listing.status_code == 401, listing.text
        made = _call("POST", f"{url}/v1/orders", {"amount": "1.00", "currency": "EUR"}, auth)
        assert made.status_code == 401, made.text
    pages = _call("GET", f"{url}/shop/orders")
    assert pages.status_code == 303 and pages.headers["location"].startswith("/login")
    scene.assert_unchanged(before)
    # What the customer may read: what the checkout shows, nothing of the shop's records.
    customer_view = _call("GET", f"{url}/v1/orders/{order['order_id']}").json()
    assert customer_view["state"] == "paid" and customer_view["notice"]
    for private in ("refunds", "idempotency_key", "refunded_minor", "request_id"):
        assert private not in customer_view, private
    status = _call("GET", f"{url}/v1/orders/{order['order_id']}/status").json()
    assert "refunded" not in status and "idempotency_key" not in status


# --- M1: one refund per Idempotency-Key ---------------------------------------------------


def _refund_rows(scene: Scene, order: dict[str, Any]) -> tuple[int, int, int]:
    """The order's refunds at shop-y, at its processor, and at the payer's processor."""
    urls = scene.db_urls()
    at_shop = _rows(urls[SHOP_Y_SERVICE], "refunds", order_id=order["order_id"])
    at_payee = _rows(urls["mno-b"], "refunds_out", request_id=order["request_id"])
    at_payer = _rows(urls["bank-a"], "refunds_in", transfer_id=order["transfer_id"])
    return len(at_shop), len(at_payee), len(at_payer)


def test_a_refund_sent_four_times_with_one_key_refunds_once(scene: Scene) -> None:
    y = _y(scene)
    payer = scene.customer("bank-a", 5_000)
    order = _paid(y, SHOP_Y_AUTH, payer, "8.00")
    paid_balance = balance(scene.network, "bank-a", payer.account_id)
    key = "ik_" + secrets.token_urlsafe(16)
    answers = [_refund(y, order["order_id"], {"amount": "1.00"}, key) for _ in range(4)]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    refund_ids = {a.json()["refund"]["refund_id"] for a in answers}
    assert len(refund_ids) == 1, refund_ids
    credited = _wait(
        lambda: balance(scene.network, "bank-a", payer.account_id) == paid_balance + 100,
        REFUND_SETTLE_S,
    )
    assert credited, balance(scene.network, "bank-a", payer.account_id) - paid_balance
    assert _refund_rows(scene, order) == (1, 1, 1)

    # A retry after a restart of the backend: the key is stored, so is its answer.
    scene.network.restart(SHOP_Y)
    before = scene.quiet()
    again = _refund(y, order["order_id"], {"amount": "1.00"}, key)
    assert again.status_code == 200, again.text
    assert again.json()["refund"]["refund_id"] in refund_ids
    # Another body under the same key is a conflict; no key at all is refused.
    other = _refund(y, order["order_id"], {"amount": "2.00"}, key)
    assert (other.status_code, other.json()["code"]) == (409, "idempotency_conflict")
    keyless = _refund(y, order["order_id"], {"amount": "1.00"}, None)
    assert (keyless.status_code, keyless.json()["code"]) == (400, "idempotency_key_required")
    scene.assert_unchanged(before)
    assert balance(scene.network, "bank-a", payer.account_id) == paid_balance + 100


_FORM_KEY = re.compile(
    r'action="/shop/orders/(?P<order>[A-Za-z0-9_-]+)/refunds"[^>]*>\s*'
    r'<input type="hidden" name="idempotency_key" value="(?P<key>[A-Za-z0-9_-]+)">'
)
_BROWSER: Final = {"Sec-Fetch-Site": "same-origin", "Origin": "null"}


@contextlib.contextmanager
def _signed_in(y: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=y, timeout=CALL_TIMEOUT_S, follow_redirects=False) as client:
        answer = client.post("/login", data={"token": SHOP_Y_TOKEN, "next": "/shop/orders"})
        assert answer.status_code == 303, answer.text
        yield client


def test_a_refund_form_sent_twice_refunds_once(scene: Scene) -> None:
    y = _y(scene)
    order = _paid(y, SHOP_Y_AUTH, scene.customer("mno-b", 5_000), "8.00")
    with _signed_in(y) as client:
        page = client.get("/shop/orders").text
        keys = {m["order"]: m["key"] for m in _FORM_KEY.finditer(page)}
        assert order["order_id"] in keys, "the refund form carries no idempotency key"
        form = {"amount": "1.50", "mode": "amount", "idempotency_key": keys[order["order_id"]]}
        path = f"/shop/orders/{order['order_id']}/refunds"
        first = client.post(path, data=form, headers=_BROWSER)
        second = client.post(path, data=form, headers=_BROWSER)  # a double click, a retry
    assert first.status_code == second.status_code == 303, (first.text, second.text)
    view = _view(y, order["order_id"], SHOP_Y_AUTH)
    assert [r["amount_minor"] for r in view["refunds"]] == [150]
    assert view["refunded_minor"] == 150 and view["state"] == "partially_refunded"


# --- M3: the payee side never learns the payer processor's state --------------------------


def test_a_refund_while_the_payers_processor_is_suspended_names_no_cause_and_completes(
    scene: Scene,
) -> None:
    y = _y(scene)
    payer = scene.customer("bank-a", 5_000)
    order = _paid(y, SHOP_Y_AUTH, payer, "5.00")
    paid_balance = balance(scene.network, "bank-a", payer.account_id)
    network = scene.network
    refunds_at_router = len(_rows(scene.db_urls()["router"], "transfers", kind="refund"))
    network.router_admin("POST", "/v1/admin/participants/bank-a/suspend")
    try:
        answer = _refund(y, order["order_id"], {"amount": "2.00"}, "ik_" + secrets.token_hex(8))
        # The router keeps nothing of a refund its receiver cannot take now, and tells the
        # payee side only "unavailable": "suspended" would name the payer's processor.
        assert len(_rows(scene.db_urls()["router"], "transfers", kind="refund")) == (
            refunds_at_router
        )
        assert answer.status_code == 200, answer.text
        refund = answer.json()["refund"]
        assert refund["state"] in ("sent", "in_doubt"), refund  # on its way: nothing more
        assert refund["error_code"] is None
        at_processor = _call(
            "GET",
            f"{scene.layout.processor_url('mno-b')}/v1/merchant/refunds/{refund['refund_id']}",
            headers={"Authorization": f"Bearer {scene.shops['y'].api_key}"},
        ).json()
        assert at_processor["state"] != "failed" and at_processor["reason_code"] is None
        for shown in (answer.text, json.dumps(at_processor)):
            assert "suspended" not in shown and "bank-a" not in shown, shown
    finally:
        network.router_admin("POST", "/v1/admin/participants/bank-a/resume")

    def completed() -> Any:
        view = _view(y, order["order_id"], SHOP_Y_AUTH)
        return view["refunds"][0]["state"] == "completed" and view

    done = _wait(completed, REFUND_SETTLE_S)
    assert done, _view(y, order["order_id"], SHOP_Y_AUTH)
    assert done["refunded_minor"] == 200 and done["state"] == "partially_refunded"
    assert _wait(
        lambda: balance(network, "bank-a", payer.account_id) == paid_balance + 200, PAID_WAIT_S
    )
    urls = scene.db_urls()
    kept = json.dumps(
        _rows(urls[SHOP_Y_SERVICE], "refunds", order_id=order["order_id"])
        + _rows(urls["mno-b"], "refunds_out", request_id=order["request_id"]),
        default=str,
    )
    assert "suspended" not in kept and "bank-a" not in kept


# --- lower: a malicious merchant server and `semops merchant request --out-dir` -----------


class _Evil(http.server.BaseHTTPRequestHandler):
    """A "merchant backend" whose answer names a file outside the caller's folder."""

    order_id = "../../x"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"order_id": self.order_id, "token": "eyJhbGciOiJFUzI1NiJ9.e30.AA"})
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("order_id", ["../../x", "/tmp/semops-attack-owned"])
def test_a_malicious_server_cannot_make_the_cli_write_outside_its_out_dir(
    order_id: str, tmp_path: Path
) -> None:
    handler = type("Evil", (_Evil,), {"order_id": order_id})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out = tmp_path / "a" / "b" / "qr"
    try:
        result = _semops(
            "merchant", "request", "--amount", "1.00", "--currency", "EUR",
            "--merchant-url", f"http://127.0.0.1:{server.server_address[1]}",
            "--out-dir", str(out),
        )  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], written
    assert not Path("/tmp/semops-attack-owned.png").exists()
    assert not Path("/tmp/semops-attack-owned.svg").exists()


# --- lower: shop sessions end at logout; the sign-in is throttled -------------------------


def test_a_shop_session_ends_at_logout(scene: Scene) -> None:
    y = _y(scene)
    with _signed_in(y) as client:
        cookie = dict(client.cookies)
        assert client.get("/shop/orders").status_code == 200
        assert client.post("/logout", headers=_BROWSER).status_code == 303
    # The cookie, copied before the logout (a shared till, a stolen copy): worth nothing.
    with httpx.Client(base_url=y, cookies=cookie, follow_redirects=False) as copy:
        after = copy.get("/shop/orders")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")
        assert copy.get("/v1/orders").status_code == 401


def test_the_shop_sign_in_is_throttled_per_address(scene: Scene) -> None:
    """Runs last on shop-y (the block holds for the throttle window): restarted after."""
    y = _y(scene)
    try:
        with httpx.Client(base_url=y, timeout=CALL_TIMEOUT_S, follow_redirects=False) as client:
            for attempt in range(5):
                wrong = client.post("/login", data={"token": f"guess-{attempt:02d}"})
                assert wrong.status_code == 401, wrong.text
            blocked = client.post("/login", data={"token": SHOP_Y_TOKEN})
            assert blocked.status_code == 429, blocked.text
            assert "semops_shop_session" not in blocked.headers.get("set-cookie", "")
    finally:
        scene.network.restart(SHOP_Y)  # the throttle is per process: the scene stays usable
