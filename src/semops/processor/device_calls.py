"""Who is calling: the enrolled device behind a wallet call's `SEMOPS-Device` header.

Shared by the wallet API (`app.py`) and the web wallet's own endpoints (`wallet_web/`):
the device authorisation is bound to the method, the path with its query and the body.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from semops.processor.enrolment import Customers


def call_path(request: Request) -> str:
    """The path a device authorisation names: the path and, if any, its query."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def calling_device(
    customers: Customers, request: Request, authorization: str | None
) -> dict[str, Any]:
    """The active device that signed this very call (refused otherwise)."""
    body = await request.body()
    return await customers.authenticate(authorization, request.method, call_path(request), body)
