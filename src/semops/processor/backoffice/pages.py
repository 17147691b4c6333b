"""The back office's HTTP surface: server-rendered pages under /backoffice on the public port.

Thin, like app.py: each route checks the session (and, for a POST, its CSRF token), reads
through `queries` or calls the processor's existing operator actions, and renders a Jinja2
template. The actions are the admin API's own (unlock a PIN credential, revoke a device,
issue an activation code, reset a PIN), audited by `AuditedCustomers` with this session's
actor. An activation code is shown once, as a flash of the page the action returns to.

Every answer carries a Content-Security-Policy that allows no script at all and styles
only from this origin, plus no-store, nosniff and no-referrer: the pages hold customers'
names and phone numbers. A POST is accepted only with the session's CSRF token (and, when
the browser sends one, a same-origin Origin header); without it nothing changes.
Operating errors become a page with a sentence and what to do next, never a trace.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from semops.core.errors import E, SemopsError
from semops.core.limits import WALLET_HISTORY_MAX
from semops.core.money import format_amount
from semops.processor import accounts
from semops.processor.audited import AuditedCustomers
from semops.processor.backoffice import queries
from semops.processor.backoffice.sessions import (
    SESSION_LIFETIME_S,
    TOKEN_INPUT_MAX_CHARS,
    LoginThrottle,
    Session,
    Sessions,
    token_matches,
)
from semops.processor.service import Processor
from semops.store import processor as store

log = structlog.get_logger("semops.processor.backoffice")

PREFIX: Final = "/backoffice"
SESSION_COOKIE: Final = "semops_backoffice"
# The sign-in form's own CSRF token (double submit): there is no session yet to bind it to.
LOGIN_COOKIE: Final = "semops_backoffice_login"
LOGIN_FORM_TTL_S: Final = 30 * 60
# A back-office form has a token and a few short fields: 4 KiB is plenty.
FORM_MAX_BYTES: Final = 4096
FORM_FIELDS_MAX: Final = 8
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_STATIC: Final = {"backoffice.css": "text/css; charset=utf-8"}
_ACCOUNT_ID: Final = re.compile(r"^[A-Za-z0-9._:+-]{1,34}$")
_KID: Final = re.compile(r"^[A-Za-z0-9._~:-]{1,64}$")

GENERIC_LOGIN_FAILURE: Final = (
    "Sign-in failed: that operator token was not accepted. Copy the token from the "
    "processor's operator.token file and try again."
)
_READABLE: Final = {
    E.NOT_FOUND.code: "There is no such record. It may have been removed; go back and reload.",
    E.ACCOUNT_UNKNOWN.code: "There is no account with that id. Check the id and try again.",
    E.UNAVAILABLE.code: "The processor's database is not answering. Wait a moment, then "
    "reload the page.",
    E.TIMEOUT.code: "The processor did not answer in time. Wait a moment, then reload.",
}


class SignInRequired(Exception):
    """A page asked for without a live session: the answer is the sign-in page."""


class PageError(Exception):
    """A request the back office refuses with a readable page (and changes nothing)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("semops.processor.backoffice", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = _money
    environment.filters["signed_money"] = _signed_money
    environment.filters["when"] = _when
    environment.filters["words"] = lambda value: str(value).replace("_", " ")
    return environment


def _money(amount_minor: int, currency: str) -> str:
    return f"{format_amount(int(amount_minor), currency)} {currency}"


def _signed_money(amount_minor: int, currency: str) -> str:
    sign = "+" if amount_minor > 0 else ""
    return f"{sign}{_money(amount_minor, currency)}"


def _when(timestamp: int | None) -> str:
    if timestamp is None:
        return "—"
    return datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= queries.PAGES_MAX:
        raise PageError(
            400,
            "No such page",
            f"Pages are numbered 1 to {queries.PAGES_MAX}. Narrow the search instead.",
        )
    return int(text)


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise PageError(404, f"No such {what}", f"That is not a valid {what} id. Check it.")
    return value


Route = Callable[..., Awaitable[Response]]


class BackOffice:
    """The pages of one processor's back office, with its sessions (see sessions.py)."""

    def __init__(self, processor: Processor) -> None:
        customers = processor.customers
        assert isinstance(customers, AuditedCustomers), "operator actions must be audited"
        self.processor = processor
        self.customers = customers
        self.sessions = Sessions(processor.context.clock)
        self.throttle = LoginThrottle(processor.context.clock)
        self.templates = _environment()

    @property
    def database(self) -> Any:
        return self.processor.context.database

    # --- rendering ------------------------------------------------------------------------

    def render(
        self,
        name: str,
        session: Session | None,
        *,
        status: int = 200,
        active: str = "",
        **context: Any,
    ) -> HTMLResponse:
        settings = self.processor.settings
        text = self.templates.get_template(name).render(
            prefix=PREFIX,
            processor_id=settings.processor_id,
            processor_name=settings.display_name,
            session=session,
            csrf_token=session.csrf_token if session is not None else "",
            flashes=session.take_flashes() if session is not None else [],
            active=active,
            **context,
        )
        return HTMLResponse(text, status_code=status, headers=dict(_PAGE_HEADERS))

    def error_page(self, error: PageError, session: Session | None) -> HTMLResponse:
        return self.render(
            "error.html",
            session,
            status=error.status,
            title=error.title,
            message=error.message,
        )

    @staticmethod
    def redirect(path: str) -> RedirectResponse:
        return RedirectResponse(PREFIX + path, status_code=303, headers=dict(_PAGE_HEADERS))

    def readable(self, route: Route) -> Route:
        """Turn a refusal or an operating error inside `route` into a readable page."""

        @functools.wraps(route)
        async def wrapper(request: Request, **kwargs: Any) -> Response:
            try:
                return await route(request, **kwargs)
            except SignInRequired:
                return self.redirect("/login")
            except PageError as error:
                return self.error_page(error, self.session_of(request))
            except SemopsError as error:
                log.warning("backoffice_refused", code=error.code, path=request.url.path)
                message = _READABLE.get(error.code, f"{error.spec.title}. Go back and retry.")
                page = PageError(error.spec.http_status, error.spec.title, message)
                return self.error_page(page, self.session_of(request))

        return wrapper

    # --- sessions and forms ---------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(SESSION_COOKIE))

    def require(self, request: Request) -> Session:
        session = self.session_of(request)
        if session is None:
            raise SignInRequired
        return session

    async def form(self, request: Request) -> dict[str, str]:
        body = await request.body()
        if not body:
            return {}  # a bare POST: no fields, so no CSRF token either
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            raise PageError(415, "Not a form", "Send this from the back-office page itself.")
        if len(body) > FORM_MAX_BYTES:
            raise PageError(413, "Form too large", "That form is too large. Reload and retry.")
        try:
            fields = parse_qs(
                body.decode("ascii"), keep_blank_values=True, max_num_fields=FORM_FIELDS_MAX
            )
        except (UnicodeDecodeError, ValueError):
            raise PageError(400, "Form not readable", "Reload the page and try again.") from None
        return {name: values[0] for name, values in fields.items()}

    @staticmethod
    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            # Under Referrer-Policy: no-referrer a browser sends "null" for its own forms;
            # SameSite=Strict and the CSRF token carry the check then.
            return True
        return origin == f"{request.url.scheme}://{request.url.netloc}"

    async def posted(self, request: Request) -> tuple[Session, dict[str, str]]:
        """The session and form of a state-changing POST, or a refusal changing nothing."""
        session = self.session_of(request)
        if session is None:
            raise PageError(
                401, "Not signed in", "Your session has ended. Sign in again, then retry."
            )
        fields = await self.form(request)
        if not self.same_origin(request) or not session.csrf_ok(fields.get("csrf")):
            log.warning("backoffice_csrf_refused", path=request.url.path)
            raise PageError(
                403,
                "Form refused",
                "This form did not come from your back-office session, so nothing was "
                "changed. Reload the page and try again.",
            )
        return session, fields

    def cookie_flags(self, request: Request) -> dict[str, Any]:
        return {
            "path": PREFIX,
            "httponly": True,
            "samesite": "strict",
            "secure": request.url.scheme == "https",
        }


def backoffice_router(processor: Processor) -> APIRouter:
    """The /backoffice pages of `processor` (its public app includes this router)."""
    office = BackOffice(processor)
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    _add_sign_in(router, office)
    _add_pages(router, office)
    _add_actions(router, office)
    return router


def _add_sign_in(router: APIRouter, office: BackOffice) -> None:
    @router.get("/login")
    async def login_page(request: Request) -> Response:
        if office.session_of(request) is not None:
            return office.redirect("/")
        signed_out = request.query_params.get("signed_out") == "1"
        return _login_form(office, request, status=200, signed_out=signed_out)

    @router.post("/login")
    @office.readable
    async def login(request: Request) -> Response:
        fields = await office.form(request)
        given_form = fields.get("login_csrf", "")
        expected_form = request.cookies.get(LOGIN_COOKIE, "")
        if not expected_form or not token_matches(given_form, expected_form):
            return _login_form(
                office,
                request,
                status=403,
                error="The sign-in form had expired. Enter the operator token again.",
            )
        client = _client(request)
        if office.throttle.blocked(client):
            minutes = max(1, -(-office.throttle.wait_s(client) // 60))
            log.warning("backoffice_login_throttled")
            return _login_form(
                office,
                request,
                status=429,
                error=f"Too many failed sign-ins from this address. Wait {minutes} "
                "minute(s), then try again.",
            )
        token = fields.get("token", "")[: TOKEN_INPUT_MAX_CHARS + 1]
        if not token_matches(token, office.processor.context.keys.operator_token):
            office.throttle.failed(client)
            log.warning("backoffice_login_failed")
            return _login_form(office, request, status=401, error=GENERIC_LOGIN_FAILURE)
        office.throttle.succeeded(client)
        previous = office.session_of(request)
        if previous is not None:
            office.sessions.close(previous)  # never keep a session across a new sign-in
        cookie, session = office.sessions.open()
        log.info("backoffice_signed_in", session=session.ref)
        response = office.redirect("/")
        response.set_cookie(
            SESSION_COOKIE, cookie, max_age=SESSION_LIFETIME_S, **office.cookie_flags(request)
        )
        response.delete_cookie(LOGIN_COOKIE, **office.cookie_flags(request))
        return response

    @router.post("/logout")
    @office.readable
    async def logout(request: Request) -> Response:
        session, _ = await office.posted(request)
        office.sessions.close(session)
        log.info("backoffice_signed_out", session=session.ref)
        response = office.redirect("/login?signed_out=1")
        response.delete_cookie(SESSION_COOKIE, **office.cookie_flags(request))
        return response


def _login_form(
    office: BackOffice,
    request: Request,
    *,
    status: int,
    error: str | None = None,
    signed_out: bool = False,
) -> Response:
    login_csrf = secrets.token_urlsafe(32)
    response = office.render(
        "login.html", None, status=status, error=error, login_csrf=login_csrf, signed_out=signed_out
    )
    response.set_cookie(
        LOGIN_COOKIE, login_csrf, max_age=LOGIN_FORM_TTL_S, **office.cookie_flags(request)
    )
    return response


def _add_pages(router: APIRouter, office: BackOffice) -> None:
    processor = office.processor

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        media_type = _STATIC.get(name)
        if media_type is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body = resources.files(__package__).joinpath("static", name).read_bytes()
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        return Response(body, media_type=media_type, headers=headers)

    async def overview(request: Request) -> Response:
        session = office.require(request)
        position = await processor.position()
        async with office.database.read() as connection:
            counts = await queries.overview_counts(connection)
        return office.render(
            "overview.html",
            session,
            active="overview",
            position=position,
            counts=counts,
            directory_alarm=processor.directory.entry_differences,
        )

    router.get("")(office.readable(overview))
    router.get("/")(office.readable(overview))

    async def customers(request: Request) -> Response:
        session = office.require(request)
        term = request.query_params.get("q", "").strip()
        if len(term) > queries.SEARCH_MAX_CHARS:
            raise PageError(
                400,
                "Search too long",
                f"Search for at most {queries.SEARCH_MAX_CHARS} characters of a name, "
                "a phone number or an exact account or customer id.",
            )
        page = _page_number(request)
        async with office.database.read() as connection:
            rows, more = await queries.search_customers(connection, term, page)
            total = await queries.count_customers(connection, term)
        return office.render(
            "customers.html",
            session,
            active="customers",
            term=term,
            rows=rows,
            total=total,
            page=page,
            previous_url=_list_url("/customers", q=term, page=page - 1) if page > 1 else None,
            next_url=_list_url("/customers", q=term, page=page + 1) if more else None,
        )

    router.get("/customers")(office.readable(customers))

    async def account(request: Request, account_id: str) -> Response:
        session = office.require(request)
        account_id = _checked(account_id, _ACCOUNT_ID, "account")
        async with office.database.read() as connection:
            view = await accounts.balance_view(connection, account_id)
            snapshot = await accounts.snapshot(connection, account_id)
            held = await store.held_minor(connection, account_id)
            customer = await queries.customer_of_account(connection, account_id)
            payee = await queries.payee_of_account(connection, account_id)
            credential = await queries.credential_state(connection, account_id)
            devices = await queries.devices_of(connection, account_id)
        history = await processor.history(account_id)
        return office.render(
            "account.html",
            session,
            active="customers",
            account={**view, "kind": snapshot.kind.value, "status": snapshot.status.value},
            held_minor=held,
            customer=customer,
            payee=payee,
            credential=credential,
            devices=devices,
            movements=history["entries"][:WALLET_HISTORY_MAX],
        )

    router.get("/accounts/{account_id}")(office.readable(account))

    async def transfers(request: Request) -> Response:
        session = office.require(request)
        view = queries.TRANSFER_VIEWS.get(request.query_params.get("view", "payments"))
        if view is None:
            raise PageError(404, "No such list", "Choose one of the lists above the table.")
        state = request.query_params.get("state") or None
        if state is not None and state not in view.states:
            raise PageError(400, "No such state", f"{view.title} can be: {', '.join(view.states)}.")
        page = _page_number(request)
        async with office.database.read() as connection:
            rows, more = await queries.transfers(connection, view, state, page)
            counts = await queries.state_counts(connection, view)
        query = {"view": view.name, "state": state or ""}
        return office.render(
            "transfers.html",
            session,
            active="transfers",
            views=queries.TRANSFER_VIEWS.values(),
            view=view,
            state=state,
            rows=rows,
            counts=counts,
            page=page,
            previous_url=_list_url("/transfers", **query, page=page - 1) if page > 1 else None,
            next_url=_list_url("/transfers", **query, page=page + 1) if more else None,
        )

    router.get("/transfers")(office.readable(transfers))

    async def credentials(request: Request) -> Response:
        session = office.require(request)
        async with office.database.read() as connection:
            rows, more = await queries.locked_credentials(connection)
            recent = await queries.recent_audit(connection, ("credential_unlocked",))
        return office.render(
            "credentials.html",
            session,
            active="credentials",
            rows=rows,
            more=more,
            recent=recent[:5],
        )

    router.get("/credentials")(office.readable(credentials))

    async def audit(request: Request) -> Response:
        session = office.require(request)
        only_operator = request.query_params.get("all") != "1"
        kinds = queries.OPERATOR_AUDIT_KINDS if only_operator else None
        async with office.database.read() as connection:
            entries = await queries.recent_audit(connection, kinds)
        return office.render(
            "audit.html",
            session,
            active="audit",
            entries=entries,
            only_operator=only_operator,
            rows_max=queries.AUDIT_ROWS,
        )

    router.get("/audit")(office.readable(audit))


def _list_url(path: str, **query: Any) -> str:
    kept = {name: value for name, value in query.items() if value not in ("", None)}
    return f"{PREFIX}{path}?{urlencode(kept)}"


def _add_actions(router: APIRouter, office: BackOffice) -> None:
    @router.post("/credentials/{account_id}/unlock")
    @office.readable
    async def unlock(request: Request, account_id: str) -> Response:
        session, _ = await office.posted(request)
        account_id = _checked(account_id, _ACCOUNT_ID, "account")
        try:
            await office.customers.unlock(account_id, actor=session.actor)
        except SemopsError as error:
            if error.code != E.NOT_FOUND.code:
                raise
            session.flash("alert", f"Account {account_id} has no PIN to unlock; nothing changed.")
            return office.redirect("/credentials")
        async with office.database.read() as connection:
            entry = await queries.newest_audit_entry(
                connection, "credential_unlocked", session.actor, account_id=account_id
            )
        log.info("backoffice_credential_unlocked", session=session.ref)
        written = f" Audit entry #{entry['seq']} records it." if entry is not None else ""
        session.flash(
            "status",
            f"PIN of account {account_id} unlocked: the customer may pay again.{written}",
        )
        return office.redirect("/credentials")

    @router.post("/accounts/{account_id}/activation-codes")
    @office.readable
    async def activation_code(request: Request, account_id: str) -> Response:
        """A further code for a customer's new phone; enrolling with it proves the PIN."""
        session, _ = await office.posted(request)
        account_id = _checked(account_id, _ACCOUNT_ID, "account")
        issued = await office.customers.issue_activation_code(account_id, actor=session.actor)
        log.info("backoffice_activation_code_issued", session=session.ref)
        session.flash("code", issued["activation_code"])
        session.flash(
            "status",
            "Activation code issued (shown once, valid 24 hours). Give it to the customer "
            "out of band; their enrolled devices are told a code was issued, and enrolling "
            "with it needs their PIN.",
        )
        return office.redirect(f"/accounts/{quote(account_id, safe='')}")

    @router.post("/accounts/{account_id}/reset")
    @office.readable
    async def reset(request: Request, account_id: str) -> Response:
        """Reset the PIN: every device revoked, a new code; the customer enrols again."""
        session, fields = await office.posted(request)
        account_id = _checked(account_id, _ACCOUNT_ID, "account")
        if fields.get("confirm") != "yes":
            session.flash(
                "alert",
                "Nothing was reset: tick the box to confirm you have checked the customer's "
                "identity.",
            )
            return office.redirect(f"/accounts/{quote(account_id, safe='')}")
        reset = await office.customers.reset_credentials(account_id, actor=session.actor)
        log.info("backoffice_credential_reset", session=session.ref)
        session.flash("code", reset["activation_code"])
        session.flash(
            "status",
            f"PIN reset: {reset['devices_revoked']} device(s) revoked. The customer enrols "
            "again with the activation code below (shown once, valid 24 hours) and chooses "
            "a new PIN. The audit log records the reset with your session.",
        )
        return office.redirect(f"/accounts/{quote(account_id, safe='')}")

    @router.post("/devices/{kid}/revoke")
    @office.readable
    async def revoke(request: Request, kid: str) -> Response:
        session, _ = await office.posted(request)
        kid = _checked(kid, _KID, "device")
        revoked = await office.customers.revoke_device(kid, actor=session.actor)
        log.info("backoffice_device_revoked", session=session.ref)
        session.flash(
            "status",
            f"Device {revoked['device_name']} revoked: it can no longer sign payments.",
        )
        return office.redirect(f"/accounts/{quote(str(revoked['account_id']), safe='')}")
