"""Replay and idempotency decisions, as pure functions of what is stored and what is now.

Theory of operation (DESIGN.md §6 "Replay", STYLE.md "Idempotency by client-made ids"):

- Every id (request, order, transfer, refund) is single-use at each party. A party stores,
  for each id it has acted on, the digest of the content it acted on and the outcome.
- When a message arrives with an id already stored: the same digest means a retry (a lost
  reply, a re-delivery) and the stored outcome is returned with no second effect; a
  different digest is a different operation wearing a used id, refused as
  `idempotency_conflict` and never executed.
- A message is accepted only inside its validity window: not created in the future beyond
  the bounded clock skew, not expired. Ids are remembered at least until their message
  expires plus the skew, so an old message cannot come back after its id is forgotten:
  past `retain_until` it is refused as expired before the id is even looked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from semops.core.errors import E, SemopsError
from semops.core.limits import CLOCK_SKEW_MAX_S, MESSAGE_TTL_MAX_S

T = TypeVar("T")


class Decision(StrEnum):
    NEW = "new"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class StoredOutcome(Generic[T]):
    """What a party remembers about an id it acted on."""

    content_digest: str
    outcome: T


@dataclass(frozen=True, slots=True)
class IdempotencyVerdict(Generic[T]):
    decision: Decision
    outcome: T | None = None


def decide(stored: StoredOutcome[T] | None, content_digest: str) -> IdempotencyVerdict[T]:
    """NEW: act on it. RETRY: answer `outcome` again. Different content: raise conflict."""
    if stored is None:
        return IdempotencyVerdict(Decision.NEW)
    if stored.content_digest != content_digest:
        raise SemopsError(E.IDEMPOTENCY_CONFLICT)
    return IdempotencyVerdict(Decision.RETRY, stored.outcome)


def check_fresh(
    created_at: int,
    expires_at: int | None,
    now: int,
    *,
    skew_s: int = CLOCK_SKEW_MAX_S,
    max_age_s: int = MESSAGE_TTL_MAX_S,
    expired: SemopsError | None = None,
) -> None:
    """Refuse a message dated in the future (beyond skew) or past its expiry.

    A message without its own expiry is refused once older than `max_age_s`. `expired`
    lets a caller say which kind of thing expired (a request, a transfer).
    """
    if created_at > now + skew_s:
        raise SemopsError(E.MESSAGE_NOT_YET_VALID)
    deadline = expires_at if expires_at is not None else created_at + max_age_s
    if now >= deadline:
        raise expired if expired is not None else SemopsError(E.MESSAGE_EXPIRED)


def retain_until(
    created_at: int,
    expires_at: int | None,
    *,
    skew_s: int = CLOCK_SKEW_MAX_S,
    max_age_s: int = MESSAGE_TTL_MAX_S,
) -> int:
    """The earliest moment a party may forget an id: after that the message is refused as
    expired anyway, so forgetting it cannot open a replay."""
    deadline = expires_at if expires_at is not None else created_at + max_age_s
    return deadline + skew_s
