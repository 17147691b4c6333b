"""What the fuzz tests share: every service of a real network with its credentials, a
digest of every table of its database, and the checks each answer must pass.

`FuzzNetwork` is the router, bank-a and mno-b (semops.devnet.Network) plus a merchant
backend for a merchant at bank-a, each its own OS process with its own database (SQLite or
PostgreSQL). `Service` names one HTTP port of it: its OpenAPI document, a requests session
with the port's transport credentials (mTLS client certificate for the scheme ports) and
the bearer credential each route family takes.

`TableDigests` reads the service's database directly (read-only) and digests the sorted
rows of every table, so "rejected input changes no state" compares every row, audit log
included. It is only meaningful while the network is quiet; `FuzzNetwork.quiesce()` gets
it there: audit tails sealed (a processor seals on a clean stop, the router on an operator
call), no outbox message waiting, no merchant order the poller would look at.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import asyncpg
import requests
import schemathesis
from schemathesis import Case

from semops.audit.chain import CHECKPOINT_KIND
from semops.core.errors import lookup
from semops.devnet.actors import Customer, Merchant, create_customer, create_merchant, enrol
from semops.devnet.demo import merchant_trust_args
from semops.devnet.network import PROCESSORS, ROUTER_ID, Network, new_layout
from semops.devnet.processes import ServiceProcess
from semops.service.files import write_secret
from semops.store.db import is_sqlite
from semops.store.merchant import REFUND_UNSETTLED
from semops.wallet.core import device_auth_header
from semops.wallet.store import WalletStore
from tests.databases import select_as_booked

PROBLEM_JSON: Final = "application/problem+json"
# The processors' replay cache: the id of every device authorisation a call spent, whatever
# the call's outcome (single use, DESIGN.md §6), forgotten in the background as they expire.
# It is the bookkeeping of refusing copies, not state a refused call changed; its own
# behaviour is tested in tests/processor and tests/attack.
UNCOMPARED_TABLES: Final = frozenset({"signed_calls"})
MERCHANT_ID: Final = "fuzz-shop"
# The processor whose merchant the backend serves, and whose public port is fuzzed.
BANK: Final = "bank-a"
# A quiet network writes nothing; an outbox message still waiting gets this long.
QUIET_DEADLINE_S: Final = 30.0
HTTP_TIMEOUT_S: Final = 20.0
PIN: Final = "4821"


# --- table digests ------------------------------------------------------------------------


def _row_text(values: Any) -> str:
    return json.dumps([repr(value) for value in values], ensure_ascii=False)


def _digest(rows: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()


class TableDigests:
    """{table: sha256 over its sorted rows} of one service's database, read-only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of one table, as dicts (for quiet checks)."""
        if self.sqlite:
            with self._sqlite() as connection:
                connection.row_factory = sqlite3.Row
                return [dict(row) for row in connection.execute(f'SELECT * FROM "{table}"')]
        records = self._run(self._pg().fetch(f'SELECT * FROM "{table}"'))
        return [dict(record) for record in records]

    def take(self) -> dict[str, str]:
        if self.sqlite:
            with self._sqlite() as connection:
                names = [
                    row[0]
                    for row in connection.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table'"
                        " AND name NOT LIKE 'sqlite_%'"
                    )
                    if row[0] not in UNCOMPARED_TABLES
                ]
                return {
                    name: _digest(
                        [
                            _row_text(row)
                            for row in connection.execute(select_as_booked(name, names))
                        ]
                    )
                    for name in names
                }
        return self._run(self._pg_take())

    async def _pg_take(self) -> dict[str, str]:
        connection = self._pg()
        names = [
            record[0]
            for record in await connection.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            if record[0] not in UNCOMPARED_TABLES
        ]
        result = {}
        for name in names:
            records = await connection.fetch(select_as_booked(name, names))
            result[name] = _digest([_row_text(record.values()) for record in records])
        return result

    @contextmanager
    def _sqlite(self) -> Iterator[sqlite3.Connection]:
        path = self.url.split(":///", 1)[1]
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            yield connection
        finally:
            connection.close()

    def _pg(self) -> Any:
        if self._connection is None:
            self._loop = asyncio.new_event_loop()
            dsn = self.url.replace("postgresql+asyncpg://", "postgresql://", 1)
            self._connection = self._loop.run_until_complete(asyncpg.connect(dsn))
        return self._connection

    def _run(self, coroutine: Any) -> Any:
        self._pg()
        assert self._loop is not None
        return self._loop.run_until_complete(coroutine)

    def close(self) -> None:
        if self._connection is not None and self._loop is not None:
            self._loop.run_until_complete(self._connection.close())
            self._loop.close()
        self._connection = None
        self._loop = None


def changed_tables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


# --- services -----------------------------------------------------------------------------


@dataclass
class Service:
    """One HTTP port of the network, as a fuzzer and a size-limit test reach it."""

    name: str
    base_url: str
    database: TableDigests
    session: requests.Session
    # Route prefix -> the Authorization header value that route family takes.
    bearer: dict[str, str] = field(default_factory=dict)
    # (method, path, body) -> a `SEMOPS-Device` header of an enrolled wallet, for /v1/wallet/.
    device: Callable[[str, str, bytes | None], str] | None = None
    _schema: Any = None

    def schema(self) -> Any:
        if self._schema is None:
            self._schema = schemathesis.openapi.from_url(
                self.base_url + "/openapi.json",
                timeout=HTTP_TIMEOUT_S,
                verify=self.session.verify,
                cert=self.session.cert,
            )
        return self._schema

    def auth_for(self, path: str, method: str = "GET", body: bytes | None = None) -> str | None:
        if self.device is not None and path.startswith("/v1/wallet/"):
            return self.device(method, path, body)
        for prefix, value in self.bearer.items():
            if path.startswith(prefix):
                return value
        return None

    def authorise(self, case: Case) -> None:
        """Put this route's real credential on a generated case (replacing a made-up one)."""
        # Wallet routes read their body raw: the documents describe none, none is sent.
        value = self.auth_for(case.formatted_path, case.method.upper())
        if value is None:
            return
        headers = {
            name: header
            for name, header in (case.headers or {}).items()
            if name.lower() != "authorization"
        }
        headers["Authorization"] = value
        case.headers = headers

    def post(self, path: str, data: bytes, content_type: str, **headers: str) -> requests.Response:
        return self.request("POST", path, data=data, content_type=content_type, **headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        content_type: str = "application/json",
        **headers: str,
    ) -> requests.Response:
        all_headers = {"Content-Type": content_type, **headers}
        credential = self.auth_for(path, method, data)
        if credential is not None:
            all_headers.setdefault("Authorization", credential)
        # `verify` per request: a session's own is overridden by REQUESTS_CA_BUNDLE.
        return self.session.request(
            method,
            self.base_url + path,
            data=data,
            headers=all_headers,
            timeout=HTTP_TIMEOUT_S,
            verify=self.session.verify,
            cert=self.session.cert,
        )


def _session(cert: tuple[str, str] | None = None, verify: str | bool = True) -> requests.Session:
    session = requests.Session()
    session.cert = cert
    session.verify = verify
    return session


# --- the network ----------------------------------------------------------------------------


class FuzzNetwork:
    """Router, bank-a, mno-b and a merchant backend, with a handle on every port."""

    def __init__(self, data_dir: Path, db_urls: dict[str, str] | None) -> None:
        self.db_urls = dict(db_urls or {})
        network_urls = {key: value for key, value in self.db_urls.items() if key != "merchant"}
        self.network = Network(new_layout(data_dir, fixed_ports=False, db_urls=network_urls))
        self.merchant: Merchant | None = None
        self.customer: Customer | None = None
        self.backend: ServiceProcess | None = None
        self.services: dict[str, Service] = {}

    @property
    def data_dir(self) -> Path:
        return self.network.data_dir

    def start(self) -> None:
        self.network.start()
        self.merchant = create_merchant(self.network, BANK, MERCHANT_ID, "Fuzz Shop")
        self.customer, code = create_customer(
            self.network, BANK, "Fuzz Customer", "+4915100000099", 10_000, PIN
        )
        asyncio.run(enrol(self.network, self.customer, code))
        folder = self.data_dir / "merchants" / MERCHANT_ID
        write_secret(folder / "processor-api-key", self.merchant.api_key.encode())
        write_secret(folder / "api-token", b"fuzz-merchant-api-token")
        self.backend = self._backend_process(folder)
        self.network.processes[self.backend.name] = self.backend
        self.backend.start()
        self.backend.wait_ready()
        self.services = self._services(folder)
        self.quiesce()

    def _backend_process(self, folder: Path) -> ServiceProcess:
        port = self.network.layout.ports["merchant"]
        db = self.db_urls.get("merchant")
        return ServiceProcess(
            name="merchant",
            args=[
                "merchant",
                "serve",
                "--merchant-id",
                MERCHANT_ID,
                "--data-dir",
                str(folder),
                "--processor",
                self.network.layout.processor_url(BANK),
                "--port",
                str(port),
                "--api-token-file",
                str(folder / "api-token"),
                *merchant_trust_args(self.network, BANK),
                *(["--db", db] if db else []),
            ],
            output=folder / "logs" / "stdout.log",
            health_url=f"http://127.0.0.1:{port}/healthz",
        )

    def _db_url(self, service: str, folder: Path, file_name: str) -> str:
        return self.db_urls.get(service) or f"sqlite+aiosqlite:///{folder / file_name}"

    def _services(self, merchant_folder: Path) -> dict[str, Service]:
        root, ports = self.data_dir, self.network.layout.ports
        assert self.merchant is not None

        def certificate(party: str) -> tuple[str, str]:
            return (str(root / party / f"{party}.crt"), str(root / party / f"{party}.key"))

        def digests(party: str) -> TableDigests:
            return TableDigests(self._db_url(party, root / party, f"{party}.db"))

        router_digests, bank_digests = digests(ROUTER_ID), digests(BANK)
        return {
            "processor-public": Service(
                "processor-public",
                self.network.layout.processor_url(BANK),
                bank_digests,
                _session(),
                {
                    "/v1/admin/": f"Bearer {self.network.operator_token(BANK)}",
                    "/v1/merchant/": f"Bearer {self.merchant.api_key}",
                },
                self._device_signer(),
            ),
            "processor-scheme": Service(
                "processor-scheme",
                f"https://127.0.0.1:{ports[f'{BANK}-scheme']}",
                bank_digests,
                _session(certificate(ROUTER_ID), str(root / ROUTER_ID / "root-ca.crt")),
            ),
            "router-scheme": Service(
                "router-scheme",
                self.network.layout.router_url(),
                router_digests,
                _session(certificate(BANK), str(root / BANK / "root-ca.crt")),
            ),
            "router-operator": Service(
                "router-operator",
                f"http://127.0.0.1:{ports['router-operator']}",
                router_digests,
                _session(),
                {"/v1/admin/": f"Bearer {self.network.operator_token(ROUTER_ID)}"},
            ),
            "merchant": Service(
                "merchant",
                f"http://127.0.0.1:{ports['merchant']}",
                TableDigests(self._db_url("merchant", merchant_folder, f"{MERCHANT_ID}.db")),
                _session(),
                {"/v1/orders": "Bearer fuzz-merchant-api-token"},
            ),
        }

    def _device_signer(self) -> Callable[[str, str, bytes | None], str]:
        assert self.customer is not None
        wallet = WalletStore.open(self.customer.wallet_dir)
        key, account_id = wallet.device_key(), self.customer.account_id
        wallet.close()

        def sign(method: str, path: str, body: bytes | None) -> str:
            return device_auth_header(
                key,
                account_id=account_id,
                method=method,
                path=path,
                now=int(time.time()),
                auth_entropy=secrets.token_bytes(16),
                body=body,
            )

        return sign

    # --- quiet ----------------------------------------------------------------------------

    def _participant_digests(self) -> dict[str, TableDigests]:
        root = self.data_dir
        result = {
            party: TableDigests(self._db_url(party, root / party, f"{party}.db"))
            for party in (ROUTER_ID, *(pid for pid, _, _ in PROCESSORS))
        }
        return result

    def noise(self) -> list[str]:
        """What would make a service write on its own soon (empty when quiet)."""
        reasons = []
        for party, database in self._participant_digests().items():
            try:
                log = database.rows("audit_log")
                if log and max(log, key=lambda row: row["seq"])["kind"] != CHECKPOINT_KIND:
                    reasons.append(f"{party}: audit tail unsealed")
                if database.rows("audit_pending"):
                    reasons.append(f"{party}: audit entries staged, not chained yet")
                waiting = [row for row in database.rows("outbox") if row["delivered_at"] is None]
                if waiting:
                    reasons.append(f"{party}: {len(waiting)} outbox messages waiting")
            finally:
                database.close()
        merchant = self.services["merchant"].database
        polled = [
            row for row in merchant.rows("orders") if row["state"] in ("creating", "open")
        ] + [row for row in merchant.rows("refunds") if row["state"] in REFUND_UNSETTLED]
        if polled:
            reasons.append(f"merchant: {len(polled)} orders or refunds the poller looks at")
        return reasons

    def quiesce(self) -> None:
        """Bring every service to a state in which nothing writes on its own."""
        for processor_id, _, _ in PROCESSORS:
            if any(reason.startswith(f"{processor_id}: audit") for reason in self.noise()):
                # A clean stop seals the audit log; nothing else a processor does writes.
                self.network.restart(processor_id)
        if any(reason.startswith(f"{ROUTER_ID}: audit") for reason in self.noise()):
            self.network.router_admin("POST", "/v1/admin/audit/checkpoint")
        deadline = time.monotonic() + QUIET_DEADLINE_S
        while (reasons := self.noise()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not reasons, f"the network does not go quiet: {reasons}"

    def stop(self) -> None:
        for service in self.services.values():
            service.database.close()
            service.session.close()
        self.network.stop()


# --- what every answer must be ----------------------------------------------------------------


def _content_type(response: Any) -> str:
    """The media type, from a requests response or a schemathesis one (lists per header)."""
    value = response.headers.get("content-type") or response.headers.get("Content-Type") or ""
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value).split(";")[0].strip()


def problem_of(response: Any) -> dict[str, Any]:
    """The problem+json body of a 4xx/5xx answer, checked against the error registry."""
    content_type = _content_type(response)
    assert content_type == PROBLEM_JSON, f"{response.status_code} answered as {content_type!r}"
    problem = json.loads(response.content)
    assert isinstance(problem, dict), "a problem is a JSON object"
    code = problem.get("code")
    assert isinstance(code, str), "a problem carries a stable code"
    spec = lookup(code)  # KeyError: a code outside the registry
    assert spec.http_status == response.status_code, (
        f"{code} is registered as {spec.http_status}, answered {response.status_code}"
    )
    assert problem.get("status") == response.status_code
    assert problem.get("type") == spec.problem_type
    return problem


@schemathesis.check
def problem_json_with_registered_code(ctx: Any, response: Any, case: Case) -> bool | None:
    """Every 4xx is RFC 9457 problem+json whose `code` is in the registry with that status."""
    if 400 <= response.status_code < 500:
        problem_of(response)
    return None


@schemathesis.check
def success_status_documented(ctx: Any, response: Any, case: Case) -> bool | None:
    """A 2xx status is one the OpenAPI document names for the operation. (Errors are
    documented by the registry instead: FastAPI's documents list only 422.)"""
    if 200 <= response.status_code < 300:
        documented = set(case.operation.definition.raw.get("responses", {}))
        assert str(response.status_code) in documented, (
            f"{response.status_code} is not among the documented {sorted(documented)}"
        )
    return None


def describe(case: Case, response: Any) -> str:
    body = response.content[:300] if response is not None else b""
    status = response.status_code if response is not None else "-"
    return f"{case.method} {case.formatted_path} -> {status} {body!r}"


Check = Callable[[Any, Any, Case], bool | None]
