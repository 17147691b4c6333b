"""Back-office sign-in: operator sessions, their CSRF tokens, and bounded sign-in attempts.

Theory of operation. The operator proves itself once with the operator token (the Bearer
token of the admin API, DATA/<id>/operator.token), compared in constant time. It then gets
a session: a random 256-bit id in an HttpOnly, SameSite=Strict cookie scoped to
/backoffice. The server keeps, per session, only the SHA-256 of that id (so this table
holds no usable credential), a CSRF token bound to it, a short public reference for the
audit log, and its times. A session ends at logout, after SESSION_IDLE_S without use, or
SESSION_LIFETIME_S after sign-in, whichever comes first.

Sessions live in the processor's memory, not its database: a back-office session is a
convenience on top of a credential the operator already holds, so a restart that signs
every operator out costs one sign-in and loses nothing, while the database stays free of
session secrets and needs no new table. A processor serves its public port from one
process; a deployment with several workers per processor must pin /backoffice to one of
them (sticky routing), or they would not share sessions.

Failed sign-ins are counted per client address in a fixed window (semops.service.throttle,
shared with the merchant's shop pages); past the bound that address is refused, even with
the right token, until the window ends. The answer to a wrong token is always the same
sentence, so nothing tells one wrong token from another.
Every number here is bounded, and every clock read is the injected clock's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final

from semops.core.clock import Clock

# The sign-in throttle and the token check are the shared kit of every token sign-in page.
from semops.service.throttle import (
    LOGIN_CLIENTS_MAX,
    LOGIN_FAILURES_MAX,
    LOGIN_WINDOW_S,
    OVERFLOW_CLIENT,
    TOKEN_INPUT_MAX_CHARS,
    LoginThrottle,
    token_matches,
)

# An operator at the desk works in bursts; a quarter of an hour idle means they left.
SESSION_IDLE_S: Final = 15 * 60
# A working day at most, then sign in again (the token may have been rotated meanwhile).
SESSION_LIFETIME_S: Final = 8 * 60 * 60
# A processor has a handful of operators; beyond this the least recently used is ended,
# so the table can never grow without bound.
SESSIONS_MAX: Final = 64
# Messages shown once on the next page (after a redirect): a few at most.
FLASH_MAX: Final = 4
# The audit actor of a back-office session: "operator:backoffice:" + 12 hex digits of the
# session id's digest (48 bits): tells sessions apart, and is no credential.
AUDIT_ACTOR_PREFIX: Final = "operator:backoffice:"
SESSION_REF_HEX_CHARS: Final = 12


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Flash:
    """A message for the next page: `kind` is "status" (done) or "alert" (refused)."""

    kind: str
    text: str


@dataclass(slots=True)
class Session:
    digest: str  # SHA-256 of the cookie value; the value itself is never kept
    csrf_token: str
    ref: str  # short public reference, written to the audit log as part of the actor
    created_at: int
    last_seen_at: int
    flashes: list[Flash] = field(default_factory=list)

    @property
    def actor(self) -> str:
        return AUDIT_ACTOR_PREFIX + self.ref

    def csrf_ok(self, given: str | None) -> bool:
        if not given or len(given) > TOKEN_INPUT_MAX_CHARS:
            return False
        return hmac.compare_digest(given.encode("utf-8"), self.csrf_token.encode("utf-8"))

    def flash(self, kind: str, text: str) -> None:
        self.flashes = [*self.flashes, Flash(kind, text)][-FLASH_MAX:]

    def take_flashes(self) -> list[Flash]:
        taken, self.flashes = self.flashes, []
        return taken


class Sessions:
    """The signed-in operators of one processor process."""

    def __init__(
        self,
        clock: Clock,
        *,
        idle_s: int = SESSION_IDLE_S,
        lifetime_s: int = SESSION_LIFETIME_S,
        sessions_max: int = SESSIONS_MAX,
    ) -> None:
        self.clock = clock
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s
        self.sessions_max = sessions_max
        self._by_digest: dict[str, Session] = {}

    def open(self) -> tuple[str, Session]:
        """A new session: (the cookie value, to send once; the session)."""
        now = self.clock.now()
        self._prune(now)
        while len(self._by_digest) >= self.sessions_max:
            oldest = min(self._by_digest.values(), key=lambda s: s.last_seen_at)
            del self._by_digest[oldest.digest]
        cookie = secrets.token_urlsafe(32)
        digest = _digest(cookie)
        session = Session(
            digest=digest,
            csrf_token=secrets.token_urlsafe(32),
            ref=digest[:SESSION_REF_HEX_CHARS],
            created_at=now,
            last_seen_at=now,
        )
        self._by_digest[digest] = session
        return cookie, session

    def get(self, cookie: str | None) -> Session | None:
        """The live session of a cookie value (and mark it used), or None."""
        if not cookie or len(cookie) > TOKEN_INPUT_MAX_CHARS:
            return None
        now = self.clock.now()
        session = self._by_digest.get(_digest(cookie))
        if session is None:
            return None
        if self._expired(session, now):
            del self._by_digest[session.digest]
            return None
        session.last_seen_at = now
        return session

    def close(self, session: Session) -> None:
        self._by_digest.pop(session.digest, None)

    def __len__(self) -> int:
        return len(self._by_digest)

    def _expired(self, session: Session, now: int) -> bool:
        return (
            now - session.last_seen_at >= self.idle_s or now - session.created_at >= self.lifetime_s
        )

    def _prune(self, now: int) -> None:
        for session in [s for s in self._by_digest.values() if self._expired(s, now)]:
            del self._by_digest[session.digest]


__all__ = [
    "LOGIN_CLIENTS_MAX",
    "LOGIN_FAILURES_MAX",
    "LOGIN_WINDOW_S",
    "OVERFLOW_CLIENT",
    "TOKEN_INPUT_MAX_CHARS",
    "Flash",
    "LoginThrottle",
    "Session",
    "Sessions",
    "token_matches",
]
