"""How the merchant backend reaches its own processor: the merchant API of
docs/network-api.md, authenticated with the merchant's API key (a 0600 file).

A `ProcessorTransport` answers `(status, content type, body)` or raises `SemopsError`
(`timeout`, `unavailable`) when no answer came; the HTTP one goes through the pooled
aiohttp `Peer`, tests plug in an in-memory processor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from semops.core.errors import E, SemopsError
from semops.core.limits import MESSAGE_MAX_BYTES
from semops.service.http import Peer, error_from_problem

REQUESTS_PATH = "/v1/merchant/requests"
KEYS_PATH = "/v1/merchant/keys"


@dataclass(frozen=True, slots=True)
class ProcessorAnswer:
    status: int
    content_type: str
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The JSON of a 2xx answer; a problem answer raises the error it describes."""
        if not self.ok:
            raise error_from_problem(self.status, self.content_type, self.body)
        if len(self.body) > MESSAGE_MAX_BYTES * 4:
            raise SemopsError(E.TOO_LARGE, "the processor's answer is too large")
        try:
            return json.loads(self.body)
        except ValueError:
            raise SemopsError(E.MALFORMED, "the processor's answer is not JSON") from None


class ProcessorTransport(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ProcessorAnswer: ...

    async def close(self) -> None: ...


class HttpProcessorTransport:
    def __init__(self, base_url: str, peer: Peer | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._peer = peer or Peer()

    async def request(
        self,
        method: str,
        path: str,
        *,
        timeout_s: float,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> ProcessorAnswer:
        status, content_type, body = await self._peer.request(
            method, self.base_url + path, timeout_s=timeout_s, json_body=json_body, headers=headers
        )
        return ProcessorAnswer(status, content_type, body)

    async def close(self) -> None:
        await self._peer.close()


__all__ = [
    "KEYS_PATH",
    "REQUESTS_PATH",
    "HttpProcessorTransport",
    "ProcessorAnswer",
    "ProcessorTransport",
]
