"""The processor's back office: operator pages under /backoffice on the public port.

Sign in with the operator token; then customers and their accounts, balances and devices,
transfers and their states, locked PIN credentials (unlock is audited with the session),
the net position against the router and the money held in reservations.
"""

from semops.processor.backoffice.pages import PREFIX, SESSION_COOKIE, backoffice_router
from semops.processor.backoffice.sessions import LoginThrottle, Session, Sessions

__all__ = [
    "PREFIX",
    "SESSION_COOKIE",
    "LoginThrottle",
    "Session",
    "Sessions",
    "backoffice_router",
]
