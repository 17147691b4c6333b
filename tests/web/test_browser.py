"""The browser the page tests rely on is real: a secure context with WebCrypto."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.web.browser import screenshot_path
from tests.web.conftest import Shot

PAGE = """<!doctype html><title>probe</title><h1>probe</h1><script>
crypto.subtle.generateKey({name: "ECDSA", namedCurve: "P-256"}, false, ["sign"])
  .then(k => { document.body.dataset.extractable = String(k.privateKey.extractable); });
</script>"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "index.html").write_text(PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()


def test_chromium_runs_pages_with_non_extractable_webcrypto_keys(
    page: Page, phone_page: Page, shot: Shot, site: str
) -> None:
    for each in (page, phone_page):
        each.goto(site)
        each.wait_for_selector("body[data-extractable]")
        assert each.get_attribute("body", "data-extractable") == "false"
    assert phone_page.viewport_size == {"width": 390, "height": 844}
    shot(phone_page, "browser-probe")
    assert screenshot_path("browser-probe").stat().st_size > 0
