"""One tapped network per database backend, shared by the whole attack suite.

The router, bank-a and mno-b run as real processes (SQLite, then PostgreSQL), exactly as in
tests/e2e, with one difference: every scheme link passes a wiretap (wiretap.py), the
attacker's view of the traffic. Around them: a merchant backend process for "shop-y"
(src/semops/merchant) receiving its notices by webhook, and a recorder standing in for the
webhook of "corner-cafe". Customers are made per test where a test spoils them (lockout).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

from semops.core.limits import REQUEST_TTL_MIN_S
from semops.devnet.actors import (
    Customer,
    Merchant,
    create_customer,
    create_merchant,
    enrol,
    request_payment,
)
from semops.devnet.demo import merchant_trust_args
from semops.devnet.network import PROCESSORS, ROUTER_ID, Layout, Network, new_layout
from semops.devnet.pki import ensure_pki
from semops.devnet.processes import ServiceProcess, free_port
from semops.service.files import write_secret
from semops.service.tls import TlsFiles
from tests.attack.flows import Routed, refund_of, routed_payment
from tests.attack.state import Snapshot, database_url, differences, settled
from tests.attack.wiretap import Wiretap
from tests.databases import BACKENDS, postgres_or_skip

PIN: Final = "4821"
DEPOSIT_MINOR: Final = 50_000
SHOP_Y: Final = "shop-y"
SHOP_Y_SERVICE: Final = f"merchants/{SHOP_Y}"
# shop-y's backend API token (its order API and shop sign-in), and the header that uses it.
SHOP_Y_TOKEN: Final = "shop-y-backend-token-6c1f0a9e53d2b7"
SHOP_Y_AUTH: Final = {"Authorization": f"Bearer {SHOP_Y_TOKEN}"}
_PROCESSOR_IDS: Final = tuple(processor_id for processor_id, _, _ in PROCESSORS)


class TappedNetwork(Network):
    """The devnet with each processor's router link and scheme endpoint behind the tap."""

    def processor_process(self, processor_id: str, kind: str, name: str) -> ServiceProcess:
        process = super().processor_process(processor_id, kind, name)
        ports = self.layout.ports
        args = list(process.args)
        args[args.index("--router-url") + 1] = (
            f"https://127.0.0.1:{ports[f'{processor_id}>router']}"
        )
        args += ["--scheme-url", f"https://127.0.0.1:{ports[f'router>{processor_id}']}"]
        process.args = args
        return process


@dataclass
class Scene:
    """The network under attack, its wiretap, and the people and shops in it."""

    network: TappedNetwork
    tap: Wiretap
    backend: str
    started_at: float
    people: dict[str, Customer] = field(default_factory=dict)
    shops: dict[str, Merchant] = field(default_factory=dict)
    # Captured as soon as the network is up, so that they have expired by the suite's end:
    # a routed payment, a refund of it, and an unpaid request of the shortest validity.
    early: Routed = field(init=False)
    early_refund: str = field(init=False)
    short_request: dict[str, Any] = field(init=False)
    _serial: int = 0

    @property
    def layout(self) -> Layout:
        return self.network.layout

    @property
    def data_dir(self) -> Path:
        return self.network.data_dir

    def db_urls(self) -> dict[str, str]:
        services = [ROUTER_ID, *_PROCESSOR_IDS, SHOP_Y_SERVICE]
        return {s: database_url(self.data_dir, self.layout.db_urls, s) for s in services}

    def quiet(self) -> Snapshot:
        return settled(self.db_urls())

    def assert_unchanged(self, before: Snapshot, *, refused: tuple[str, ...] = ()) -> None:
        """Every row of every service's database is as it was (after the services settle).

        `refused` names the codes of device-signed orders the test expects to be refused:
        each leaves exactly one row in its processor's `order_refusals` (the order id is
        single-use, DESIGN.md §6 "Replay") and nothing else."""
        after = self.quiet()
        codes = []
        for processor_id in _PROCESSOR_IDS:
            old = set(before[processor_id].get("order_refusals", []))
            new = after[processor_id].get("order_refusals", [])
            codes += [row[3] for row in new if row not in old]
            after[processor_id]["order_refusals"] = before[processor_id].get("order_refusals", [])
        changed = differences(before, after)
        assert not changed, "state changed:\n" + "\n".join(changed)
        assert sorted(codes) == sorted(refused), f"orders refused: {codes}"

    def customer(self, processor_id: str, deposit_minor: int = DEPOSIT_MINOR) -> Customer:
        """A fresh, enrolled customer (for tests that spoil one, e.g. by locking its PIN)."""
        self._serial += 1
        name = f"Victim {processor_id} {self._serial}"
        phone = f"+49151{self._serial:07d}"
        customer, code = create_customer(
            self.network, processor_id, name, phone, deposit_minor, PIN
        )
        asyncio.run(enrol(self.network, customer, code))
        return customer


def _layout(base: Path, db_urls: dict[str, str] | None) -> Layout:
    layout = new_layout(base, fixed_ports=False, db_urls=db_urls)
    for processor_id in _PROCESSOR_IDS:
        layout.ports[f"{processor_id}>router"] = free_port()
        layout.ports[f"router>{processor_id}"] = free_port()
    layout.ports["webhook"] = free_port()
    layout.ports[SHOP_Y] = free_port()
    return layout


def _tap_links(tap: Wiretap, layout: Layout) -> None:
    root = layout.root
    router_files = TlsFiles.in_directory(root / ROUTER_ID, ROUTER_ID)
    for processor_id in _PROCESSOR_IDS:
        files = TlsFiles.in_directory(root / processor_id, processor_id)
        tap.tap(
            f"{processor_id}>router",
            layout.ports[f"{processor_id}>router"],
            layout.router_url(),
            server=router_files,
            client=files,
        )
        tap.tap(
            f"router>{processor_id}",
            layout.ports[f"router>{processor_id}"],
            f"https://127.0.0.1:{layout.ports[f'{processor_id}-scheme']}",
            server=files,
            client=router_files,
        )
    tap.recorder("webhook", layout.ports["webhook"])


def _start_shop_y(scene: Scene) -> None:
    """shop-y at mno-b, with its own merchant backend process receiving its webhooks."""
    port = scene.layout.ports[SHOP_Y]
    shop = create_merchant(
        scene.network, "mno-b", SHOP_Y, "Shop Y", f"http://127.0.0.1:{port}/v1/notices"
    )
    folder = scene.data_dir / SHOP_Y_SERVICE
    folder.mkdir(parents=True, exist_ok=True)
    key_file = folder / "processor-api-key"
    key_file.write_text(shop.api_key)
    os.chmod(key_file, 0o600)
    token_file = folder / "api-token"
    write_secret(token_file, SHOP_Y_TOKEN.encode())
    db_url = scene.layout.db_urls.get(SHOP_Y_SERVICE)
    process = ServiceProcess(
        name=SHOP_Y,
        args=[
            "merchant",
            "serve",
            "--merchant-id",
            SHOP_Y,
            "--data-dir",
            str(folder),
            "--processor",
            scene.layout.processor_url("mno-b"),
            "--port",
            str(port),
            "--api-key-file",
            str(key_file),
            "--api-token-file",
            str(token_file),
            *merchant_trust_args(scene.network, "mno-b"),
            *(["--db", db_url] if db_url else []),
        ],
        output=folder / "logs" / "stdout.log",
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    scene.network.processes[SHOP_Y] = process
    process.start()
    process.wait_ready()
    scene.shops["y"] = shop


def _cast(scene: Scene) -> None:
    network = scene.network
    for key, processor_id, name, phone in (
        ("alice", "bank-a", "Alice Attacked", "+4915112340001"),
        ("bob", "mno-b", "Bob Attacked", "+4917612340002"),
        ("carol", "bank-a", "Carol Attacked", "+4915112340003"),
    ):
        customer, code = create_customer(network, processor_id, name, phone, DEPOSIT_MINOR, PIN)
        asyncio.run(enrol(network, customer, code))
        scene.people[key] = customer
    webhook = f"http://127.0.0.1:{scene.layout.ports['webhook']}/notices"
    scene.shops["cafe"] = create_merchant(network, "mno-b", "corner-cafe", "Corner Cafe", webhook)
    scene.shops["books"] = create_merchant(network, "bank-a", "book-shop", "Book Shop")
    _start_shop_y(scene)
    scene.early = routed_payment(scene, 111)
    scene.early_refund = refund_of(scene, scene.early, 11)
    scene.short_request = request_payment(
        network, scene.shops["cafe"], 222, ttl_s=REQUEST_TTL_MIN_S
    )


@pytest.fixture(scope="package", params=BACKENDS)
def scene(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scene]:
    databases = postgres_or_skip() if request.param == "postgresql" else None
    services = [ROUTER_ID, *_PROCESSOR_IDS, SHOP_Y_SERVICE]
    db_urls = None
    if databases is not None:
        made = databases.make([s.replace("/", "-") for s in services])
        db_urls = {s: made[s.replace("/", "-")] for s in services}
    layout = _layout(tmp_path_factory.mktemp(f"attack-{request.param}"), db_urls)
    ensure_pki(layout.root, {ROUTER_ID: "router"} | dict.fromkeys(_PROCESSOR_IDS, "processor"))
    tap = Wiretap()
    network = TappedNetwork(layout)
    try:
        _tap_links(tap, layout)
        network.start()
        scene = Scene(network, tap, request.param, time.time())
        _cast(scene)
        yield scene
    finally:
        network.stop()
        tap.close()
        if databases is not None:
            databases.drop()
