"""Payees and what they hear: merchants and persons, their credentials, their notices.

A payee is a merchant (created by the back office; authenticated by an API key shown once,
of which only the SHA-256 is stored) or a person (a customer receiving P2P, made the first
time the person asks to be paid). Each has an account at this processor; nothing here is
ever sent to another party. Signed PaymentNotices wait in a durable outbox and are POSTed
to the merchant's webhook with back-off until it answers 2xx (semops.service.outbox). A
webhook URL passes semops.core.urls at creation and at every call (https; plain http only on
loopback in development), and no redirect is followed: the processor calls that URL only.
A new merchant's display name is refused when a payer could take it for another payee's
name (the UTS #39 skeleton, semops.protocol.names, stored as `name_key`).
"""

from __future__ import annotations

import secrets
from typing import Any, Final

import structlog
from sqlalchemy.exc import IntegrityError

from semops.core.encoding import sha256_b64url
from semops.core.errors import E, SemopsError
from semops.core.urls import check_endpoint_url
from semops.ledger import AccountKind
from semops.processor import accounts
from semops.processor.context import Context, new_id
from semops.protocol.names import check_display_text, name_key
from semops.service.outbox import OUTBOX_DELIVERY_TIMEOUT_S, Deliverer
from semops.store import processor as store

log = structlog.get_logger("semops.processor")

API_KEY_PREFIX: Final = "sk_"
PERSON_PAYEE_PREFIX: Final = "p-"


def api_key_digest(api_key: str) -> str:
    return sha256_b64url(api_key.encode("utf-8", errors="replace"))


class Payees:
    def __init__(self, context: Context) -> None:
        self.context = context
        self.outbox = Deliverer(_NoticeOutbox(context), context.clock, wakeup=context.outbox_wakeup)
        context.offer_notices = self.outbox.offer

    # --- payees -----------------------------------------------------------------------------

    async def create_merchant(
        self, merchant_id: str, display_name: str, currency: str, webhook_url: str | None
    ) -> dict[str, Any]:
        if webhook_url is not None:  # the processor will call it: https, no query, no tricks
            check_endpoint_url(webhook_url, development=self.context.settings.development)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        account_id = new_id("mc")
        try:
            await self._insert_merchant(
                merchant_id, display_name, currency, webhook_url, api_key, account_id
            )
        except IntegrityError:  # taken by a concurrent call
            raise SemopsError(E.IDEMPOTENCY_CONFLICT, "this merchant id is taken") from None
        log.info("merchant_created", merchant_id=merchant_id)
        return {"merchant_id": merchant_id, "account_id": account_id, "api_key": api_key}

    async def _insert_merchant(
        self,
        merchant_id: str,
        display_name: str,
        currency: str,
        webhook_url: str | None,
        api_key: str,
        account_id: str,
    ) -> None:
        now = self.context.clock.now()
        key = name_key(display_name)
        async with self.context.database.write() as connection:
            if await store.get_row(connection, store.payees, merchant_id) is not None:
                raise SemopsError(E.IDEMPOTENCY_CONFLICT, "this merchant id is taken")
            await store.lock_payee_names(connection)
            if await store.find_row(connection, store.payees, name_key=key) is not None:
                raise SemopsError(E.NAME_CONFUSABLE, "another payee has a name that looks the same")
            await accounts.open_account(connection, account_id, AccountKind.MERCHANT, currency, now)
            await store.insert_row(
                connection,
                store.payees,
                {
                    "payee_id": merchant_id,
                    "kind": "merchant",
                    "display_name": display_name,
                    "account_id": account_id,
                    "currency": currency,
                    "api_key_digest": api_key_digest(api_key),
                    "webhook_url": webhook_url,
                    "created_at": now,
                    "name_key": key,
                },
            )

    async def merchant_for_key(self, authorization: str | None) -> dict[str, Any]:
        if authorization is None or not authorization.startswith("Bearer "):
            raise SemopsError(E.UNAUTHENTICATED, "a merchant API key is required")
        digest = api_key_digest(authorization.removeprefix("Bearer ").strip())
        async with self.context.database.read() as connection:
            payee = await store.find_row(connection, store.payees, api_key_digest=digest)
        if payee is None or payee["kind"] != "merchant":
            raise SemopsError(E.UNAUTHENTICATED)
        return payee

    async def person_payee(self, account_id: str) -> dict[str, Any]:
        """The P2P payee record of a customer, made the first time the person asks to be paid."""
        async with self.context.database.write() as connection:
            payee = await store.find_row(connection, store.payees, account_id=account_id)
            if payee is not None:
                return payee
            customer = await store.find_row(connection, store.customers, account_id=account_id)
            if customer is None:
                raise SemopsError(E.ACCOUNT_UNKNOWN)
            name = check_display_text(customer["name"])  # stored before the rule, maybe
            key = name_key(name)
            # Two people may share a name; a person may not be paid under a shop's name.
            await store.lock_payee_names(connection)
            if await store.find_row(connection, store.payees, name_key=key, kind="merchant"):
                raise SemopsError(E.NAME_CONFUSABLE, "a merchant has a name that looks the same")
            payee = {
                "payee_id": PERSON_PAYEE_PREFIX + secrets.token_hex(6),
                "kind": "person",
                "display_name": name,
                "account_id": account_id,
                "currency": customer["currency"],
                "api_key_digest": None,
                "webhook_url": None,
                "created_at": self.context.clock.now(),
                "name_key": key,
            }
            await store.insert_row(connection, store.payees, payee)
        return payee

    # --- notices to merchants -------------------------------------------------------------

    async def deliver_outbox(self) -> int:
        """One pass over the due webhook deliveries (concurrent, bounded); returns how many
        were acknowledged."""
        delivered = await self.outbox.deliver_due()
        await self.refresh_outbox_gauge()
        return delivered

    async def refresh_outbox_gauge(self) -> None:
        async with self.context.database.read() as connection:
            self.context.metrics.outbox_pending.set(await store.undelivered_count(connection))


class _NoticeOutbox:
    """The processor's outbox as a `Deliverer` sees it: PaymentNotices to webhooks."""

    def __init__(self, context: Context) -> None:
        self.context = context

    async def due(self, now: int, limit: int) -> list[dict[str, Any]]:
        async with self.context.database.read() as connection:
            return await store.due_messages(connection, now, limit)

    async def send(self, message: dict[str, Any]) -> None:
        # Checked again at each call: a URL stored before the rule, or in development by a
        # processor now running without it, is not called.
        destination = check_endpoint_url(
            message["destination"], development=self.context.settings.development
        )
        status, _, _ = await self.context.webhooks.request(
            "POST", destination, jose=message["body"], timeout_s=OUTBOX_DELIVERY_TIMEOUT_S
        )
        # Only a 2xx is an acknowledgement: a 3xx is not followed (the client never follows
        # redirects) and counts as a failed attempt, retried with back-off.
        if not 200 <= status < 300:
            raise SemopsError(E.UNAVAILABLE, f"the webhook answered {status}")

    async def delivered(self, messages: list[dict[str, Any]], now: int) -> None:
        async with self.context.database.write() as connection:
            await store.mark_delivered(connection, [m["message_id"] for m in messages], now)

    async def retry_later(
        self, message: dict[str, Any], attempts: int, at: int, error: SemopsError | None
    ) -> None:
        async with self.context.database.write() as connection:
            await store.mark_attempt(connection, message["message_id"], attempts, at)
        log.info("notice_retry", request_id=message["request_id"], attempts=attempts)
