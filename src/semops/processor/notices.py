"""What happened to an account's credentials, told to the account's own devices.

DESIGN.md §6: activation codes for an account that already has devices are announced to
those devices. So is everything else that changes who may approve payments on the account:
a device added or revoked, the PIN reset or unlocked by the bank. A customer whose code
leaked, or whose bank was tricked into a reset, sees it on the phone they still hold
(`GET /v1/wallet/notices`, `semops wallet notices`, the web wallet's home page).

A notice is written in the transaction of the change it tells of, so there is never a
change without its notice. It holds the kind, who acted (the customer or the bank) and, for
a device, the name its owner gave it: nothing a device of the same account may not see.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from semops.core.limits import WALLET_HISTORY_MAX
from semops.store import processor as store
from semops.store.db import Connection

CUSTOMER: Final = "customer"
OPERATOR: Final = "operator"


class NoticeKind(StrEnum):
    ACTIVATION_CODE_ISSUED = "activation_code_issued"
    DEVICE_ENROLLED = "device_enrolled"
    DEVICE_REVOKED = "device_revoked"
    CREDENTIAL_RESET = "credential_reset"
    CREDENTIAL_UNLOCKED = "credential_unlocked"


async def announce(
    connection: Connection,
    account_id: str,
    kind: NoticeKind,
    actor: str,
    now: int,
    *,
    device_name: str | None = None,
) -> None:
    """Record a notice for the account's devices, in the caller's transaction."""
    assert actor in (CUSTOMER, OPERATOR), "a notice names the customer or the bank"
    await store.insert_row(
        connection,
        store.account_notices,
        {
            "account_id": account_id,
            "kind": kind.value,
            "actor": actor,
            "device_name": device_name,
            "created_at": now,
        },
    )


async def account_notices(connection: Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's newest notices (a bounded list: a phone screen, not an export)."""
    rows = await store.notices_of(connection, account_id, WALLET_HISTORY_MAX)
    return [
        {
            "kind": row["kind"],
            "actor": row["actor"],
            "device_name": row["device_name"],
            "created_at": row["created_at"],
        }
        for row in rows
    ]


__all__ = ["CUSTOMER", "OPERATOR", "NoticeKind", "account_notices", "announce"]
