"""How the wallet reaches its processor: one small transport interface and its HTTP form.

The wallet's operations (`semops.wallet.service`) speak to a `Transport`, which answers
`(status, content type, body)` and raises `SemopsError` (`timeout`, `unavailable`) when no
answer came. The real one is HTTP through the pooled aiohttp `Peer`; tests plug in an
in-memory processor with the same interface.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from semops.core.errors import E, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES, URL_MAX_CHARS
from semops.service.http import Peer, error_from_problem

# Processor answers to the wallet are small JSON documents or JOSE tokens; the directory
# inside the configuration is the largest (DIRECTORY_MAX_BYTES bounds it on the signer's
# side), so reads of the configuration allow more.
ANSWER_MAX_BYTES = MESSAGE_MAX_BYTES * 64


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The JSON body of a 2xx answer; a problem answer raises its SemopsError."""
        if not 200 <= self.status < 300:
            raise error_from_problem(self.status, self.content_type, self.body)
        if len(self.body) > ANSWER_MAX_BYTES:
            raise SemopsError(E.TOO_LARGE, "the processor's answer is too large")
        try:
            return json.loads(self.body)
        except ValueError:
            raise SemopsError(E.MALFORMED, "the processor's answer is not JSON") from None


class Transport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Answer: ...

    async def close(self) -> None: ...


def check_processor_url(url: str) -> str:
    """An http(s) base URL without a trailing slash, query or fragment."""
    base = url.strip().rstrip("/")
    if (
        len(base) > URL_MAX_CHARS
        or not base.startswith(("http://", "https://"))
        or any(mark in base for mark in ("?", "#", " "))
    ):
        raise SemopsError(E.VALIDATION_FAILED, "the processor URL must be http(s)://host[:port]")
    return base


class HttpTransport:
    """The processor's public port over HTTP(S)."""

    def __init__(self, base_url: str, peer: Peer | None = None) -> None:
        self.base_url = check_processor_url(base_url)
        self._peer = peer or Peer()

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        jose: str | None = None,
        headers: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Answer:
        status, content_type, body = await self._peer.request(
            method,
            self.base_url + path,
            timeout_s=timeout_s,
            jose=jose,
            json_body=json_body,
            headers=headers,
        )
        return Answer(status, content_type, body)

    async def close(self) -> None:
        await self._peer.close()


__all__ = ["Answer", "HttpTransport", "Transport", "check_processor_url"]
