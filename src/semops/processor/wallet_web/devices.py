"""A customer's own devices: list them, and revoke one from any device of the account.

A device may revoke another device of its own account, or itself (a phone about to be
sold); never a device of another account, which is answered exactly like an unknown kid
(`not_found`), so kids of other customers cannot be probed. Revocation is final: a revoked
key is refused for every later order and read, and enrolling again needs a new activation
code. The revocation is audited with the customer as the actor.

Adding a device: an enrolled device may ask for a fresh activation code for its own account
(a new phone, a second browser). Possession alone is not enough: the call carries a PIN
block sealed to the processor and bound to the digest of the call's other claims, exactly
as an order's, and the PIN attempt counts towards the lockout like any other (once: the
call's device authorisation is single use). The code is shown once, stored only as its
digest, expires like a back-office code and is announced to the account's devices; the new
device must prove the same PIN again when it enrols with it.
"""

from __future__ import annotations

from typing import Any, Final

import structlog

from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError
from semops.core.limits import ADMIN_LIST_MAX, AUTH_TTL_MAX_S
from semops.crypto import open_pin_block
from semops.processor.notices import CUSTOMER, NoticeKind, announce
from semops.processor.service import Processor
from semops.protocol.replay import check_fresh
from semops.store import processor as store

log = structlog.get_logger("semops.processor")

CUSTOMER_ACTOR: Final = CUSTOMER
REVOKED: Final = "revoked"


def device_view(row: dict[str, Any]) -> dict[str, Any]:
    """What a wallet is shown of a device: never the account id of another or the key."""
    return {
        "kid": row["kid"],
        "device_name": row["device_name"],
        "status": row["status"],
        "created_at": row["created_at"],
        "revoked_at": row["revoked_at"],
    }


async def account_devices(processor: Processor, account_id: str) -> list[dict[str, Any]]:
    """The account's devices, newest first (a bounded list: a person has a few)."""
    async with processor.context.database.read() as connection:
        rows = await store.list_rows(
            connection, store.devices, ADMIN_LIST_MAX, account_id=account_id
        )
    return [device_view(row) for row in rows]


async def revoke_own_device(processor: Processor, account_id: str, kid: str) -> dict[str, Any]:
    """Revoke `kid` if it belongs to `account_id`; revoking a revoked device is a no-op."""
    now = processor.context.clock.now()
    async with processor.context.database.write() as connection:
        device = await store.get_row(connection, store.devices, kid, for_update=True)
        if device is None or device["account_id"] != account_id:
            raise SemopsError(E.NOT_FOUND, "no such device on this account")
        changed = device["status"] != REVOKED
        if changed:
            await store.update_row(
                connection, store.devices, kid, {"status": REVOKED, "revoked_at": now}
            )
            device = {**device, "status": REVOKED, "revoked_at": now}
            await announce(
                connection,
                account_id,
                NoticeKind.DEVICE_REVOKED,
                CUSTOMER_ACTOR,
                now,
                device_name=device["device_name"],
            )
    if changed:
        log.warning("device_revoked_by_customer", kind="audit")
        await processor.audit.record(
            "device_revoked", CUSTOMER_ACTOR, {"kid": kid, "account_id": account_id}
        )
    return device_view(device)


async def new_activation_code(
    processor: Processor, account_id: str, kid: str, claims: dict[str, Any]
) -> dict[str, Any]:
    """A new activation code for the account of the calling device `kid`, once its PIN
    block checks out.

    `claims` are {purpose, account_id, created_at, expires_at, pin_block}; the PIN block
    is bound to the digest of all the others."""
    now = processor.context.clock.now()
    if claims["account_id"] != account_id:
        raise SemopsError(E.FORBIDDEN, "a device asks for codes of its own account only")
    created_at, expires_at = claims["created_at"], claims["expires_at"]
    if not 0 < expires_at - created_at <= AUTH_TTL_MAX_S:
        raise SemopsError(E.VALIDATION_FAILED, "the validity period is too long")
    check_fresh(created_at, expires_at, now)
    bound = digest_of({key: value for key, value in claims.items() if key != "pin_block"})
    keys = processor.context.keys
    pin = open_pin_block(claims["pin_block"], keys.enc_key, bound)
    # The PIN is checked in the transaction that issues the code (a reset cannot slip in
    # between), then dropped: verified in memory only (DESIGN.md §6).
    issued = await processor.customers.issue_code_for_device(account_id, kid, pin)
    del pin
    return issued  # audited, with the customer as the actor, by AuditedCustomers


__all__ = ["account_devices", "device_view", "new_activation_code", "revoke_own_device"]
