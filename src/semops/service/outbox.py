"""Retry policy for durable outboxes: when to try a message again.

Messages to a party that is down wait in the sender's database and are re-sent with
exponential back-off, capped so that a party coming back is served within a minute. A
message is never dropped: after OUTBOX_ATTEMPTS_WARN attempts it is still retried at the
cap and reported in metrics, so an operator sees the stuck destination.
"""

from __future__ import annotations

from typing import Final

OUTBOX_BACKOFF_FIRST_S: Final = 1
OUTBOX_BACKOFF_MAX_S: Final = 30
OUTBOX_ATTEMPTS_WARN: Final = 20
# Messages handled per delivery pass, so one slow destination cannot starve the loop.
OUTBOX_BATCH_MAX: Final = 100
OUTBOX_POLL_INTERVAL_S: Final = 0.5
OUTBOX_DELIVERY_TIMEOUT_S: Final = 5.0


def next_attempt_at(now: int, attempts: int) -> int:
    """Back-off after `attempts` failed deliveries: 1, 2, 4, … seconds, at most 30."""
    delay: int = min(OUTBOX_BACKOFF_FIRST_S << max(attempts - 1, 0), OUTBOX_BACKOFF_MAX_S)
    return now + delay
