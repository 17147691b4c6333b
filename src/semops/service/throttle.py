"""Bounded sign-in attempts, and the constant-time check of a typed token: one kit for
every page that signs people in with a token (the processor's back office, the merchant's
shop pages).

Theory of operation. Failed sign-ins are counted per client address in a fixed window; past
the bound that address is refused, even with the right token, until the window ends, so a
guesser gets a handful of tries per window however fast it asks. The number of addresses
tracked is bounded too: past it, new addresses share one bucket, so a flood of addresses
cannot push out the record of the one guessing. The client address is the caller's to
give (the socket's peer; a forwarded header only from a proxy it trusts). Every clock read
is the injected clock's.
"""

from __future__ import annotations

import hmac
from typing import Final

from semops.core.clock import Clock

# Wrong tokens per client address before it must wait: a person mistyping a long token
# gets five tries; a guesser gets nowhere (the tokens have 96 bits and more).
LOGIN_FAILURES_MAX: Final = 5
LOGIN_WINDOW_S: Final = 15 * 60
# Client addresses tracked at once; past that, new addresses share one bucket, so a
# flood of addresses cannot push out the record of the one guessing.
LOGIN_CLIENTS_MAX: Final = 1024
OVERFLOW_CLIENT: Final = "*"
# A token as typed: the stored ones are at most 64 characters; anything much longer is
# not a token and is refused before it is compared.
TOKEN_INPUT_MAX_CHARS: Final = 256


def token_matches(given: str, expected: str) -> bool:
    """A token as typed against the real one, in constant time."""
    candidate = given.strip()
    if not candidate or len(candidate) > TOKEN_INPUT_MAX_CHARS:
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


class LoginThrottle:
    """Failed sign-ins per client address in fixed windows of LOGIN_WINDOW_S."""

    def __init__(
        self,
        clock: Clock,
        *,
        failures_max: int = LOGIN_FAILURES_MAX,
        window_s: int = LOGIN_WINDOW_S,
        clients_max: int = LOGIN_CLIENTS_MAX,
    ) -> None:
        self.clock = clock
        self.failures_max = failures_max
        self.window_s = window_s
        self.clients_max = clients_max
        self._failures: dict[str, tuple[int, int]] = {}  # client -> (window start, count)

    def _key(self, client: str) -> str:
        if client in self._failures or len(self._failures) < self.clients_max:
            return client
        now = self.clock.now()
        for stale in [
            k for k, (start, _) in self._failures.items() if now - start >= self.window_s
        ]:
            del self._failures[stale]
        return client if len(self._failures) < self.clients_max else OVERFLOW_CLIENT

    def _current(self, key: str) -> int:
        start, count = self._failures.get(key, (0, 0))
        if self.clock.now() - start >= self.window_s:
            self._failures.pop(key, None)
            return 0
        return count

    def blocked(self, client: str) -> bool:
        return self._current(self._key(client)) >= self.failures_max

    def wait_s(self, client: str) -> int:
        """Seconds until a blocked client may try again (0 when it may now)."""
        key = self._key(client)
        if self._current(key) < self.failures_max:
            return 0
        start, _ = self._failures[key]
        return max(0, start + self.window_s - self.clock.now())

    def failed(self, client: str) -> None:
        key = self._key(client)
        count = self._current(key)
        start = self._failures[key][0] if count else self.clock.now()
        self._failures[key] = (start, count + 1)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


__all__ = [
    "LOGIN_CLIENTS_MAX",
    "LOGIN_FAILURES_MAX",
    "LOGIN_WINDOW_S",
    "OVERFLOW_CLIENT",
    "TOKEN_INPUT_MAX_CHARS",
    "LoginThrottle",
    "token_matches",
]
