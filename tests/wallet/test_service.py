"""The wallet's operations against an in-memory payer processor (real crypto throughout):
enrolment, paying, lost replies, pending orders, refusals, receipts that prove nothing."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from semops.core.clock import FixedClock
from semops.core.errors import E, SemopsError
from semops.core.limits import CLOCK_SKEW_MAX_S, ORDER_TTL_S
from semops.crypto import condition_for, make_fulfilment
from semops.protocol import OrderState, Receipt
from semops.wallet import service
from semops.wallet.client import Answer
from semops.wallet.core import verify_config
from semops.wallet.service import PaymentOutcome, Wallet
from semops.wallet.store import WalletStore

from .scheme import ACCOUNT_ID, ACTIVATION_CODE, PAYER, Entropy, FakeProcessor, Scheme, entropy

NOW = 1_800_000_000
PIN = "4821"
URL = "http://bank-a.test"
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FixedClock(NOW)
        self.scheme = Scheme.build(NOW)
        self.processor = FakeProcessor(self.scheme, self.clock, pin=PIN)
        self.store = WalletStore.open(tmp_path / "wallet")
        self.urls: list[str] = []
        self.wallet = Wallet(self.store, self._transport, self.clock, Entropy())

    def _transport(self, url: str) -> FakeProcessor:
        self.urls.append(url)
        return self.processor

    def enroll(self) -> None:
        run(self.wallet.enroll(URL, ACTIVATION_CODE, "Alice's phone", PIN))

    def request(self, label: str = "r1", **options: Any) -> str:
        return self.processor.knows(self.scheme.request(label=label, **options))

    def pay(self, token: str, pin: str = PIN) -> PaymentOutcome:
        async def go() -> PaymentOutcome:
            verified = await self.wallet.verify(token)
            return await self.wallet.pay(verified, pin)

        return run(go())

    def order_posts(self) -> list[str]:
        return [
            jose
            for method, path, jose in self.processor.received
            if (method, path) == ("POST", "/v1/wallet/orders") and jose is not None
        ]


@pytest.fixture
def harness(tmp_path: Path):
    made = Harness(tmp_path)
    yield made
    made.store.close()


@pytest.fixture
def enrolled(harness: Harness) -> Harness:
    harness.enroll()
    return harness


# --- enrolment ------------------------------------------------------------------------------


def test_enrolment_registers_the_device_key_and_the_pin(harness: Harness) -> None:
    harness.enroll()
    enrolled = harness.store.require_enrolment()
    assert (enrolled.account_id, enrolled.processor_id, enrolled.customer_name) == (
        ACCOUNT_ID,
        PAYER,
        "Alice",
    )
    assert enrolled.device_kid == harness.store.device_key().kid
    assert enrolled.device_kid in harness.processor.devices
    assert harness.processor.pin == PIN
    assert harness.store.pinned_root() == harness.scheme.root_pem
    mode = stat.S_IMODE(harness.store.device_key_path.stat().st_mode)
    assert mode == 0o600


def test_a_wallet_is_enrolled_only_once(enrolled: Harness) -> None:
    with pytest.raises(SemopsError) as caught:
        enrolled.enroll()
    assert caught.value.code == E.FORBIDDEN.code


def test_a_refused_enrolment_keeps_the_key_and_a_retry_reuses_it(harness: Harness) -> None:
    with pytest.raises(SemopsError) as caught:
        run(harness.wallet.enroll(URL, "WRONG-CODE-00", "phone", PIN))
    assert caught.value.code == E.ACTIVATION_INVALID.code
    assert harness.store.enrolment() is None
    kid = harness.store.device_key().kid
    harness.enroll()
    assert harness.store.require_enrolment().device_kid == kid


def test_enrolment_refuses_a_bad_pin_before_any_call(harness: Harness) -> None:
    with pytest.raises(SemopsError) as caught:
        run(harness.wallet.enroll(URL, ACTIVATION_CODE, "phone", "12"))
    assert caught.value.code == E.PIN_FORMAT.code
    assert harness.processor.received == []
    assert not harness.store.has_device_key()


def test_enrolment_refuses_a_processor_whose_directory_does_not_verify(
    harness: Harness,
) -> None:
    rogue = Scheme.build(NOW, label="rogue")
    harness.scheme.directory_token = rogue.directory_token
    with pytest.raises(SemopsError):
        harness.enroll()
    assert harness.store.enrolment() is None


def test_an_unenrolled_wallet_cannot_pay(harness: Harness) -> None:
    with pytest.raises(SemopsError) as caught:
        run(harness.wallet.verify(harness.request()))
    assert caught.value.code == E.DEVICE_UNKNOWN.code


# --- paying -----------------------------------------------------------------------------------


def test_a_payment_completes_with_a_checked_receipt(enrolled: Harness) -> None:
    outcome = enrolled.pay(enrolled.request())
    assert outcome.state is OrderState.COMPLETED
    assert isinstance(outcome.receipt, Receipt)
    assert outcome.receipt.order_id == outcome.order.order_id
    assert enrolled.processor.payments == 1
    assert enrolled.processor.balance_minor == 10_000 - 1250
    stored = enrolled.store.require_order(outcome.order.order_id)
    assert stored.state is OrderState.COMPLETED and stored.receipt is not None


def test_the_order_is_on_disk_before_it_is_sent(enrolled: Harness, tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    processor = enrolled.processor
    original = processor.request

    async def spying(method: str, path: str, **options: Any) -> Answer:
        if (method, path) == ("POST", "/v1/wallet/orders"):
            # A second connection, as a restarted wallet would open it.
            other = WalletStore.open(tmp_path / "wallet")
            try:
                records = other.orders()
                assert len(records) == 1
                seen.append((records[0].state.value, records[0].token))
            finally:
                other.close()
        return await original(method, path, **options)

    processor.request = spying  # type: ignore[method-assign]
    outcome = enrolled.pay(enrolled.request())
    assert seen == [("sent", enrolled.order_posts()[0])]
    assert outcome.state is OrderState.COMPLETED


def test_a_lost_reply_leaves_the_order_pending_and_a_retry_resends_the_identical_order(
    enrolled: Harness,
) -> None:
    token = enrolled.request()
    enrolled.processor.lose_replies = 1
    first = enrolled.pay(token)
    assert first.state is OrderState.PENDING
    assert enrolled.processor.payments == 1  # it was executed; only the reply was lost

    async def again() -> PaymentOutcome:
        verified = await enrolled.wallet.verify(token)
        existing = enrolled.wallet.existing_order(verified.request.request_id)
        assert existing is not None and existing.order_id == first.order.order_id
        return await enrolled.wallet.resume(existing)

    second = run(again())
    assert second.state is OrderState.COMPLETED
    assert second.order.order_id == first.order.order_id
    posts = enrolled.order_posts()
    assert len(posts) == 2 and posts[0] == posts[1]  # same id, same content, byte for byte
    assert enrolled.processor.payments == 1  # never twice
    assert enrolled.processor.balance_minor == 10_000 - 1250


def test_paying_a_request_that_already_has_an_order_is_refused(enrolled: Harness) -> None:
    token = enrolled.request()
    enrolled.pay(token)
    with pytest.raises(SemopsError) as caught:
        enrolled.pay(token)
    assert caught.value.code == E.REQUEST_ALREADY_PAID.code
    assert enrolled.processor.payments == 1


def test_a_202_is_pending_and_status_resends_the_stored_order(enrolled: Harness) -> None:
    enrolled.processor.answer_pending = True
    first = enrolled.pay(enrolled.request())
    assert first.state is OrderState.PENDING
    enrolled.processor.answer_pending = False
    settled = run(enrolled.wallet.status(first.order.order_id))
    assert settled.state is OrderState.COMPLETED
    posts = enrolled.order_posts()
    assert len(posts) == 2 and posts[0] == posts[1]


def test_status_reads_the_outcome_the_processor_stored(enrolled: Harness) -> None:
    enrolled.processor.lose_replies = 1
    first = enrolled.pay(enrolled.request())
    posts_before = len(enrolled.order_posts())
    settled = run(enrolled.wallet.status(first.order.order_id))
    assert settled.state is OrderState.COMPLETED and settled.receipt is not None
    assert len(enrolled.order_posts()) == posts_before  # asked, not re-sent
    gets = [p for m, p, _ in enrolled.processor.received if m == "GET" and "orders/" in p]
    assert gets == [f"/v1/wallet/orders/{first.order.order_id}"]


def test_an_unreachable_processor_keeps_the_order_pending_until_it_can_be_settled(
    enrolled: Harness,
) -> None:
    token = enrolled.request(ttl_s=3600)
    enrolled.processor.unavailable = True
    first = enrolled.pay(token)
    assert first.state is OrderState.PENDING
    still = run(enrolled.wallet.status(first.order.order_id))
    assert still.state is OrderState.PENDING
    # Past the order's expiry and the skew, an order the processor never saw is failed.
    enrolled.processor.unavailable = False
    enrolled.clock.advance(ORDER_TTL_S + CLOCK_SKEW_MAX_S)
    settled = run(enrolled.wallet.status(first.order.order_id))
    assert settled.state is OrderState.FAILED
    assert settled.order.error_code == E.MESSAGE_EXPIRED.code
    assert enrolled.processor.payments == 0


def test_an_expired_pending_order_is_asked_about_not_resent(enrolled: Harness) -> None:
    token = enrolled.request(ttl_s=3600)
    enrolled.processor.lose_replies = 1
    first = enrolled.pay(token)
    enrolled.clock.advance(ORDER_TTL_S)
    posts_before = len(enrolled.order_posts())
    settled = run(enrolled.wallet.resume(enrolled.store.require_order(first.order.order_id)))
    assert settled.state is OrderState.COMPLETED
    assert len(enrolled.order_posts()) == posts_before


def test_a_wallet_that_stopped_after_sending_resumes_safely(enrolled: Harness) -> None:
    """The order went out, then the wallet died before it read the answer (state SENT)."""
    token = enrolled.request()
    enrolled.processor.lose_replies = 1
    first = enrolled.pay(token)
    # Put the order back to SENT as a crash between send and answer would leave it.
    enrolled.store._db.execute(
        "UPDATE orders SET state = 'sent' WHERE order_id = ?", (first.order.order_id,)
    )
    settled = run(enrolled.wallet.resume(enrolled.store.require_order(first.order.order_id)))
    assert settled.state is OrderState.COMPLETED
    assert enrolled.processor.payments == 1


def test_a_created_but_unsent_order_is_sent_on_resume(enrolled: Harness) -> None:
    enrolled.processor.unavailable = True
    first = enrolled.pay(enrolled.request())
    enrolled.store._db.execute(
        "UPDATE orders SET state = 'created' WHERE order_id = ?", (first.order.order_id,)
    )
    enrolled.processor.unavailable = False
    settled = run(enrolled.wallet.resume(enrolled.store.require_order(first.order.order_id)))
    assert settled.state is OrderState.COMPLETED


def test_a_wrong_pin_fails_the_order_and_a_new_attempt_makes_a_new_order(
    enrolled: Harness,
) -> None:
    token = enrolled.request()
    failed = enrolled.pay(token, pin="0000")
    assert failed.state is OrderState.FAILED
    assert failed.order.error_code == E.PIN_INVALID.code
    assert "2 attempts left" in (failed.order.error_detail or "")
    assert "0000" not in (failed.order.error_detail or "")
    retried = enrolled.pay(token)
    assert retried.state is OrderState.COMPLETED
    assert retried.order.order_id != failed.order.order_id
    assert enrolled.processor.payments == 1


def test_insufficient_funds_fail_the_order(enrolled: Harness) -> None:
    enrolled.processor.balance_minor = 100
    failed = enrolled.pay(enrolled.request())
    assert (failed.state, failed.order.error_code) == (
        OrderState.FAILED,
        E.INSUFFICIENT_FUNDS.code,
    )


def test_a_receipt_that_proves_nothing_leaves_the_order_pending(enrolled: Harness) -> None:
    bogus = make_fulfilment(entropy("bogus", 32))

    def tamper(receipt: Receipt) -> Receipt:
        return receipt.model_copy(update={"fulfilment": bogus, "condition": condition_for(bogus)})

    enrolled.processor.tamper_receipt = tamper
    outcome = enrolled.pay(enrolled.request())
    assert outcome.state is OrderState.PENDING
    assert outcome.note is not None and E.FULFILMENT_INVALID.code in outcome.note
    assert enrolled.store.require_order(outcome.order.order_id).receipt is None


def test_a_receipt_for_another_amount_is_not_accepted(enrolled: Harness) -> None:
    enrolled.processor.tamper_receipt = lambda r: r.model_copy(update={"amount_minor": 1})
    outcome = enrolled.pay(enrolled.request())
    assert outcome.state is OrderState.PENDING
    assert outcome.note is not None and E.ORDER_MISMATCH.code in outcome.note


def test_an_expired_request_is_refused_before_any_order(enrolled: Harness) -> None:
    token = enrolled.request(ttl_s=60)
    enrolled.clock.advance(60)
    with pytest.raises(SemopsError) as caught:
        run(enrolled.wallet.verify(token))
    assert caught.value.code == E.REQUEST_EXPIRED.code
    assert enrolled.store.orders() == []


# --- trust refresh --------------------------------------------------------------------------


def test_an_expired_directory_is_fetched_again(enrolled: Harness) -> None:
    enrolled.clock.advance(86400 + 10)
    enrolled.scheme.now = enrolled.clock.now()
    enrolled.scheme.sign_directory(enrolled.clock.now())
    trusted = run(enrolled.wallet.trusted())
    assert trusted.directory.issued_at == enrolled.clock.now()
    assert enrolled.store.processor_config() == enrolled.scheme.config_document()


def test_a_refreshed_configuration_from_another_root_is_refused(enrolled: Harness) -> None:
    rogue = Scheme.build(NOW, label="rogue")
    enrolled.processor.scheme = rogue
    with pytest.raises(SemopsError) as caught:
        run(enrolled.wallet.trusted(refresh=True))
    assert caught.value.code == E.CERTIFICATE_INVALID.code
    # The stored configuration is untouched.
    assert enrolled.store.processor_config() == enrolled.scheme.config_document()


class CountingVerify:
    """`verify_config` as the wallet service calls it, counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(service, "verify_config", self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return verify_config(*args, **kwargs)


def test_payments_verify_the_configuration_once_while_it_holds(
    enrolled: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: verify, order and receipt each need the configuration; verifying its
    certificates, directory and keys for each of them was most of a wallet's work."""
    counted = CountingVerify(monkeypatch)
    loads = 0
    real_device_key = enrolled.store.device_key

    def device_key() -> Any:
        nonlocal loads
        loads += 1
        return real_device_key()

    monkeypatch.setattr(enrolled.store, "device_key", device_key)
    for label in ("r1", "r2", "r3"):
        assert enrolled.pay(enrolled.request(label)).state is OrderState.COMPLETED
    run(enrolled.wallet.balance())
    assert counted.calls == 1
    assert loads <= 1  # read from its file once at most (it was read at enrolment)


def test_the_kept_configuration_is_verified_again_at_its_expiry(
    enrolled: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = CountingVerify(monkeypatch)
    first = run(enrolled.wallet.trusted())
    enrolled.clock.advance(first.valid_until - 1 - enrolled.clock.now())
    assert run(enrolled.wallet.trusted()) is first
    assert counted.calls == 1
    enrolled.clock.advance(1)  # the directory expires: checked again, refused, fetched anew
    enrolled.scheme.now = enrolled.clock.now()
    enrolled.scheme.sign_directory(enrolled.clock.now())
    renewed = run(enrolled.wallet.trusted())
    assert renewed.directory.serial == enrolled.clock.now() != first.directory.serial
    assert counted.calls == 3  # the stored one (refused), then the fetched one


def test_a_refresh_always_fetches_and_verifies(
    enrolled: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(enrolled.wallet.trusted())
    counted = CountingVerify(monkeypatch)
    enrolled.scheme.sign_directory(enrolled.clock.now() + 1)
    refreshed = run(enrolled.wallet.trusted(refresh=True))
    assert counted.calls == 1
    assert refreshed.directory.serial == enrolled.clock.now() + 1
    assert run(enrolled.wallet.trusted()) is refreshed


def test_a_configuration_another_process_stored_is_used_at_once(
    enrolled: Harness, tmp_path: Path
) -> None:
    """Two wallet processes on one folder: what one fetched (a newer directory, which may
    revoke a key) the other uses at its next step, not only when its copy expires."""
    first = run(enrolled.wallet.trusted())
    enrolled.scheme.sign_directory(enrolled.clock.now() + 1, payee_status="suspended")
    other = WalletStore.open(tmp_path / "wallet")
    try:
        other.save_processor_config(enrolled.scheme.config_document())
    finally:
        other.close()
    seen = run(enrolled.wallet.trusted())
    assert seen.directory.serial == first.directory.serial + 1
    with pytest.raises(SemopsError) as caught:
        run(enrolled.wallet.verify(enrolled.request()))
    assert caught.value.code == E.PROCESSOR_SUSPENDED.code


# --- reads ----------------------------------------------------------------------------------


def test_balance_and_history_are_read_with_a_device_authorisation(enrolled: Harness) -> None:
    balance = run(enrolled.wallet.balance())
    assert balance["balance_minor"] == 10_000
    history = run(enrolled.wallet.history())
    assert [entry["kind"] for entry in history["entries"]] == ["payment", "deposit"]


def test_reads_by_an_unknown_device_are_refused(enrolled: Harness) -> None:
    enrolled.processor.devices.clear()
    with pytest.raises(SemopsError) as caught:
        run(enrolled.wallet.balance())
    assert caught.value.code == E.KEY_UNKNOWN.code


def test_the_wallet_closes_its_transports(enrolled: Harness) -> None:
    run(enrolled.wallet.balance())
    run(enrolled.wallet.close())
    assert enrolled.processor.closed == 1
    assert set(enrolled.urls) == {URL}
