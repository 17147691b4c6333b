"""Replay and idempotency decisions (DESIGN.md §6 "Replay"; STYLE.md "Idempotency by
client-made ids").

Three promises: the same id with the same content is a retry that gets the stored outcome
back, never a second effect; the same id with other content is `idempotency_conflict`;
and a message is accepted only inside its validity window, whose boundaries are pinned to
the second here. The last property ties the two together: a party may forget an id only
when the message can no longer pass the freshness check.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from semops.core.errors import E, SemopsError
from semops.core.limits import CLOCK_SKEW_MAX_S, MESSAGE_TTL_MAX_S
from semops.protocol.replay import (
    Decision,
    IdempotencyVerdict,
    StoredOutcome,
    check_fresh,
    decide,
    retain_until,
)

NOW = 1_800_000_000
DIGEST = "d" * 43
OTHER_DIGEST = "e" * 43

digests = st.text(min_size=1, max_size=64)
outcomes = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=4),
    st.tuples(st.text(max_size=8), st.integers()),
)
times = st.integers(min_value=0, max_value=2**34)


def refusal(created_at: int, expires_at: int | None, now: int, **kwargs: Any) -> str | None:
    """The error code check_fresh raises, or None when it accepts."""
    try:
        check_fresh(created_at, expires_at, now, **kwargs)
    except SemopsError as error:
        return error.code
    return None


# --- Idempotency ----------------------------------------------------------------------------


def test_an_id_never_seen_is_new() -> None:
    verdict: IdempotencyVerdict[str] = decide(None, DIGEST)
    assert verdict.decision is Decision.NEW
    assert verdict.outcome is None


def test_same_content_again_is_a_retry_with_the_stored_outcome() -> None:
    outcome = {"state": "committed", "receipt": "token"}
    verdict = decide(StoredOutcome(DIGEST, outcome), DIGEST)
    assert verdict.decision is Decision.RETRY
    assert verdict.outcome is outcome


def test_other_content_under_a_used_id_is_a_conflict() -> None:
    with pytest.raises(SemopsError) as caught:
        decide(StoredOutcome(DIGEST, "paid"), OTHER_DIGEST)
    assert caught.value.code == "idempotency_conflict"
    assert caught.value.spec is E.IDEMPOTENCY_CONFLICT


def test_a_stored_outcome_of_none_is_still_a_retry() -> None:
    verdict = decide(StoredOutcome(DIGEST, None), DIGEST)
    assert verdict.decision is Decision.RETRY
    assert verdict.outcome is None


def test_decisions_have_stable_stored_values() -> None:
    assert [decision.value for decision in Decision] == ["new", "retry"]


@given(stored_digest=digests, outcome=outcomes)
def test_same_digest_is_always_a_retry_with_the_identical_outcome(
    stored_digest: str, outcome: Any
) -> None:
    stored = StoredOutcome(stored_digest, outcome)
    for _ in range(3):  # asking again changes nothing
        verdict = decide(stored, stored_digest)
        assert verdict.decision is Decision.RETRY
        assert verdict.outcome is outcome


@given(stored_digest=digests, arriving=digests, outcome=outcomes)
def test_any_different_digest_is_a_conflict_and_never_returns_the_outcome(
    stored_digest: str, arriving: str, outcome: Any
) -> None:
    assume(arriving != stored_digest)
    with pytest.raises(SemopsError) as caught:
        decide(StoredOutcome(stored_digest, outcome), arriving)
    assert caught.value.code == "idempotency_conflict"
    # The error carries nothing of what was stored.
    assert caught.value.extra == {}


def test_conflict_error_does_not_reveal_either_digest() -> None:
    with pytest.raises(SemopsError) as caught:
        decide(StoredOutcome(DIGEST, "secret outcome"), OTHER_DIGEST)
    shown = str(caught.value) + repr(caught.value.to_problem())
    assert DIGEST not in shown
    assert OTHER_DIGEST not in shown
    assert "secret outcome" not in shown


# --- Freshness boundaries -------------------------------------------------------------------


def test_accepted_until_the_second_before_expiry() -> None:
    assert refusal(NOW - 10, NOW + 1, NOW) is None


def test_expired_exactly_at_expires_at() -> None:
    assert refusal(NOW - 10, NOW, NOW) == "message_expired"


def test_expired_after_expires_at() -> None:
    assert refusal(NOW - 10, NOW - 1, NOW) == "message_expired"


def test_dated_exactly_skew_in_the_future_is_accepted() -> None:
    assert refusal(NOW + CLOCK_SKEW_MAX_S, NOW + 600, NOW) is None


def test_dated_one_second_beyond_the_skew_is_not_yet_valid() -> None:
    assert refusal(NOW + CLOCK_SKEW_MAX_S + 1, NOW + 600, NOW) == "message_not_yet_valid"


def test_the_skew_can_be_narrowed_by_the_caller() -> None:
    assert refusal(NOW + 5, NOW + 600, NOW, skew_s=5) is None
    assert refusal(NOW + 6, NOW + 600, NOW, skew_s=5) == "message_not_yet_valid"
    assert refusal(NOW + 1, NOW + 600, NOW, skew_s=0) == "message_not_yet_valid"


def test_future_dating_is_refused_before_expiry_is_considered() -> None:
    # Dated in the future and already past its expiry: the date is the first thing wrong.
    assert refusal(NOW + 3600, NOW - 1, NOW) == "message_not_yet_valid"


def test_message_without_expiry_lives_max_age() -> None:
    created_at = NOW - MESSAGE_TTL_MAX_S
    assert refusal(created_at + 1, None, NOW) is None
    assert refusal(created_at, None, NOW) == "message_expired"
    assert refusal(NOW - 100, None, NOW, max_age_s=100) == "message_expired"
    assert refusal(NOW - 99, None, NOW, max_age_s=100) is None


def test_an_own_expiry_overrides_max_age() -> None:
    # A message with an expiry is judged by that expiry, whatever its age.
    assert refusal(NOW - MESSAGE_TTL_MAX_S - 5, NOW + 1, NOW) is None


def test_caller_names_what_expired() -> None:
    error = SemopsError(E.REQUEST_EXPIRED)
    with pytest.raises(SemopsError) as caught:
        check_fresh(NOW - 10, NOW, NOW, expired=error)
    assert caught.value is error
    # ... but a message dated in the future is still "not yet valid", not that error.
    assert (
        refusal(NOW + CLOCK_SKEW_MAX_S + 1, NOW + 600, NOW, expired=error)
        == "message_not_yet_valid"
    )


@given(created_at=times, ttl=st.integers(1, 10**6), now=times)
def test_freshness_is_exactly_the_window(created_at: int, ttl: int, now: int) -> None:
    expires_at = created_at + ttl
    code = refusal(created_at, expires_at, now)
    if created_at > now + CLOCK_SKEW_MAX_S:
        assert code == "message_not_yet_valid"
    elif now >= expires_at:
        assert code == "message_expired"
    else:
        assert code is None


# --- Retention: forgetting an id never opens a replay ----------------------------------------


def test_retain_until_covers_expiry_plus_skew() -> None:
    assert retain_until(NOW, NOW + 600) == NOW + 600 + CLOCK_SKEW_MAX_S
    assert retain_until(NOW, None) == NOW + MESSAGE_TTL_MAX_S + CLOCK_SKEW_MAX_S
    assert retain_until(NOW, None, skew_s=0, max_age_s=10) == NOW + 10


@given(
    created_at=times,
    ttl=st.one_of(st.none(), st.integers(1, 10**6)),
    skew_s=st.integers(0, 300),
    max_age_s=st.integers(1, 10**6),
    now=times,
)
def test_nothing_is_accepted_once_its_id_may_be_forgotten(
    created_at: int, ttl: int | None, skew_s: int, max_age_s: int, now: int
) -> None:
    expires_at = None if ttl is None else created_at + ttl
    options = {"skew_s": skew_s, "max_age_s": max_age_s}
    forget_at = retain_until(created_at, expires_at, **options)
    if refusal(created_at, expires_at, now, **options) is None:
        assert now < forget_at
    if now >= forget_at:
        assert refusal(created_at, expires_at, now, **options) == "message_expired"


@given(
    created_at=times,
    ttl=st.one_of(st.none(), st.integers(1, 10**6)),
    skew_s=st.integers(0, 300),
)
def test_retain_until_is_at_least_the_last_accepted_moment(
    created_at: int, ttl: int | None, skew_s: int
) -> None:
    expires_at = None if ttl is None else created_at + ttl
    last_accepted = (expires_at if expires_at is not None else created_at + MESSAGE_TTL_MAX_S) - 1
    assert refusal(created_at, expires_at, last_accepted, skew_s=skew_s) is None
    assert refusal(created_at, expires_at, last_accepted + 1, skew_s=skew_s) == "message_expired"
    assert retain_until(created_at, expires_at, skew_s=skew_s) > last_accepted
