"""The checkout page and the QR images: amount, QR and link shown, everything escaped,
nothing loaded from elsewhere, and nothing about the payer anywhere."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import zxingcpp
from PIL import Image

from semops.merchant.checkout import render_checkout, status_text

from .fakes import SchemePki, seed
from .test_service import ORDER, Shop, scenario

PAYER_DATA = ("bank-a", "alice", "payer", "ACC-", "+4917")


def _nonce(csp: str) -> str:
    match = re.search(r"'nonce-([A-Za-z0-9_-]+)'", csp)
    assert match is not None
    return match.group(1)


def test_the_checkout_page_shows_amount_qr_and_link(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.client.get(f"/checkout/{view['order_id']}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        page = response.text
        assert "12.50 EUR" in page
        assert "INV-1" in page
        assert "<svg" in page and "</svg>" in page
        assert view["link"] in page
        assert "Corner Shop" in page
        assert status_text("open") in page
        assert f"/v1/orders/{view['order_id']}" in page  # the status poll

    scenario(tmp_path, body)


def test_the_page_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.client.get(f"/checkout/{view['order_id']}")
        page, csp = response.text, response.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert f'<script nonce="{_nonce(csp)}">' in page
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        assert "@import" not in page and "url(" not in page
        assert response.headers["cache-control"] == "no-store"
        # A new nonce per response.
        again = await shop.client.get(f"/checkout/{view['order_id']}")
        assert _nonce(again.headers["content-security-policy"]) != _nonce(csp)

    scenario(tmp_path, body)


def test_a_paid_order_shows_paid_and_nothing_about_the_payer(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        await shop.notify(shop.processor.notice(view["request_id"]))
        page = (await shop.client.get(f"/checkout/{view['order_id']}")).text
        assert 'data-state="paid"' in page and status_text("paid") in page
        order = (await shop.client.get(f"/v1/orders/{view['order_id']}")).text
        for datum in PAYER_DATA:
            assert datum not in page.lower().replace("pay with", "")
            assert datum not in order.lower()

    scenario(tmp_path, body)


def test_text_on_the_page_is_escaped(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order(dict(ORDER, reference='<b>"x"</b>&'))
        page = (await shop.client.get(f"/checkout/{view['order_id']}")).text
        assert "<b>" not in page
        assert "&lt;b&gt;&quot;x&quot;&lt;/b&gt;&amp;" in page

    scenario(tmp_path, body)


def test_render_without_a_request_yet() -> None:
    order: dict[str, Any] = {
        "order_id": "mo_" + "A" * 22,
        "amount": "1.00",
        "currency": "EUR",
        "reference": None,
        "link": None,
        "state": "creating",
    }
    page = render_checkout(order, "Shop <1>", "nonce123")
    assert "<svg" not in page
    assert "Shop &lt;1&gt;" in page
    assert status_text("creating") in page
    assert status_text("unknown-state") == "unknown-state"


def test_the_png_qr_decodes_to_the_link(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.client.get(view["qr_png"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        image = Image.open(io.BytesIO(response.content))
        texts = [result.text for result in zxingcpp.read_barcodes(image)]
        assert texts == [view["link"]]

    scenario(tmp_path, body)


def test_the_svg_qr_is_an_svg_document(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        view = await shop.order()
        response = await shop.client.get(view["qr_svg"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("image/svg+xml")
        root = ElementTree.fromstring(response.content)
        assert root.tag.endswith("svg")
        assert b"<script" not in response.content

    scenario(tmp_path, body)


def test_no_qr_before_the_request_exists(tmp_path: Path) -> None:
    async def body(shop: Shop) -> None:
        shop.processor.unavailable = True
        order_id = (await shop.client.post("/v1/orders", json=ORDER)).json()["order_id"]
        for kind in ("svg", "png"):
            response = await shop.client.get(f"/v1/orders/{order_id}/qr.{kind}")
            assert response.status_code == 404

    scenario(tmp_path, body)


def test_a_rotated_processor_key_is_fetched_again(tmp_path: Path) -> None:
    from semops.crypto import KeyUse, derive_key

    async def body(shop: Shop) -> None:
        first = await shop.order()
        assert (await shop.notify(shop.processor.notice(first["request_id"]))).status_code == 200
        new_key = derive_key("mno-b", KeyUse.SIGN, seed("rotated"))
        # The processor's new key comes with its new certificate from the same scheme root.
        shop.processor.keys_document = SchemePki(shop.clock.now(), new_key).keys_document()
        second = await shop.order(dict(ORDER, reference="INV-2"))
        shop.clock.advance(60)
        response = await shop.notify(shop.processor.notice(second["request_id"], key=new_key))
        assert response.status_code == 200, response.text
        assert (await shop.get(second["order_id"]))["state"] == "paid"

    scenario(tmp_path, body)
