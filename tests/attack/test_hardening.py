"""The lower findings, each over real processes: duplicate JSON keys, security headers,
the QR upload's formats, file permissions, and X-Forwarded-For at the back-office login.

- A JSON body with a key twice ("last wins" in one parser, "first wins" in another) is
  refused with 400 by every API of every service, before any route reads it.
- Every answer of every service carries nosniff, no-referrer, a Content-Security-Policy
  and (unless a route caches on purpose) Cache-Control: no-store.
- The web wallet's QR upload reads PNG and JPEG only, told apart by their bytes.
- Logs and service folders under the data directory are 0600/0700.
- X-Forwarded-For moves the back-office login throttle only when the processor was told
  to trust the proxy that sends it (--trusted-proxy).
"""

from __future__ import annotations

import io
import json
import re
import secrets
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
import segno
from PIL import Image

from semops.core.encoding import b64url_decode, b64url_encode
from semops.devnet.actors import request_payment
from semops.devnet.network import Network, new_layout
from semops.devnet.processes import ServiceProcess
from semops.protocol import OrderState
from semops.wallet.core import device_auth_header
from semops.wallet.store import WalletStore
from tests.attack.attacker import forge_order, pay, to_wallet_port
from tests.attack.conftest import PIN, SHOP_Y, SHOP_Y_AUTH, Scene

pytestmark = pytest.mark.timeout(300)

CALL_TIMEOUT_S: Final = 15


def _call(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                (response.read()),
            )
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _json(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, Any]:
    status, _, body = status_headers_body
    return status, json.loads(body or b"null")


# --- duplicate JSON keys --------------------------------------------------------------------


def test_duplicate_json_keys_are_refused_by_every_api_and_change_nothing(scene: Scene) -> None:
    network, ports = scene.network, scene.layout.ports
    cafe = scene.shops["cafe"]
    json_type = {"Content-Type": "application/json"}
    merchant = {**json_type, "Authorization": f"Bearer {cafe.api_key}"}
    bank_operator = {**json_type, "Authorization": f"Bearer {network.operator_token('bank-a')}"}
    router_operator = {**json_type, "Authorization": f"Bearer {network.operator_token('router')}"}
    attempts = [
        # The processor's merchant API: the amount a check sees is not the amount used.
        (
            network.layout.processor_url("mno-b") + "/v1/merchant/requests",
            "POST",
            b'{"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_duplicate-01",'
            b' "amount_minor": 99999}',
            merchant,
        ),
        # The processor's back office API.
        (
            network.layout.processor_url("bank-a") + "/v1/admin/customers",
            "POST",
            b'{"name": "Dup Licate", "name": "Other Name", "phone": "+4915100009999",'
            b' "currency": "EUR"}',
            bank_operator,
        ),
        # The router's operator API.
        (
            f"http://127.0.0.1:{ports['router-operator']}/v1/admin/participants/bank-a/cap",
            "PUT",
            b'{"net_debit_cap_minor": 100, "net_debit_cap_minor": 1}',
            router_operator,
        ),
        # The merchant backend's order API.
        (
            f"http://127.0.0.1:{ports[SHOP_Y]}/v1/orders",
            "POST",
            b'{"amount": "1.00", "currency": "EUR", "amount": "900.00"}',
            {**json_type, **SHOP_Y_AUTH},
        ),
        # The wallet API (the body is read before the device signature is even looked at).
        (
            network.layout.processor_url("bank-a") + "/v1/wallet/requests",
            "POST",
            b'{"amount_minor": 100, "currency": "EUR", "amount_minor": 5}',
            json_type,
        ),
    ]
    before = scene.quiet()
    for url, method, body, headers in attempts:
        status, problem = _json(_call(url, method, body, headers))
        assert (status, problem.get("code")) == (400, "malformed"), (url, problem)
        assert problem["detail"] == "duplicate key in JSON object", (url, problem)
    scene.assert_unchanged(before)


# --- security headers -------------------------------------------------------------------------


def _assert_security_headers(what: str, headers: dict[str, str]) -> None:
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("referrer-policy") == "no-referrer", what
    policy = headers.get("content-security-policy", "")
    assert "default-src 'none'" in policy, (what, policy)
    assert "frame-ancestors 'none'" in policy, (what, policy)


def test_every_answer_of_every_service_carries_the_security_headers(scene: Scene) -> None:
    network, ports = scene.network, scene.layout.ports
    shop = f"http://127.0.0.1:{ports[SHOP_Y]}"
    status, order = _json(
        _call(
            shop + "/v1/orders",
            "POST",
            b'{"amount": "3.00", "currency": "EUR"}',
            {"Content-Type": "application/json", **SHOP_Y_AUTH},
        )
    )
    assert status == 201, order
    # Paid at once: an open order is polled by its backend, which would show as a change in
    # the "nothing changed" checks of the tests that follow.
    assert pay(scene.people["alice"], order["token"]).state is OrderState.COMPLETED
    scene.quiet()
    public = {pid: network.layout.processor_url(pid) for pid in ("bank-a", "mno-b")}
    targets = [
        *(url + "/healthz" for url in public.values()),
        public["bank-a"] + "/v1/wallet/config",
        public["bank-a"] + "/v1/wallet/balance",  # refused: a problem answer
        public["bank-a"] + "/v1/wallet/history",
        public["bank-a"] + "/no/such/page",
        public["bank-a"] + "/openapi.json",
        *(
            f"http://127.0.0.1:{ports[name]}/healthz"
            for name in ("bank-a-operator", "router-operator")
            if name in ports
        ),
        shop + "/healthz",
        shop + f"/v1/orders/{order['order_id']}",
        shop + f"/v1/orders/{order['order_id']}/qr.svg",
        shop + f"/v1/orders/{order['order_id']}/qr.png",
        shop + "/static/checkout.js",
    ]
    for url in targets:
        _, headers, _ = _call(url)
        _assert_security_headers(url, headers)
    for path in ("/v1/wallet/balance", "/v1/wallet/history", "/v1/wallet/config"):
        _, headers, _ = _call(public["bank-a"] + path)
        assert headers.get("cache-control") == "no-store", path
    # Pages keep their own, stricter policy (scripts and styles from their own origin).
    _, headers, _ = _call(public["bank-a"] + "/wallet/")
    assert "script-src" in headers.get("content-security-policy", "")


# --- the QR upload ---------------------------------------------------------------------------


def _qr_image(text: str, image_format: str) -> bytes:
    png = io.BytesIO()
    segno.make(text, error="m").save(png, kind="png", scale=6, border=4)
    if image_format == "PNG":
        return png.getvalue()
    converted = io.BytesIO()
    with Image.open(io.BytesIO(png.getvalue())) as image:
        image.convert("L" if image_format == "JPEG" else "P").save(converted, format=image_format)
    return converted.getvalue()


def _upload(scene: Scene, data: bytes, content_type: str) -> tuple[int, Any]:
    alice = scene.people["alice"]
    store = WalletStore.open(alice.wallet_dir)
    try:
        header = device_auth_header(
            store.device_key(),
            account_id=alice.account_id,
            method="POST",
            path="/v1/wallet/qr",
            now=int(time.time()),
            auth_entropy=secrets.token_bytes(16),
            body=data,
        )
    finally:
        store.close()
    url = scene.network.layout.processor_url("bank-a") + "/v1/wallet/qr"
    headers = {"Authorization": header, "Content-Type": content_type}
    return _json(_call(url, "POST", data, headers))


def test_the_qr_upload_reads_png_and_jpeg_only_by_their_bytes(scene: Scene) -> None:
    link = "semops:pay?r=aaaa.bbbb.cccc"
    for image_format in ("PNG", "JPEG"):
        status, answer = _upload(scene, _qr_image(link, image_format), "image/png")
        assert (status, answer.get("text")) == (200, link), (image_format, answer)
    for image_format in ("GIF", "WEBP"):  # small enough for the upload bound
        picture = _qr_image(link, image_format)
        status, answer = _upload(scene, picture, "image/png")  # the declared type is a lie
        assert (status, answer.get("code")) == (400, "token_invalid"), (image_format, answer)
        assert answer["detail"] == "only PNG and JPEG images are read"
    postscript = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    status, answer = _upload(scene, postscript, "image/png")
    assert (status, answer.get("code")) == (400, "token_invalid"), answer


# --- files and folders -----------------------------------------------------------------------


def test_logs_and_service_folders_are_private(scene: Scene) -> None:
    for service in ("router", "bank-a", "mno-b"):
        logs = scene.data_dir / service / "logs"
        assert stat.S_IMODE(logs.stat().st_mode) == 0o700, logs
        files = list(logs.glob("*.log"))
        assert files, logs
        for log_file in files:
            assert stat.S_IMODE(log_file.stat().st_mode) == 0o600, log_file
    assert stat.S_IMODE((scene.data_dir / "network.json").stat().st_mode) == 0o600


# --- X-Forwarded-For at the back-office login --------------------------------------------------

_LOGIN_CSRF: Final = re.compile(r'name="login_csrf" value="([^"]+)"')
LOGIN_FAILURES_MAX: Final = 5


class ProxiedBankNetwork(Network):
    """bank-a behind a (pretended) proxy on 127.0.0.1 that it trusts; mno-b trusts none."""

    def processor_process(self, processor_id: str, kind: str, name: str) -> ServiceProcess:
        process = super().processor_process(processor_id, kind, name)
        if processor_id == "bank-a":
            process.args = [*process.args, "--trusted-proxy", "127.0.0.1"]
        return process


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """A network of its own: these tests lock 127.0.0.1 out of a back office for 15 min."""
    layout = new_layout(tmp_path_factory.mktemp("forwarded"), fixed_ports=False, db_urls=None)
    network = ProxiedBankNetwork(layout)
    try:
        network.start()
        yield network
    finally:
        network.stop()


def _failed_login(base_url: str, forwarded_for: str | None) -> int:
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    with httpx.Client(base_url=base_url, timeout=CALL_TIMEOUT_S, headers=headers) as browser:
        form = browser.get("/backoffice/login")
        (login_csrf,) = _LOGIN_CSRF.findall(form.text)
        answer = browser.post(
            "/backoffice/login", data={"login_csrf": login_csrf, "token": "not-the-token"}
        )
        return answer.status_code


def test_a_forged_x_forwarded_for_does_not_move_the_login_throttle(proxied: Network) -> None:
    base = proxied.layout.processor_url("mno-b")
    # Each failure claims another client address: without a trusted proxy they all count
    # against the real peer, so the sixth try is throttled, not a fresh start (bypass).
    statuses = [_failed_login(base, f"203.0.113.{n}") for n in range(LOGIN_FAILURES_MAX)]
    assert statuses == [401] * LOGIN_FAILURES_MAX
    assert _failed_login(base, "203.0.113.200") == 429
    assert _failed_login(base, None) == 429


def test_a_trusted_proxy_s_x_forwarded_for_names_the_client(proxied: Network) -> None:
    base = proxied.layout.processor_url("bank-a")
    # The operator sits behind the proxy at 198.51.100.7; an attacker locks out only itself.
    attacker = [_failed_login(base, "203.0.113.9") for _ in range(LOGIN_FAILURES_MAX)]
    assert attacker == [401] * LOGIN_FAILURES_MAX
    assert _failed_login(base, "203.0.113.9") == 429
    assert _failed_login(base, "198.51.100.7") == 401  # still allowed to try


def test_demo_json_is_private(tmp_path: Path) -> None:
    from semops.devnet.demo import Population

    Population({}, {}).save(tmp_path)
    assert stat.S_IMODE((tmp_path / "demo.json").stat().st_mode) == 0o600


# --- signatures ---------------------------------------------------------------------------------

# The order n of P-256's base point: (r, s) and (r, n - s) both verify under ECDSA.
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _high_s(token: str) -> str:
    """The same JWS with its signature's other form (r, n - s), whichever the signer made."""
    header, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    high = s if s > _P256_ORDER // 2 else _P256_ORDER - s
    return f"{header}.{payload}.{b64url_encode(raw[:32] + high.to_bytes(32, 'big'))}"


def test_a_high_s_signature_of_a_valid_order_is_refused(scene: Scene) -> None:
    """Lower finding: a high-S signature was accepted, so one signed message had two valid
    token forms (a malleable signature). Signers make low-S; verifiers refuse a high s."""
    network = scene.network
    victim = scene.customer("bank-a")
    created = request_payment(network, scene.shops["books"], 130)
    order = forge_order(network, victim, created["token"], pin=PIN, entropy=secrets.token_bytes(16))
    before = scene.quiet()
    answer = to_wallet_port(network, "bank-a", _high_s(order.token))
    assert (answer.status, answer.code) == (401, "signature_invalid"), answer.body
    scene.assert_unchanged(before)
    paid = to_wallet_port(network, "bank-a", order.token)  # the low-S original pays
    assert paid.status == 200, paid.body
