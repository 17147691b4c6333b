"""The router's HTTP surface: a scheme app (mutual TLS) and an operator app (loopback;
admin calls and `/metrics`, all behind the operator token).

Thin: each route reads the JOSE body, calls the `Router` (or its `Settlement`), and answers
a JOSE token or JSON. Decided transfers answer 200, undecided ones 202 (the caller asks
again). Settlement reads on the scheme port take a signed query in the Authorization
header (`SEMOPS-Participant <JWS>`) and answer router-signed JWS.

Every scheme route runs behind `SchemePeerGate` (service/tls.py): only a processor's
signing certificate, not revoked, gets through, and the route hands its participant id to
the router, which refuses a message naming another sender. A registration that changes a
participant without its current key's signature answers 202 with the held registration's
id; the operator app lists, approves and rejects those, and revokes keys and certificates.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from semops.audit.report import WINDOW_ID_MAX
from semops.core.errors import E, SemopsError
from semops.core.ids import ID_PATTERN
from semops.core.limits import AMOUNT_MAX_MINOR, ID_MAX_CHARS, ID_MIN_CHARS, KID_MAX_CHARS
from semops.crypto.pki import parse_serial
from semops.protocol import require_same_party
from semops.router.service import Outcome, Router
from semops.router.settlement import Settlement
from semops.service.app import create_app, jose_response, read_jose
from semops.service.lean import jose_route
from semops.service.metrics import database_registry, render_metrics
from semops.service.tls import SchemePeerGate, scheme_peer

TRANSFERS = Counter("semops_router_transfers_total", "Transfers answered", ["kind", "outcome"])

TransferIdPath = Annotated[
    str, Path(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
Auth = Annotated[str | None, Header()]
ParticipantPath = Annotated[str, Path(min_length=2, max_length=32, pattern=r"^[a-z0-9-]+$")]
WindowPath = Annotated[int, Path(ge=1, le=WINDOW_ID_MAX)]
RegistrationPath = Annotated[
    str, Path(min_length=25, max_length=25, pattern=r"^rg_[A-Za-z0-9_-]{22}$")
]
KidPath = Annotated[
    str, Path(min_length=1, max_length=KID_MAX_CHARS, pattern=r"^[A-Za-z0-9._~:-]+$")
]
SerialPath = Annotated[str, Path(min_length=1, max_length=42, pattern=r"^(0x)?[0-9A-Fa-f:]+$")]
RegistrationState = Annotated[Literal["pending", "approved", "rejected", "all"], Query()]


def _answer(outcome: Outcome, kind: str) -> Response:
    TRANSFERS.labels(kind, "decided" if outcome.decided else "pending").inc()
    return jose_response(outcome.token, 200 if outcome.decided else 202)


def create_scheme_app(router: Router, settlement: Settlement | None = None) -> FastAPI:
    app = create_app("SEMOPS router (scheme)", version="1")
    settled = settlement or Settlement(router)

    def caller(request: Request) -> str:
        return scheme_peer(request).party_id

    @app.get("/v1/directory")
    async def directory() -> dict[str, str]:
        return router.directory_document()

    @app.post(
        "/v1/participants",
        responses={202: {"description": "The change is held for the scheme operator"}},
    )
    async def register(request: Request) -> Response:
        answer = await router.register(await read_jose(request), tls_party=caller(request))
        if answer.held is None:
            return JSONResponse(answer.document)
        held = {"registration": "held", "registration_id": answer.held}
        return JSONResponse(answer.document | held, status_code=202)

    async def prepare(token: str, scope: Scope) -> Response:
        return _answer(
            await router.prepare(token, tls_party=scheme_peer(scope).party_id), "payment"
        )

    # Lean (service/lean.py): a payment's one call at the router, kept out of FastAPI's stack.
    jose_route(app, "/v1/transfers", prepare)

    @app.get("/v1/transfers/{transfer_id}")
    async def status(transfer_id: TransferIdPath, request: Request) -> Response:
        outcome = await router.transfer_status(transfer_id, tls_party=caller(request))
        return _answer(outcome, "status")

    @app.post("/v1/refunds")
    async def refund(request: Request) -> Response:
        token = await read_jose(request)
        return _answer(await router.refund(token, tls_party=caller(request)), "refund")

    def participant(request: Request, authorization: str | None) -> str:
        named = settled.authenticate(authorization, request.url.path)
        require_same_party(named, caller(request))
        return named

    @app.get("/v1/settlement/windows/{window_id}")
    async def statement(
        window_id: WindowPath, request: Request, authorization: Auth = None
    ) -> Response:
        return jose_response(
            await settled.statement(window_id, participant(request, authorization))
        )

    @app.get("/v1/settlement/headroom")
    async def headroom(request: Request, authorization: Auth = None) -> Response:
        return jose_response(await settled.headroom(participant(request, authorization)))

    _add_health(app)
    # Outermost, in front of the lean routes too: nothing on this port answers a caller that
    # is not a processor.
    app.add_front_middleware(
        SchemePeerGate,
        root=router.identity.root_certificate,
        role="processor",
        revoked_serials=lambda: router.revoked_serials,
        clock=router.clock,
    )
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

    @app.get("/v1/admin/registrations")
    async def registrations(
        request: Request, authorization: Auth = None, state: RegistrationState = "pending"
    ) -> dict[str, Any]:
        authorise(authorization)
        # One `state` at most and nothing else: an unknown or repeated parameter is a
        # mistake to point out, not something to ignore.
        keys = [key for key, _ in request.query_params.multi_items()]
        if any(key != "state" for key in keys) or len(keys) > 1:
            raise SemopsError(E.VALIDATION_FAILED, "the only query parameter is one state")
        held = await router.participants.held(None if state == "all" else state)
        return {"registrations": held}

    @app.post("/v1/admin/registrations/{registration_id}/approve")
    async def approve(registration_id: RegistrationPath, authorization: Auth = None) -> Any:
        authorise(authorization)
        return await router.participants.approve(registration_id)

    @app.post("/v1/admin/registrations/{registration_id}/reject")
    async def reject(registration_id: RegistrationPath, authorization: Auth = None) -> Any:
        authorise(authorization)
        return await router.participants.reject(registration_id)

    @app.post("/v1/admin/participants/{participant_id}/keys/{kid}/revoke")
    async def revoke_key(
        participant_id: ParticipantPath, kid: KidPath, authorization: Auth = None
    ) -> dict[str, Any]:
        authorise(authorization)
        return await router.participants.revoke_key(participant_id, kid)

    @app.post("/v1/admin/certificates/{serial}/revoke")
    async def revoke_certificate(serial: SerialPath, authorization: Auth = None) -> Any:
        authorise(authorization)
        try:
            number = parse_serial(serial)
        except ValueError as error:
            raise SemopsError(E.VALIDATION_FAILED, str(error)) from None
        return await router.participants.revoke_certificate(number)

    @app.get("/v1/admin/revocations")
    async def revocations(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return {"revocations": await router.participants.revocations()}

    @app.post("/v1/admin/audit/checkpoint")
    async def checkpoint(authorization: Auth = None) -> dict[str, Any]:
        authorise(authorization)
        return {"sealed_seq": await router.audit.seal()}

    # Only here, behind the operator token: transfer counts per outcome, read around a
    # payment, would tell a participant about other participants' traffic.
    database_metrics = database_registry(router.database)

    @app.get("/metrics")
    async def metrics(authorization: Auth = None) -> Response:
        authorise(authorization)
        text = render_metrics(REGISTRY, database_metrics)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    _add_health(app)
    return app


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}
