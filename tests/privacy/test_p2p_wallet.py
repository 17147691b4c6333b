"""The wallet asking its own processor to be paid (P2P), against the in-memory processor of
the wallet tests: the call is device-signed over its exact body, and a request that is
not the one asked for -- here, signed by another processor -- is refused, not handed out.
(The whole P2P story over real processes is in the privacy network scenarios.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from semops.core.clock import FixedClock
from semops.core.encoding import sha256_b64url
from semops.core.errors import E, SemopsError
from semops.protocol import DeviceAuth, open_signed
from semops.wallet.client import Answer
from semops.wallet.service import Wallet
from semops.wallet.store import WalletStore
from tests.wallet.scheme import ACTIVATION_CODE, Entropy, FakeProcessor, Scheme, json_answer

NOW = 1_800_000_000
PIN = "4821"
URL = "http://bank-a.test"


class PayMeProcessor(FakeProcessor):
    """Answers POST /v1/wallet/requests with a request signed by the scheme's payee
    processor (mno-b), while the wallet is enrolled at bank-a."""

    def __init__(self, scheme: Scheme, clock: FixedClock) -> None:
        super().__init__(scheme, clock, pin=PIN)
        self.asked: list[tuple[DeviceAuth, Any]] = []

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
        if (method, path) != ("POST", "/v1/wallet/requests"):
            return await super().request(
                method, path, timeout_s=timeout_s, jose=jose, headers=headers
            )
        _, _, token = (headers or {})["Authorization"].partition(" ")
        auth = open_signed(token, DeviceAuth, self._device_ring(), self.clock.now()).message
        self.asked.append((auth, json_body))
        signed, _ = self.scheme.request(
            amount_minor=json_body["amount_minor"], reference=json_body.get("reference")
        )
        return json_answer({"token": signed, "link": "semops:pay?r=" + signed}, status=201)


def test_a_request_to_be_paid_is_device_signed_and_checked_before_it_is_handed_out(
    tmp_path: Path,
) -> None:
    clock = FixedClock(NOW)
    processor = PayMeProcessor(Scheme.build(NOW), clock)
    store = WalletStore.open(tmp_path / "wallet")
    wallet = Wallet(store, lambda url: processor, clock, Entropy())
    try:
        asyncio.run(wallet.enroll(URL, ACTIVATION_CODE, "Mia's phone", PIN))
        with pytest.raises(SemopsError) as refused:
            asyncio.run(wallet.request_payment(1730, "EUR", "P2P-DINNER"))
    finally:
        store.close()
    assert refused.value.spec is E.ORDER_MISMATCH  # signed by mno-b, not by our bank-a
    (auth, body), *_ = processor.asked
    asked = dict(body)
    assert asked.pop("idempotency_key").startswith("ms_")  # a retry gets the same request
    assert asked == {"amount_minor": 1730, "currency": "EUR", "reference": "P2P-DINNER"}
    assert (auth.method, auth.path) == ("POST", "/v1/wallet/requests")
    assert auth.body_digest == sha256_b64url(json.dumps(body).encode())


def test_a_request_to_be_paid_needs_a_valid_amount_before_any_call(tmp_path: Path) -> None:
    clock = FixedClock(NOW)
    processor = PayMeProcessor(Scheme.build(NOW), clock)
    store = WalletStore.open(tmp_path / "wallet")
    wallet = Wallet(store, lambda url: processor, clock, Entropy())
    try:
        asyncio.run(wallet.enroll(URL, ACTIVATION_CODE, "Mia's phone", PIN))
        with pytest.raises(SemopsError):
            asyncio.run(wallet.request_payment(0, "EUR"))
    finally:
        store.close()
    assert processor.asked == []
