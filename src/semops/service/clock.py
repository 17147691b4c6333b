"""The system clock, for the shells (the pure core takes `now` as an argument)."""

from __future__ import annotations

import time


class SystemClock:
    def now(self) -> int:
        return int(time.time())
