"""M4: webhook delivery followed a merchant's redirect into the processor's own network.

A merchant chooses its webhook URL, so the processor must call exactly that URL and nothing
it points to: a 302 to an internal address is not followed (and is not "delivered": the
notice is retried like any failure), and a URL with a query, a user name, or plain http to
anything but loopback in development is refused when the merchant is created, storing
nothing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import pytest
from sqlalchemy import text

from semops.devnet.actors import create_merchant, request_payment
from semops.devnet.network import ServiceError
from semops.protocol import OrderState
from semops.store.db import Database
from tests.attack.attacker import pay
from tests.attack.conftest import Scene

pytestmark = pytest.mark.timeout(300)

ATTEMPTS_WAIT_S: Final = 30.0


@dataclass
class Hook:
    """A loopback HTTP server that records calls and answers a redirect (or 200)."""

    redirect_to: str | None = None
    calls: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def hooks() -> Iterator[tuple[Hook, Hook]]:
    """(the merchant's webhook, an "internal" service it redirects to)."""
    made = (Hook(), Hook())
    for hook in made:

        class Handler(BaseHTTPRequestHandler):
            recorder = hook

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                self.recorder.calls.append(self.path)
                if self.recorder.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", self.recorder.redirect_to)
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        hook.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=hook.server.serve_forever, daemon=True).start()
    try:
        yield made
    finally:
        for hook in made:
            assert hook.server is not None
            hook.server.shutdown()
            hook.server.server_close()


def _outbox_row(scene: Scene, request_id: str) -> dict[str, Any] | None:
    async def read() -> dict[str, Any] | None:
        database = Database(scene.db_urls()["mno-b"])
        try:
            async with database.read() as connection:
                row = (
                    await connection.execute(
                        text("SELECT * FROM outbox WHERE request_id = :rid"), {"rid": request_id}
                    )
                ).first()
                return dict(row._mapping) if row is not None else None
        finally:
            await database.dispose()

    return asyncio.run(read())


def test_a_webhook_redirect_is_not_followed_and_not_delivered(
    scene: Scene, hooks: tuple[Hook, Hook]
) -> None:
    webhook, internal = hooks
    webhook.redirect_to = internal.url + "/admin/internal-only"
    shop = create_merchant(
        scene.network, "mno-b", f"redirect-{scene.backend[:2]}", "Redirect Shop", webhook.url
    )
    created = request_payment(scene.network, shop, 1700)
    outcome = pay(scene.people["alice"], created["token"])
    assert outcome.state is OrderState.COMPLETED

    deadline = time.monotonic() + ATTEMPTS_WAIT_S
    while len(webhook.calls) < 2 and not internal.calls and time.monotonic() < deadline:
        time.sleep(0.2)
    assert internal.calls == [], "the processor followed the merchant's redirect"
    row = _outbox_row(scene, created["request_id"])
    assert row is not None and row["delivered_at"] is None, "a 302 counted as delivered"
    assert len(webhook.calls) >= 2, "the notice was not retried after the 302"
    assert row["attempts"] >= 1

    # The merchant repairs its webhook: the same notice is then delivered (and the outbox
    # is empty again for the tests that follow).
    webhook.redirect_to = None
    deadline = time.monotonic() + ATTEMPTS_WAIT_S
    while time.monotonic() < deadline:
        row = _outbox_row(scene, created["request_id"])
        if row is not None and row["delivered_at"] is not None:
            break
        time.sleep(0.3)
    assert row is not None and row["delivered_at"] is not None
    assert internal.calls == []


@pytest.mark.parametrize(
    ("number", "url"),
    [
        (1, "http://127.0.0.1:9/notices?x="),  # a query swallowing the path
        (2, "https://shop.example/notices#x"),  # a fragment
        (3, "http://10.0.0.1/notices"),  # plain http to another host, even in development
        (4, "http://shop.example/notices"),  # plain http to a name
        (5, "https://user@shop.example/notices"),  # a user name
        (6, "https://shop.example:0/notices"),  # no real port
    ],
)
def test_a_webhook_url_that_is_not_allowed_is_refused_at_creation(
    scene: Scene, number: int, url: str
) -> None:
    before = scene.quiet()
    merchant_id = f"hook-{number}"
    with pytest.raises(ServiceError) as refused:
        create_merchant(scene.network, "mno-b", merchant_id, "Hook Shop", url)
    assert refused.value.status == 422
    assert refused.value.code == "url_not_allowed", refused.value.problem
    scene.assert_unchanged(before)
