"""M3: a merchant read /metrics of both processors around a payment and learned which one paid.

Counters of payments, refunds, PIN failures and transfers per outcome, read before and
after a payment, name the payer's processor to the payee side (DESIGN.md §5) and publish
business volumes. Metrics now live only on the operator ports (loopback) behind the
operator token: every port of every service, read without a credential, shows the same
thing before and after a routed payment, and none of them serves metrics at all.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Final

import pytest

from semops.devnet.network import ROUTER_ID
from semops.service.tls import TlsFiles, client_context
from tests.attack.conftest import SHOP_Y, Scene
from tests.attack.flows import routed_payment

pytestmark = pytest.mark.timeout(300)

PROCESSOR_IDS: Final = ("bank-a", "mno-b")
READ_TIMEOUT_S: Final = 10


def _get(
    url: str, *, as_party: str | None = None, scene: Scene | None = None, token: str | None = None
) -> tuple[int, str]:
    """GET a URL as an outsider: no credential, and a scheme certificate only when the port
    demands one (a participant, an insider, or a stolen TLS identity)."""
    context = None
    if as_party is not None:
        assert scene is not None
        context = client_context(TlsFiles.in_directory(scene.data_dir / as_party, as_party))
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT_S, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _unauthenticated_reads(scene: Scene) -> dict[str, tuple[int, str]]:
    """/metrics of every port of every service, as someone without the operator token."""
    ports = scene.layout.ports
    reads = {}
    for processor_id in PROCESSOR_IDS:
        public = scene.layout.processor_url(processor_id) + "/metrics"
        reads[f"{processor_id} public"] = _get(public)
        scheme = f"https://127.0.0.1:{ports[f'{processor_id}-scheme']}/metrics"
        reads[f"{processor_id} scheme"] = _get(scheme, as_party=ROUTER_ID, scene=scene)
        if f"{processor_id}-operator" in ports:  # the port is new: absent on old layouts
            operator = f"http://127.0.0.1:{ports[f'{processor_id}-operator']}/metrics"
            reads[f"{processor_id} operator"] = _get(operator)
    reads["router scheme"] = _get(
        scene.layout.router_url() + "/metrics", as_party="bank-a", scene=scene
    )
    reads["router operator"] = _get(f"http://127.0.0.1:{ports['router-operator']}/metrics")
    reads["shop-y backend"] = _get(f"http://127.0.0.1:{ports[SHOP_Y]}/metrics")
    return reads


def _completed_payments(metrics: str) -> float:
    line = r'^semops_processor_payments_total\{outcome="completed"\} (\S+)$'
    found = re.search(line, metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _operator_metrics(scene: Scene, participant: str) -> str:
    """/metrics on the operator port, with the operator token (what the operator reads)."""
    url = f"http://127.0.0.1:{scene.layout.ports[f'{participant}-operator']}/metrics"
    token = scene.network.operator_token(participant)
    status, text = _get(url, token=token)
    assert status == 200, (participant, status)
    return text


def test_a_payment_moves_nothing_an_unauthenticated_caller_can_read(scene: Scene) -> None:
    before = _unauthenticated_reads(scene)
    routed_payment(scene, 4200)  # alice at bank-a pays corner-cafe at mno-b
    after = _unauthenticated_reads(scene)

    moved = [port for port in before if before[port] != after[port]]
    assert not moved, f"readable without a credential, and moved by the payment: {moved}"
    served = {port: status for port, (status, _) in after.items() if status == 200}
    assert not served, f"metrics served without the operator token: {served}"
    for port, (status, _) in after.items():
        assert status in (401, 404), (port, status)


def test_the_operator_reads_metrics_with_its_token_and_sees_payments(scene: Scene) -> None:
    completed = _completed_payments(_operator_metrics(scene, "bank-a"))
    routed_payment(scene, 4300)
    assert _completed_payments(_operator_metrics(scene, "bank-a")) == completed + 1
    assert "semops_router_transfers_total" in _operator_metrics(scene, ROUTER_ID)


def test_the_operator_ports_refuse_a_wrong_token(scene: Scene) -> None:
    for participant in (*PROCESSOR_IDS, ROUTER_ID):
        port = scene.layout.ports.get(f"{participant}-operator")
        assert port is not None, f"{participant} has no operator port"
        status, _ = _get(f"http://127.0.0.1:{port}/metrics", token="not-the-token")
        assert status == 401, (participant, status)
