"""Structured logs with an allowlist: a field that is not listed is never written.

Every service logs JSON lines to a file in its data directory. Secrets must not reach a
log by accident, so the last processor drops every key not in `ALLOWED_FIELDS` (a PIN,
PIN block, key, API credential or bearer token has no field here) and string values are
cut to a bounded length. Adding a field is a reviewed change to this list.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Final

import structlog

from semops.service.files import open_private_log

ALLOWED_FIELDS: Final = frozenset(
    {
        "event", "level", "timestamp", "logger",
        "participant", "processor", "router", "status", "state", "code", "kind",
        "transfer_id", "refund_id", "request_id", "order_id", "merchant_id", "account_id", "kid",
        "amount_minor", "currency", "attempts", "destination", "path", "method",
        "port", "operator_port", "public_port", "scheme_port", "count", "duration_ms",
        "error_type", "reason_code", "outcome", "serial",
    }
)  # fmt: skip
LOG_VALUE_MAX_CHARS: Final = 200


def _allowlist(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key not in ALLOWED_FIELDS:
            del event[key]
        elif isinstance(event[key], str) and len(event[key]) > LOG_VALUE_MAX_CHARS:
            event[key] = event[key][:LOG_VALUE_MAX_CHARS] + "…"
    return event


def configure_logging(log_file: Path | None, *, level: int = logging.INFO) -> None:
    """JSON lines to `log_file` (or stderr), through the allowlist."""
    if log_file is not None:
        stream: Any = open_private_log(log_file)  # 0600 in a 0700 folder
    else:
        stream = sys.stderr
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _allowlist,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
