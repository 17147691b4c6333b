"""A fault-injecting HTTP(S) proxy for one directed link between two SEMOPS parties.

The chaos harness puts one `LinkProxy` on every link it wants to disturb (a processor to the
router, the router to a processor's scheme port, a wallet to its processor) and points the
sender at the proxy instead of the receiver. Each message that passes may be:

- dropped before it reaches the receiver (the sender sees a broken connection),
- dropped after the receiver handled it (the receiver acted, the sender never hears),
- duplicated (the receiver gets it twice; the sender sees one answer),
- delayed (held for a random time, so concurrent messages overtake each other),
- reordered (held until the next message on the link has gone through).

A scheme link is mutual TLS end to end: the proxy presents the receiver's certificate to
the sender, demands a client certificate from the scheme root, and calls the receiver with
the sender's own certificate, so every party still sees the identity it expects. The proxy
never reads or changes a message's content: signatures and encryption are untouched.

Faults are drawn from a seeded generator and taken from a shared budget, so a run injects
an exact number of faults and the same seed makes the same choices for the same traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import aiohttp
from aiohttp import web

from semops.core.limits import MESSAGE_MAX_BYTES
from semops.service.tls import TlsFiles, client_context

# Headers that describe one hop, not the message: never forwarded.
HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)
# How long a proxy waits for the receiver: longer than any caller's own timeout.
FORWARD_TIMEOUT_S: Final = 60.0
# A reordered message waits at most this long for a later one to overtake it.
REORDER_WAIT_MAX_S: Final = 2.0
BODY_MAX_BYTES: Final = MESSAGE_MAX_BYTES * 64

# aiohttp complains when a handler answers on a connection it cut on purpose.
logging.getLogger("aiohttp.server").disabled = True


class Fault(StrEnum):
    DROP_REQUEST = "drop_request"
    DROP_RESPONSE = "drop_response"
    DUPLICATE = "duplicate"
    DELAY = "delay"
    REORDER = "reorder"


@dataclass
class FaultBudget:
    """How many faults may still be injected, shared by every proxy of a run."""

    remaining: int
    rate: float
    delay_max_s: float
    seed: int
    kinds: tuple[Fault, ...] = tuple(Fault)
    injected: Counter[str] = field(default_factory=Counter)
    random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.remaining < 0 or not 0.0 <= self.rate <= 1.0 or self.delay_max_s < 0:
            raise ValueError("faults must be >= 0, the rate in [0, 1], the delay >= 0")
        self.random = random.Random(self.seed)  # noqa: S311 - fault choice, not security

    def draw(self, link: str) -> Fault | None:
        """The fault for the next message on `link`, or None to pass it untouched."""
        if self.remaining <= 0 or self.random.random() >= self.rate:
            return None
        fault = self.random.choice(self.kinds)
        self.remaining -= 1
        self.injected[fault.value] += 1
        self.injected[f"{link}:{fault.value}"] += 1
        return fault

    def delay(self) -> float:
        return self.random.uniform(0.0, self.delay_max_s)

    def stop(self) -> None:
        """No more faults: the network heals."""
        self.remaining = 0

    @property
    def total(self) -> int:
        return sum(count for key, count in self.injected.items() if ":" not in key)


class LinkProxy:
    """Listen on 127.0.0.1:`port`, forward to `target_url`, inject faults on the way."""

    def __init__(
        self,
        name: str,
        port: int,
        target_url: str,
        budget: FaultBudget,
        *,
        serve_as: TlsFiles | None = None,
        call_as: TlsFiles | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.target_url = target_url.rstrip("/")
        self.budget = budget
        self._serve_as = serve_as
        self._call_as = call_as
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._overtaken = asyncio.Event()
        self.forwarded = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._serve_as is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            ssl=client_context(self._call_as) if self._call_as is not None else True,
            limit=256,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=BODY_MAX_BYTES)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._server_context())
        await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _server_context(self) -> ssl.SSLContext | None:
        if self._serve_as is None:
            return None
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=str(self._serve_as.root_ca)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(str(self._serve_as.certificate), str(self._serve_as.private_key))
        return context

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self.budget.draw(self.name)
        if fault is Fault.DROP_REQUEST:
            return _broken(request)
        if fault is Fault.DELAY:
            await asyncio.sleep(self.budget.delay())
        if fault is Fault.REORDER:
            self._overtaken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._overtaken.wait(), REORDER_WAIT_MAX_S)
        else:
            self._overtaken.set()
        try:
            if fault is Fault.DUPLICATE:
                first, second = await asyncio.gather(
                    self._forward(request, body), self._forward(request, body)
                )
                answer = second if self.budget.random.random() < 0.5 else first
            else:
                answer = await self._forward(request, body)
        except (aiohttp.ClientError, OSError, TimeoutError):
            return _broken(request)  # the receiver is down or did not answer: so is the link
        if fault is Fault.DROP_RESPONSE:
            return _broken(request)
        status, headers, content = answer
        return web.Response(status=status, headers=headers, body=content)

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in HOP_HEADERS
        }
        async with self._session.request(
            request.method,
            self.target_url + request.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,  # a proxy passes a 3xx on, it does not act on it
        ) as response:
            content = await response.content.read(BODY_MAX_BYTES)
            self.forwarded += 1
            kept = {
                name: value
                for name, value in response.headers.items()
                if name.lower() not in HOP_HEADERS
            }
            return response.status, kept, content


def _broken(request: web.Request) -> web.StreamResponse:
    """Cut the connection without an answer: what a lost packet looks like to the sender."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=502)
