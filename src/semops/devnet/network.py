"""A SEMOPS network on loopback: the router, a bank, an MNO and a merchant backend.

Each participant is its own process with its own folder under the data directory (keys,
database, logs). The layout (ports, URLs, database URLs) is written to
`DATA/network.json`, so `semops demo`, `semops bench` and the wallet and merchant CLIs can
find a network started by `semops up`.

    DATA/pki/             the scheme root CA (root-ca.key stays here, 0600)
    DATA/router/          router keys, router.db, logs/, operator.token
    DATA/bank-a/          processor keys, bank-a.db, pin.key, reference.key, operator.token
    DATA/mno-b/           the same for the MNO
    DATA/merchants/ID/    a merchant backend: its API key (0600), database, logs
    DATA/wallets/NAME/    a customer's wallet: device key (0600), local orders
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from semops.devnet.pki import ensure_pki
from semops.devnet.processes import ServiceProcess, fresh_port, open_url
from semops.service.files import write_private
from semops.service.tls import TlsFiles, client_context

ROUTER_ID: Final = "router"
# The processors of the embedded default: (id, kind, display name).
PROCESSORS: Final = (("bank-a", "bank", "Alpha Bank"), ("mno-b", "mno", "Beta Mobile"))
# Fixed ports for `semops up`, so the printed URLs stay the same between runs.
DEFAULT_PORTS: Final = {
    "router": 8400,
    "router-operator": 8401,
    "bank-a": 8500,
    "bank-a-scheme": 8501,
    "bank-a-operator": 8502,
    "mno-b": 8510,
    "mno-b-scheme": 8511,
    "mno-b-operator": 8512,
    "merchant": 8600,
}
ADMIN_TIMEOUT_S: Final = 15


@dataclass
class Layout:
    """Where everything of one network is: saved as DATA/network.json."""

    data_dir: str
    ports: dict[str, int]
    db_urls: dict[str, str] = field(default_factory=dict)
    # Proxies in the way (the chaos harness): link name "SENDER>RECEIVER" -> proxy port.
    links: dict[str, int] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.data_dir)

    def router_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['router']}"

    def processor_url(self, processor_id: str) -> str:
        return f"http://127.0.0.1:{self.ports[processor_id]}"

    def router_url_for(self, processor_id: str) -> str:
        """Where a processor sends to the router: the router, or a proxy in the way."""
        port = self.links.get(f"{processor_id}>{ROUTER_ID}", self.ports["router"])
        return f"https://127.0.0.1:{port}"

    def scheme_url_for(self, processor_id: str) -> str | None:
        """The scheme URL a processor publishes, when a proxy stands in front of it."""
        port = self.links.get(f"{ROUTER_ID}>{processor_id}")
        return None if port is None else f"https://127.0.0.1:{port}"

    def wallet_url(self, processor_id: str) -> str:
        """Where wallets reach a processor: its public port, or a proxy in the way."""
        port = self.links.get(f"wallet>{processor_id}", self.ports[processor_id])
        return f"http://127.0.0.1:{port}"

    def save(self) -> None:
        document = json.dumps(asdict(self), indent=2) + "\n"  # database URLs: private
        write_private(self.root / "network.json", document.encode())

    @classmethod
    def load(cls, data_dir: Path) -> Layout:
        document = json.loads((data_dir / "network.json").read_text())
        return cls(**document)


def new_layout(data_dir: Path, *, fixed_ports: bool, db_urls: dict[str, str] | None) -> Layout:
    ports = dict(DEFAULT_PORTS)
    if not fixed_ports:
        taken: set[int] = set()
        ports = {name: fresh_port(taken) for name in ports}
    return Layout(str(data_dir.resolve()), ports, dict(db_urls or {}))


class Network:
    """Start, reach and stop every process of a local network."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.processes: dict[str, ServiceProcess] = {}

    @property
    def data_dir(self) -> Path:
        return self.layout.root

    def _scheme_context(self) -> Any:
        return client_context(TlsFiles.in_directory(self.data_dir / ROUTER_ID, ROUTER_ID))

    def _db_args(self, service: str) -> list[str]:
        url = self.layout.db_urls.get(service)
        return ["--db", url] if url else []

    def _scheme_url_args(self, processor_id: str) -> list[str]:
        url = self.layout.scheme_url_for(processor_id)
        return ["--scheme-url", url] if url else []

    def router_process(self) -> ServiceProcess:
        ports = self.layout.ports
        return ServiceProcess(
            name=ROUTER_ID,
            args=[
                "router",
                "serve",
                "--data-dir",
                str(self.data_dir / ROUTER_ID),
                "--port",
                str(ports["router"]),
                "--operator-port",
                str(ports["router-operator"]),
                *self._db_args(ROUTER_ID),
            ],
            output=self.data_dir / ROUTER_ID / "logs" / "stdout.log",
            health_url=f"http://127.0.0.1:{ports['router-operator']}/healthz",
        )

    def processor_process(self, processor_id: str, kind: str, name: str) -> ServiceProcess:
        ports = self.layout.ports
        return ServiceProcess(
            name=processor_id,
            args=[
                "processor",
                "serve",
                "--id",
                processor_id,
                "--kind",
                kind,
                "--name",
                name,
                "--data-dir",
                str(self.data_dir / processor_id),
                "--router-url",
                self.layout.router_url_for(processor_id),
                "--public-port",
                str(ports[processor_id]),
                "--scheme-port",
                str(ports[f"{processor_id}-scheme"]),
                "--operator-port",
                str(ports[f"{processor_id}-operator"]),
                # Everything of the devnet is on loopback, its webhooks plain http.
                "--development",
                *self._scheme_url_args(processor_id),
                *self._db_args(processor_id),
            ],
            output=self.data_dir / processor_id / "logs" / "stdout.log",
            health_url=f"{self.layout.processor_url(processor_id)}/healthz",
        )

    def start(self) -> None:
        """PKI (once), then the router, then the processors; each waits until healthy."""
        participants = {ROUTER_ID: "router"} | {pid: "processor" for pid, _, _ in PROCESSORS}
        ensure_pki(self.data_dir, participants)
        self.layout.save()
        try:
            self._start(self.router_process())
            for processor_id, kind, name in PROCESSORS:
                self._start(self.processor_process(processor_id, kind, name))
        except BaseException:
            self.stop()
            raise

    def _start(self, process: ServiceProcess) -> None:
        self.processes[process.name] = process
        process.start()
        process.wait_ready()

    def restart(self, name: str, *, hard: bool = False) -> None:
        process = self.processes[name]
        process.stop(hard=hard)
        process.start()
        process.wait_ready()

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    # --- operator calls -------------------------------------------------------------------

    def operator_token(self, participant_id: str) -> str:
        return (self.data_dir / participant_id / "operator.token").read_text().strip()

    def admin(self, processor_id: str, method: str, path: str, body: Any = None) -> Any:
        """A back-office call to a processor (JSON in, JSON out; problem+json raises)."""
        url = self.layout.processor_url(processor_id) + path
        return _json_call(url, method, body, self.operator_token(processor_id))

    def operator_url(self, participant_id: str) -> str:
        """The loopback operator port of the router or a processor (metrics, admin)."""
        return f"http://127.0.0.1:{self.layout.ports[f'{participant_id}-operator']}"

    def metrics(self, participant_id: str) -> str:
        """Prometheus text of the router or a processor, with its operator token."""
        url = self.operator_url(participant_id) + "/metrics"
        headers = {"Authorization": f"Bearer {self.operator_token(participant_id)}"}
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        with open_url(request, ADMIN_TIMEOUT_S) as response:
            return str(response.read().decode())

    def router_admin(self, method: str, path: str, body: Any = None) -> Any:
        url = f"http://127.0.0.1:{self.layout.ports['router-operator']}{path}"
        return _json_call(url, method, body, self.operator_token(ROUTER_ID))


class ServiceError(Exception):
    """A service answered with problem+json: the stable code and the detail."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{problem.get('code')}: {problem.get('detail')}")

    @property
    def code(self) -> str:
        return str(self.problem.get("code"))


def _json_call(url: str, method: str, body: Any, token: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with open_url(request, ADMIN_TIMEOUT_S) as response:
            text = response.read().decode()
            return json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            problem = json.loads(text)
        except ValueError:
            problem = {"code": "unknown", "detail": text[:200]}
        raise ServiceError(error.code, problem) from None
