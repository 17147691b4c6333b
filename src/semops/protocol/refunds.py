"""What the payee side is told about a refund, and when the refund is tried again. Pure.

Theory of operation (DESIGN.md §3 "Refund", §5: the payee side never learns the payer's
processor).

- A refund ends `failed` only for a reason about the payment itself that no wait can
  change (FINAL_REFUSALS: it was not paid or not to this payee, it would exceed what was
  paid, the currencies differ). Every other reason a refund does not commit -- a processor
  suspended or unreachable, a net-debit cap reached, an attempt expired unanswered, an
  answer that cannot be read -- is about the router or the payer side *now*. Telling the
  merchant would tell it something about the payer's processor (that it is suspended, say,
  which the router would otherwise hide), and waiting usually cures it. So the refund stays
  pending and is tried again: once an attempt is known never to commit, a new attempt
  (a new network refund id; the merchant's refund id stays) is sent after a wait of a
  quarter of the time the refund has waited so far, within REFUND_RETRY_DELAY_MIN_S and
  REFUND_RETRY_DELAY_MAX_S, until REFUND_RETRY_WINDOW_S after the merchant asked. Then it
  fails as `refund_not_completed`, which names nobody.
- Whatever reason a record holds, a merchant is only ever shown one of
  MERCHANT_REFUND_CODES (`merchant_refund_code`): a code from elsewhere becomes
  `refund_not_completed`, so no payer-side cause can leak through a path overlooked here.
"""

from __future__ import annotations

from typing import Final

from semops.core.errors import E
from semops.core.limits import (
    REFUND_RETRY_DELAY_MAX_S,
    REFUND_RETRY_DELAY_MIN_S,
    REFUND_RETRY_WINDOW_S,
)

FINAL_REFUSALS: Final = frozenset(
    {E.REFUND_NOT_ALLOWED.code, E.REFUND_EXCEEDS_PAID.code, E.CURRENCY_MISMATCH.code}
)
MERCHANT_REFUND_CODES: Final = FINAL_REFUSALS | {E.REFUND_NOT_COMPLETED.code}


def is_final_refusal(reason_code: str | None) -> bool:
    """Whether a refund that did not commit for this reason must fail (else: try again)."""
    return reason_code in FINAL_REFUSALS


def merchant_refund_code(reason_code: str | None) -> str | None:
    """The reason a merchant may be shown for a failed refund (None: it did not fail)."""
    if reason_code is None:
        return None
    return reason_code if reason_code in MERCHANT_REFUND_CODES else E.REFUND_NOT_COMPLETED.code


def may_retry(created_at: int, now: int) -> bool:
    """Whether a refund the merchant asked for at `created_at` is still tried again."""
    return now < created_at + REFUND_RETRY_WINDOW_S


def retry_delay_s(waited_s: int) -> int:
    """How long to wait before the next attempt, after the refund has waited `waited_s`."""
    return min(max(waited_s // 4, REFUND_RETRY_DELAY_MIN_S), REFUND_RETRY_DELAY_MAX_S)


def attempt_due(created_at: int, given_up_at: int, now: int) -> bool:
    """Whether a waiting attempt may be sent: the last one was known dead at `given_up_at`."""
    return now >= given_up_at + retry_delay_s(given_up_at - created_at)


__all__ = [
    "FINAL_REFUSALS",
    "MERCHANT_REFUND_CODES",
    "attempt_due",
    "is_final_refusal",
    "may_retry",
    "merchant_refund_code",
    "retry_delay_s",
]
