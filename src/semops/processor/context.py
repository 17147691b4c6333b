"""What every part of a processor shares: settings, keys, database, clock, the router.

Also the few helpers the parts have in common: fresh ids, building a message from fields
(turning a validation failure into the registry's `validation_failed`), and reading the
router's answer to a prepare, a refund or a status query.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import structlog
from pydantic import ValidationError

from semops.core.clock import Clock
from semops.core.encoding import b64url_encode
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import ID_RANDOM_BYTES, ROUTER_CALL_TIMEOUT_S, ROUTER_QUERY_TIMEOUT_S
from semops.processor.directory import DirectoryCache, HttpClient, Reply, RouterLink
from semops.processor.keys import ProcessorKeys
from semops.processor.metrics import Metrics
from semops.processor.settings import ProcessorSettings
from semops.protocol import Message, TransferStatus, sign
from semops.service.app import JOSE, PROBLEM_JSON
from semops.service.http import error_from_problem
from semops.store.db import Database

log = structlog.get_logger("semops.processor")

M = TypeVar("M", bound=Message)
TRANSFERS_PATH: Final = "/v1/transfers"
REFUNDS_PATH: Final = "/v1/refunds"


@dataclass
class Context:
    settings: ProcessorSettings
    keys: ProcessorKeys
    database: Database
    clock: Clock
    directory: DirectoryCache
    router: RouterLink
    webhooks: HttpClient
    metrics: Metrics = field(default_factory=Metrics)
    outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    # The webhook deliverer's `offer` (semops.service.outbox), wired in by Payees.
    offer_notices: Callable[[list[dict[str, Any]]], None] | None = None

    def notices_committed(self, queued: list[dict[str, Any]]) -> None:
        """Notices queued by a transaction that has now committed: on their way without a
        look at the outbox (before the commit, the deliverer could look and not see them)."""
        if not queued:
            return
        if self.offer_notices is not None:
            self.offer_notices(queued)
        else:
            self.outbox_wakeup.set()

    @property
    def processor_id(self) -> str:
        return self.settings.processor_id

    def sign(self, message: Message) -> str:
        return sign(message, self.keys.sign_key)


def new_id(prefix: str) -> str:
    """A fresh id with a short prefix, for the processor's own records (customers, accounts)."""
    return f"{prefix}_{b64url_encode(secrets.token_bytes(ID_RANDOM_BYTES))}"


def new_network_id(kind: IdKind) -> str:
    return make_id(kind, secrets.token_bytes(ID_RANDOM_BYTES))


def build(cls: type[M], **fields: Any) -> M:
    """A message from Python values; invalid values are `validation_failed` (no input echoed)."""
    try:
        return cls.model_validate(fields)
    except ValidationError as error:
        problems = [
            ".".join(str(part) for part in item["loc"]) or "(message)"
            for item in error.errors(include_input=False, include_url=False, include_context=False)
        ]
        raise SemopsError(
            E.VALIDATION_FAILED, f"invalid {', '.join(problems[:3])}", fields=problems[:20]
        ) from None


@dataclass(frozen=True, slots=True)
class RouterVerdict:
    """The router's answer: a signed status, a refusal before recording, or nothing known."""

    status: TransferStatus | None = None
    refused: SemopsError | None = None

    @property
    def unknown(self) -> bool:
        return self.status is None and self.refused is None


async def read_router_reply(context: Context, reply: Reply) -> RouterVerdict:
    """200/202 with a router-signed status; a 4xx problem (not recorded); else unknown."""
    if reply.status in (200, 202) and reply.content_type == JOSE:
        try:
            status = await context.directory.open_from_router(reply.text(), TransferStatus)
        except SemopsError as error:
            log.warning("router_answer_refused", code=error.code)
            return RouterVerdict()
        return RouterVerdict(status=status)
    if 400 <= reply.status < 500 and reply.content_type == PROBLEM_JSON:
        refusal = error_from_problem(reply.status, reply.content_type, reply.body)
        # A conflict means the router holds *a* transfer under this id: it was recorded.
        if refusal.spec is not E.IDEMPOTENCY_CONFLICT:
            return RouterVerdict(refused=refusal)
    return RouterVerdict()


async def send_to_router(context: Context, path: str, token: str) -> RouterVerdict:
    try:
        reply = await context.router.call("POST", path, jose=token, timeout_s=ROUTER_CALL_TIMEOUT_S)
    except SemopsError as error:
        log.warning("router_unreachable", code=error.code, path=path)
        return RouterVerdict()
    return await read_router_reply(context, reply)


async def ask_router(context: Context, transfer_id: str) -> RouterVerdict:
    """The router's word on a transfer or refund id (refused with not_found: never recorded)."""
    try:
        reply = await context.router.call(
            "GET", f"{TRANSFERS_PATH}/{transfer_id}", timeout_s=ROUTER_QUERY_TIMEOUT_S
        )
    except SemopsError as error:
        log.info("router_status_unavailable", transfer_id=transfer_id, code=error.code)
        return RouterVerdict()
    verdict = await read_router_reply(context, reply)
    if verdict.status is not None and verdict.status.transfer_id != transfer_id:
        log.warning("router_status_for_other_transfer", transfer_id=transfer_id)
        return RouterVerdict()
    return verdict
