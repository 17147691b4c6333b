"""The router's HTTP surface: a scheme app (mutual TLS) and an operator app (loopback;
admin calls and `/metrics`, all behind the operator token).

Thin: each route reads the JOSE body, calls the `Router` (or its `Settlement`), and answers
a JOSE token or JSON. Decided transfers answer 200, undecided ones 202 (the caller asks
again). Settlement reads on the scheme port take a signed query in the Authorization
header (`SEMOPS-Participant <JWS>`) and answer router-signed JWS.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from semops.audit.report import WINDOW_ID_MAX
from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import AMOUNT_MAX_MINOR, ID_MAX_CHARS, ID_MIN_CHARS
from semops.router.service import Outcome, Router
from semops.router.settlement import Settlement
from semops.service.app import create_app, jose_response, read_jose

TRANSFERS = Counter("semops_router_transfers_total", "Transfers answered", ["kind", "outcome"])

TransferIdPath = Annotated[
    str, Path(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
Auth = Annotated[str | None, Header()]
ParticipantPath = Annotated[str, Path(min_length=2, max_length=32, pattern=r"^[a-z0-9-]+$")]
WindowPath = Annotated[int, Path(ge=1, le=WINDOW_ID_MAX)]


def _answer(outcome: Outcome, kind: str) -> Response:
    TRANSFERS.labels(kind, "decided" if outcome.decided else "pending").inc()
    return jose_response(outcome.token, 200 if outcome.decided else 202)


def create_scheme_app(router: Router, settlement: Settlement | None = None) -> FastAPI:
    app = create_app("SEMOPS router (scheme)", version="1")
    settled = settlement or Settlement(router)

    @app.get("/v1/directory")
    async def directory() -> dict[str, str]:
        return router.directory_document()

    @app.post("/v1/participants")
    async def register(request: Request) -> dict[str, str]:
        return await router.register(await read_jose(request))

    @app.post("/v1/transfers")
    async def prepare(request: Request) -> Response:
        return _answer(await router.prepare(await read_jose(request)), "payment")

    @app.get("/v1/transfers/{transfer_id}")
    async def status(transfer_id: TransferIdPath) -> Response:
        return _answer(await router.transfer_status(transfer_id), "status")

    @app.post("/v1/refunds")
    async def refund(request: Request) -> Response:
        return _answer(await router.refund(await read_jose(request)), "refund")

    @app.get("/v1/settlement/windows/{window_id}")
    async def statement(
        window_id: WindowPath, request: Request, authorization: Auth = None
    ) -> Response:
        participant = settled.authenticate(authorization, request.url.path)
        return jose_response(await settled.statement(window_id, participant))

    @app.get("/v1/settlement/headroom")
    async def headroom(request: Request, authorization: Auth = None) -> Response:
        participant = settled.authenticate(authorization, request.url.path)
        return jose_response(await settled.headroom(participant))

    _add_health(app)
    return app


class CapBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    net_debit_cap_minor: Annotated[int, Field(ge=0, le=AMOUNT_MAX_MINOR)] | None


def create_operator_app(
    router: Router, operator_token: bytes, settlement: Settlement | None = None
) -> FastAPI:
    app = create_app("SEMOPS router (operator)", version="1")
    settled = settlement or Settlement(router)

    def authorise(authorization: str | None) -> None:
        expected = b"Bearer " + operator_token
        if authorization is None or not hmac.compare_digest(
            authorization.encode("utf-8", errors="replace"), expected
        ):
            raise SemopsError(E.UNAUTHENTICATED)

    @app.get("/v1/admin/positions")
    async def positions(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return {"positions": await router.positions()}

    @app.post("/v1/admin/participants/{participant_id}/suspend", status_code=204)
    async def suspend(participant_id: ParticipantPath, authorization: Auth = None) -> None:
        authorise(authorization)
        await router.set_status(participant_id, "suspended")

    @app.post("/v1/admin/participants/{participant_id}/resume", status_code=204)
    async def resume(participant_id: ParticipantPath, authorization: Auth = None) -> None:
        authorise(authorization)
        await router.set_status(participant_id, "active")

    @app.put("/v1/admin/participants/{participant_id}/cap", status_code=204)
    async def cap(
        participant_id: ParticipantPath, body: CapBody, authorization: Auth = None
    ) -> None:
        authorise(authorization)
        await router.set_cap(participant_id, body.net_debit_cap_minor)

    @app.post("/v1/admin/windows/close")
    async def close_window(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return await settled.close_window()

    @app.get("/v1/admin/windows")
    async def windows(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return {"windows": await settled.windows()}

    @app.get("/v1/admin/windows/{window_id}")
    async def window(window_id: WindowPath, authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return await settled.window(window_id)

    @app.post("/v1/admin/audit/checkpoint")
    async def checkpoint(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return {"sealed_seq": await router.audit.seal()}

    # Only here, behind the operator token: transfer counts per outcome, read around a
    # payment, would tell a participant about other participants' traffic.
    @app.get("/metrics")
    async def metrics(authorization: Auth = None) -> Response:
        authorise(authorization)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    _add_health(app)
    return app


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}
