"""Time as an argument.

The pure packages never read the clock: they take `now` (integer Unix seconds, UTC) as a
parameter. Shells hold a `Clock` (the system clock lives in the shells, never here) and pass
`clock.now()` in; tests pass a `FixedClock`.
"""

from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now(self) -> int:
        """Integer Unix seconds, UTC."""
        ...


class FixedClock:
    """A clock that moves only when told to: for tests and deterministic vectors."""

    def __init__(self, start: int) -> None:
        self._now = start

    def now(self) -> int:
        return self._now

    def advance(self, seconds: int) -> None:
        self._now += seconds
