"""Signed-in shop pages: server-side sessions in the merchant's database, and the sign-in
throttle. The rules are in `semops.merchant.pages` (what a cookie is, when a session is
live); this is the shell that stores them.

A session is revocable because the server holds it: logout deletes its row and the cookie
is worth nothing from that moment, wherever a copy of it went. Each lives at most
SESSION_TTL_S from sign-in, and at most SESSIONS_MAX are kept. The throttle is in memory
per process (a backend with several workers lets a guesser try that many times more per
window: still a handful against a token of 96 bits or more).
"""

from __future__ import annotations

import secrets

from semops.core.clock import Clock
from semops.merchant.pages import (
    SESSION_TTL_S,
    SESSIONS_MAX,
    session_digest,
    session_live,
    token_digest,
)
from semops.service.throttle import LoginThrottle
from semops.store import merchant as store
from semops.store.db import Database

# The cookie: 32 random bytes, base64url (43 characters).
SESSION_COOKIE_BYTES = 32


class ShopSessions:
    """The sessions of the shop pages of one merchant backend, under one API token."""

    def __init__(self, database: Database, clock: Clock, api_token: str) -> None:
        self.database = database
        self.clock = clock
        self._api_token = api_token
        self.throttle = LoginThrottle(clock)

    async def open(self) -> str:
        """A new session; the cookie value, to send once (only its digest is kept)."""
        cookie = secrets.token_urlsafe(SESSION_COOKIE_BYTES)
        digest = session_digest(cookie)
        assert digest is not None
        now = self.clock.now()
        row = {
            "session_digest": digest,
            "token_digest": token_digest(self._api_token),
            "created_at": now,
            "expires_at": now + SESSION_TTL_S,
        }
        async with self.database.write() as connection:
            await store.open_session(connection, row, now, SESSIONS_MAX)
        return cookie

    async def live(self, cookie: str | None) -> bool:
        digest = session_digest(cookie)
        if digest is None:
            return False
        async with self.database.read() as connection:
            session = await store.get_session(connection, digest)
        return session_live(session, self._api_token, self.clock.now())

    async def close(self, cookie: str | None) -> None:
        digest = session_digest(cookie)
        if digest is None:
            return
        async with self.database.write() as connection:
            await store.close_session(connection, digest)


__all__ = ["SESSION_COOKIE_BYTES", "ShopSessions"]
