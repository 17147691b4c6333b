"""PIN lockout over real processes: three wrong PINs lock the credential; the lock survives
kill -9; a locked customer cannot pay, routed or on-us, and no money moves; only an operator
unlocks it, and that is in the processor's hash-chained audit log; the PIN never shows in
an answer or a log line, in any common encoding.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest

from semops.audit.verify import verify_data_dir
from semops.devnet.actors import balance, request_payment
from semops.privacy.encodings import forms_of
from semops.protocol import OrderState
from tests.attack.attacker import forge_order, pay, to_wallet_port
from tests.attack.conftest import PIN, Scene
from tests.attack.state import snapshot

pytestmark = pytest.mark.timeout(300)

# Wrong PINs that look like nothing else in a log (not a port, not a timestamp's digits).
WRONG_PINS = ("975318", "864297", "531864")


def _log_sizes(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_size for path in folder.rglob("*.log")}


def _new_log_text(folder: Path, sizes: dict[Path, int]) -> str:
    parts = []
    for path in sorted(folder.rglob("*.log")):
        with path.open("rb") as handle:
            handle.seek(sizes.get(path, 0))
            parts.append(handle.read().decode("utf-8", "replace"))
    return "\n".join(parts)


def _leaks(secret: str, text: str) -> list[str]:
    """The encodings in which `secret` appears in `text` (semops.privacy's matching rules)."""
    found = []
    for form in forms_of(secret):
        haystack, needle = (text.lower(), form.text.lower()) if form.fold else (text, form.text)
        start = haystack.find(needle)
        while start != -1:
            if form.matches_at(text, start):
                found.append(form.encoding)
                break
            start = haystack.find(needle, start + 1)
    return found


def _credential(scene: Scene, account_id: str) -> tuple[int, bool]:
    url = {"bank-a": scene.db_urls()["bank-a"]}
    rows = snapshot(url)["bank-a"]["credentials"]
    (row,) = [row for row in rows if row[0] == account_id]
    return int(row[2]), bool(row[3])


def test_three_wrong_pins_lock_until_an_audited_operator_unlock_even_across_kill_9(
    scene: Scene,
) -> None:
    network = scene.network
    victim = scene.customer("bank-a")
    routed = request_payment(network, scene.shops["cafe"], 300)
    on_us = request_payment(network, scene.shops["books"], 310)
    logs = network.data_dir / "bank-a"
    sizes = _log_sizes(logs)

    answers = []
    for pin in WRONG_PINS:
        order = forge_order(
            network, victim, routed["token"], pin=pin, entropy=secrets.token_bytes(16)
        )
        answers.append(to_wallet_port(network, "bank-a", order.token))
    assert [(a.status, a.code) for a in answers] == [
        (403, "pin_invalid"),
        (403, "pin_invalid"),
        (423, "pin_locked"),
    ]
    assert [json.loads(a.body).get("attempts_remaining") for a in answers[:2]] == [2, 1]
    assert _credential(scene, victim.account_id) == (3, True)

    network.restart("bank-a", hard=True)  # kill -9: nothing but the database survives
    assert network.admin("bank-a", "GET", f"/v1/admin/accounts/{victim.account_id}")["pin_locked"]
    who = (victim, scene.shops["cafe"], scene.shops["books"])
    balances = [balance(network, p.processor_id, p.account_id) for p in who]
    before = scene.quiet()
    for created in (routed, on_us):  # the right PIN, routed and on-us
        order = forge_order(
            network, victim, created["token"], pin=PIN, entropy=secrets.token_bytes(16)
        )
        locked = to_wallet_port(network, "bank-a", order.token)
        assert (locked.status, locked.code) == (423, "pin_locked")
        answers.append(locked)
    # Not even the failure count moves; each order id is kept as refused (single-use).
    scene.assert_unchanged(before, refused=("pin_locked", "pin_locked"))
    assert [balance(network, p.processor_id, p.account_id) for p in who] == balances

    unlocked = network.admin("bank-a", "POST", f"/v1/admin/credentials/{victim.account_id}/unlock")
    assert unlocked == {"account_id": victim.account_id, "pin_locked": False}
    entries = snapshot({"bank-a": scene.db_urls()["bank-a"]})["bank-a"]["audit_log"]
    unlocks = [json.loads(row[3]) for row in entries if row[1] == "credential_unlocked"]
    assert {"account_id": victim.account_id} in unlocks
    reports = asyncio.run(verify_data_dir(network.data_dir))
    assert reports and all(report.ok for report in reports), reports

    outcome = pay(victim, on_us["token"])
    assert outcome.state is OrderState.COMPLETED
    assert balance(network, "bank-a", victim.account_id) == balances[0] - 310

    seen = "\n".join(a.body for a in answers) + _new_log_text(logs, sizes)
    for pin in (*WRONG_PINS, PIN):
        assert _leaks(pin, seen) == [], pin


def test_a_replayed_wrong_pin_order_is_not_another_attempt(scene: Scene) -> None:
    """DESIGN.md §6: an order id is single-use; the same order again gets the stored outcome.
    A wiretapper holding one wrong-PIN order must not be able to lock the customer out by
    sending it three times."""
    network = scene.network
    victim = scene.customer("bank-a")
    created = request_payment(network, scene.shops["books"], 120)
    order = forge_order(
        network, victim, created["token"], pin=WRONG_PINS[0], entropy=secrets.token_bytes(16)
    )
    first = to_wallet_port(network, "bank-a", order.token)
    assert (first.status, first.code) == (403, "pin_invalid")
    replays = [to_wallet_port(network, "bank-a", order.token) for _ in range(2)]
    assert [r.code for r in replays] == ["pin_invalid", "pin_invalid"]
    assert _credential(scene, victim.account_id) == (1, False)
