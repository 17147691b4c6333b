"""The background work (in-doubt resolution, webhooks, directory) running on its own, and
the HTTP surface's generic promises (bounded bodies, OpenAPI, refusals of junk)."""

from __future__ import annotations

import asyncio
import json

import pytest

from semops.processor import build_processor
from semops.processor.settings import ProcessorSettings
from semops.service.app import JOSE
from semops.service.http import Peer
from tests.processor.network import (
    ROUTER_URL,
    Network,
    account_balance,
    enrolled_wallet,
    merchant,
    rows,
)

pytestmark = pytest.mark.anyio


async def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await condition():  # type: ignore[operator]
            return
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_background_work_resolves_orders_and_delivers_notices(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(400)
    # The router decides, but its answer to bank-a is lost and its outbox is stuck: both
    # sides only learn the outcome by asking.
    network.router.mode = "lost_reply"
    network.router.push_status = False
    order_id = (await wallet.pay(request["token"])).json()["order_id"]
    network.router.mode = "normal"
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(bank.processor.run_background(stop)),
        asyncio.create_task(mno.processor.run_background(stop)),
    ]
    try:

        async def completed() -> bool:
            answer = await wallet.get(f"/v1/wallet/orders/{order_id}")
            return bool(answer.json()["state"] == "completed")

        await wait_for(completed)
        # The payee side hears it the same way (the transfer is past its expiry).
        network.clock.advance(60)

        async def paid() -> bool:
            return bool((await shop.status(request["request_id"]))["state"] == "paid")

        await wait_for(paid)

        async def delivered() -> bool:
            return len(network.webhooks.received) == 1

        await wait_for(delivered)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert await wallet.balance() == 9600


async def test_build_processor_migrates_and_loads_keys(network: Network) -> None:
    data_dir = network.issue("bank-q")
    settings = ProcessorSettings(
        processor_id="bank-q",
        kind="mno",
        display_name="Q Mobile",
        data_dir=data_dir,
        router_url=ROUTER_URL,
    )
    peer = Peer()
    processor = await build_processor(settings, network.clock, peer, peer)
    try:
        assert (data_dir / "bank-q.db").exists()
        assert processor.context.keys.sign_key.owner == "bank-q"
        async with processor.context.database.read() as connection:
            from sqlalchemy import text

            names = (await connection.execute(text("SELECT account_id FROM accounts"))).scalars()
            assert sorted(names) == ["funding:EUR", "settlement:EUR", "suspense:EUR"]
        with pytest.raises(Exception, match="not registered"):
            processor.health()
    finally:
        await peer.close()
        await processor.context.database.dispose()


async def test_bodies_are_bounded_and_junk_is_refused(network: Network) -> None:
    bank = await network.add("bank-a")
    huge = "a" * (17 * 1024)
    response = await bank.public.post(
        "/v1/wallet/orders", content=huge, headers={"Content-Type": JOSE}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    for junk in ("not a token", "a.b.c", "\u00e9t\u00e9"):
        response = await bank.public.post(
            "/v1/wallet/orders", content=junk.encode(), headers={"Content-Type": JOSE}
        )
        assert response.status_code in (400, 401), junk
        assert response.headers["content-type"] == "application/problem+json"
    scheme = await bank.scheme.post("/v1/scheme/status", content=b"x.y.z")
    assert scheme.status_code == 401
    assert await rows(bank, "orders") == []


async def test_apps_publish_openapi_and_metrics_only_on_the_operator_port(network: Network) -> None:
    bank = await network.add("bank-a")
    public = (await bank.public.get("/openapi.json")).json()
    for path in ("/v1/wallet/orders", "/v1/merchant/requests", "/v1/admin/customers"):
        assert path in public["paths"]
    scheme = (await bank.scheme.get("/openapi.json")).json()
    assert set(scheme["paths"]) >= {
        "/v1/scheme/transfers",
        "/v1/scheme/status",
        "/v1/scheme/refunds",
    }
    assert "/v1/wallet/orders" not in scheme["paths"]
    assert (await bank.scheme.get("/metrics")).status_code == 404
    assert (await bank.public.get("/metrics")).status_code == 404
    metrics = await bank.metrics()
    assert "semops_processor_outbox_pending" in metrics


async def test_a_suspended_payee_processor_is_refused_before_any_money_moves(
    network: Network,
) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    request = await shop.request(100)
    entry = network.router.entries["mno-b"]
    network.router.entries["mno-b"] = entry.model_copy(update={"status": "suspended"})
    await network.refresh_all()
    response = await wallet.pay(request["token"])
    assert response.status_code == 403
    assert response.json()["code"] == "processor_suspended"
    assert await wallet.balance() == 10_000
    assert await rows(bank, "orders") == []
    assert network.router.records == {}


async def test_a_revoked_device_cannot_pay(network: Network) -> None:
    bank = await network.add("bank-a")
    wallet = await enrolled_wallet(bank)
    shop = await merchant(bank)
    request = await shop.request(100)
    (device,) = await rows(bank, "devices")
    await bank.admin("POST", f"/v1/admin/devices/{device['kid']}/revoke")
    response = await wallet.pay(request["token"])
    assert response.status_code == 403
    assert response.json()["code"] == "device_revoked"
    assert await account_balance(bank, wallet.account_id) == 10_000


async def test_a_person_at_another_processor_can_be_paid(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    payer = await enrolled_wallet(bank, deposit_minor=1000)
    payee = await enrolled_wallet(mno, deposit_minor=None, name="Bob Example")
    body = json.dumps({"amount_minor": 330, "currency": "EUR"}).encode()
    path = "/v1/wallet/requests"
    created = await mno.public.post(path, content=body, headers=payee.auth("POST", path, body))
    assert created.status_code == 201
    assert (await payer.pay(created.json()["token"])).status_code == 200
    assert await payee.balance() == 330
    assert await payer.balance() == 670
    history = (await payee.get("/v1/wallet/history")).json()["entries"]
    assert (history[0]["kind"], history[0]["amount_minor"]) == ("payment_received", 330)


async def test_unknown_merchant_resources_are_not_found(network: Network) -> None:
    bank = await network.add("bank-a")
    shop = await merchant(bank)
    for path in ("/v1/merchant/requests/rq_unknown-0001", "/v1/merchant/refunds/rf_unknown-0001"):
        response = await bank.public.get(path, headers=shop.headers)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    unlock = await bank.admin("POST", "/v1/admin/credentials/ac_unknown/unlock")
    assert unlock.status_code == 404
    revoke = await bank.admin("POST", "/v1/admin/devices/device:unknown/revoke")
    assert revoke.status_code == 404
