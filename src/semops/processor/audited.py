"""The processor's parts with their audit entries (DESIGN.md §8), wired in by service.py.

The parts (payer side, customers, payees) do not know about auditing; these subclasses add
it around them. An order's commit is audited inside the transaction that commits it (the
payer side's `_commit` runs in it; the entry is staged, and chained within moments by
`AuditLog.chain_pending`); an order's failure, and the back office's actions
(credential unlocked, device revoked, merchant created), right after the action's own
transaction, since that transaction is not reachable from here: a crash in between loses
that one entry, never money. Audit data are ids, amounts and codes only (DESIGN.md §5).
"""

from __future__ import annotations

from typing import Any, Final

from semops.audit.log import AuditLog
from semops.processor.context import Context
from semops.processor.enrolment import Customers
from semops.processor.notices import CUSTOMER
from semops.processor.payee import Payee
from semops.processor.payees import Payees
from semops.processor.payer import Payer
from semops.protocol import PayerTransferEvent
from semops.store import processor as store
from semops.store.db import Connection

OPERATOR: Final = "operator"
# The payer events that can end an order as failed (aborted).
_FAILING_EVENTS = frozenset({PayerTransferEvent.ABORTED, PayerTransferEvent.ROUTER_REFUSED})


class AuditedCustomers(Customers):
    """Customers whose operator actions are audited."""

    def __init__(self, context: Context, audit: AuditLog) -> None:
        super().__init__(context)
        self.audit = audit

    # `actor` names who acted: the admin API's bearer is OPERATOR; a back-office session
    # passes its own "operator:backoffice:<ref>", so the log tells sessions apart.
    async def unlock(self, account_id: str, *, actor: str = OPERATOR) -> dict[str, Any]:
        result = await super().unlock(account_id)
        await self.audit.record("credential_unlocked", actor, {"account_id": account_id})
        return result

    async def reset_credentials(self, account_id: str, *, actor: str = OPERATOR) -> dict[str, Any]:
        result = await super().reset_credentials(account_id)
        await self.audit.record(
            "credential_reset",
            actor,
            {"account_id": account_id, "devices_revoked": result["devices_revoked"]},
        )
        return result

    async def issue_activation_code(
        self, account_id: str, *, actor: str = OPERATOR
    ) -> dict[str, Any]:
        result = await super().issue_activation_code(account_id)
        await self.audit.record("activation_code_issued", actor, {"account_id": account_id})
        return result

    async def issue_code_for_device(self, account_id: str, kid: str, pin: str) -> dict[str, Any]:
        result = await super().issue_code_for_device(account_id, kid, pin)
        await self.audit.record(
            "activation_code_issued", CUSTOMER, {"account_id": account_id, "kid": kid}
        )
        return result

    async def revoke_device(self, kid: str, *, actor: str = OPERATOR) -> dict[str, Any]:
        result = await super().revoke_device(kid)
        await self.audit.record(
            "device_revoked", actor, {"kid": kid, "account_id": result["account_id"]}
        )
        return result


class AuditedPayees(Payees):
    def __init__(self, context: Context, audit: AuditLog) -> None:
        super().__init__(context)
        self.audit = audit

    async def create_merchant(
        self, merchant_id: str, display_name: str, currency: str, webhook_url: str | None
    ) -> dict[str, Any]:
        result = await super().create_merchant(merchant_id, display_name, currency, webhook_url)
        await self.audit.record(
            "merchant_created",
            OPERATOR,
            {"merchant_id": merchant_id, "account_id": result["account_id"], "currency": currency},
        )
        return result


def _order_audit(row: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of an order: ids, amount, where it went, the outcome."""
    return {
        "order_id": row["order_id"],
        "transfer_id": row["transfer_id"],
        "amount_minor": row["amount_minor"],
        "currency": row["currency"],
        "payee_processor": row["payee_processor"],
        "reason_code": row["reason_code"],
    }


class AuditedPayer(Payer):
    """The payer side with its outcomes audited: commits in the committing transaction."""

    def __init__(
        self, context: Context, customers: Customers, payee: Payee, audit: AuditLog
    ) -> None:
        super().__init__(context, customers, payee)
        self.audit = audit

    async def _committed(self, connection: Connection, row: dict[str, Any]) -> dict[str, Any]:
        await self.audit.stage(
            connection, "order_committed", self.context.processor_id, _order_audit(row)
        )
        return row

    async def _transition(
        self,
        transfer_id: str,
        event: PayerTransferEvent,
        reason_code: str | None = None,
        *,
        fulfilment: str | None = None,
    ) -> dict[str, Any]:
        before = await self._state_of(transfer_id) if event in _FAILING_EVENTS else None
        row = await super()._transition(transfer_id, event, reason_code, fulfilment=fulfilment)
        if before not in (None, "aborted") and row["state"] == "aborted":
            await self.audit.record_once(
                "order_failed", self.context.processor_id, _order_audit(row), key="order_id"
            )
        return row

    async def _state_of(self, transfer_id: str) -> str | None:
        async with self.context.database.read() as connection:
            row = await store.find_row(connection, store.orders, transfer_id=transfer_id)
        return str(row["state"]) if row is not None else None
