"""FixedClock: the test clock moves only when a test tells it to."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from semops.core import Clock, FixedClock


def test_fixed_clock_reads_the_same_time_until_advanced() -> None:
    clock = FixedClock(1_700_000_000)
    assert clock.now() == 1_700_000_000
    assert clock.now() == 1_700_000_000


def test_fixed_clock_advances_by_exactly_the_seconds_given() -> None:
    clock = FixedClock(1_700_000_000)
    clock.advance(30)
    assert clock.now() == 1_700_000_030
    clock.advance(0)
    assert clock.now() == 1_700_000_030
    clock.advance(-10)  # tests of clock skew move time backwards
    assert clock.now() == 1_700_000_020


def test_fixed_clocks_do_not_share_time() -> None:
    first, second = FixedClock(100), FixedClock(100)
    first.advance(5)
    assert (first.now(), second.now()) == (105, 100)


def test_fixed_clock_returns_integer_seconds_and_satisfies_the_clock_protocol() -> None:
    clock: Clock = FixedClock(0)
    assert type(clock.now()) is int


@given(
    start=st.integers(min_value=0, max_value=2**40),
    steps=st.lists(st.integers(min_value=-(10**6), max_value=10**9), max_size=20),
)
def test_fixed_clock_is_the_start_plus_the_sum_of_every_advance(
    start: int, steps: list[int]
) -> None:
    clock = FixedClock(start)
    for step in steps:
        before = clock.now()
        assert clock.now() == before  # reading never moves it
        clock.advance(step)
        assert clock.now() == before + step
    assert clock.now() == start + sum(steps)
