"""The fault proxy and the chaos checker, each shown to catch what it is for.

The proxy is run against a small receiver that counts what reaches it, so each fault is
seen from both ends: a dropped request never arrives, a dropped response arrives but the
sender hears nothing, a duplicate arrives twice. The checker is fed a consistent picture
of a finished run and then one broken detail at a time; each must be named.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from semops.devnet.actors import Customer, Merchant
from semops.devnet.chaos import Attempt, ProcessorView, Snapshot, check
from semops.devnet.faults import Fault, FaultBudget, LinkProxy
from semops.devnet.processes import free_port

pytestmark = pytest.mark.anyio

# --- the budget --------------------------------------------------------------------------


def test_a_budget_injects_exactly_its_number_of_faults() -> None:
    budget = FaultBudget(7, rate=1.0, delay_max_s=0.0, seed=3)
    drawn = [budget.draw("a>b") for _ in range(20)]
    assert sum(fault is not None for fault in drawn) == 7
    assert drawn[7:] == [None] * 13
    assert budget.total == 7
    assert sum(budget.injected[f"a>b:{kind.value}"] for kind in Fault) == 7


def test_the_same_seed_makes_the_same_choices() -> None:
    first = FaultBudget(50, rate=0.3, delay_max_s=1.0, seed=11)
    second = FaultBudget(50, rate=0.3, delay_max_s=1.0, seed=11)
    assert [first.draw("x") for _ in range(100)] == [second.draw("x") for _ in range(100)]


def test_a_stopped_budget_and_a_zero_rate_inject_nothing() -> None:
    quiet = FaultBudget(10, rate=0.0, delay_max_s=0.0, seed=1)
    assert {quiet.draw("x") for _ in range(50)} == {None}
    healed = FaultBudget(10, rate=1.0, delay_max_s=0.0, seed=1)
    healed.stop()
    assert healed.draw("x") is None


@pytest.mark.parametrize(
    ("remaining", "rate", "delay"), [(-1, 0.5, 0.0), (1, 1.5, 0.0), (1, -0.1, 0.0), (1, 0.5, -1)]
)
def test_a_budget_refuses_nonsense(remaining: int, rate: float, delay: float) -> None:
    with pytest.raises(ValueError, match="faults must be"):
        FaultBudget(remaining, rate=rate, delay_max_s=delay, seed=1)


# --- the proxy ---------------------------------------------------------------------------


class Receiver:
    """A tiny HTTP service that counts the requests that reach it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.path_qs, body))
        return web.Response(
            status=201,
            body=b"answer:" + body,
            content_type="application/jose",
            headers={"X-Kept": "yes"},
        )


@pytest.fixture
async def link() -> AsyncIterator[tuple[Receiver, LinkProxy, FaultBudget]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    budget = FaultBudget(0, rate=1.0, delay_max_s=0.05, seed=5)
    proxy = LinkProxy("a>b", free_port(), f"http://127.0.0.1:{receiver.port}", budget)
    await proxy.start()
    try:
        yield receiver, proxy, budget
    finally:
        await proxy.stop()
        await runner.cleanup()


async def _send(proxy: LinkProxy, body: bytes = b"hello") -> tuple[int, bytes, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{proxy.url}/v1/things?x=1", data=body) as response,
    ):
        return response.status, await response.read(), dict(response.headers)


def _only(budget: FaultBudget, fault: Fault) -> None:
    budget.kinds = (fault,)
    budget.remaining = 1


async def test_without_faults_the_proxy_passes_messages_untouched(link: Any) -> None:
    receiver, proxy, _ = link
    status, body, headers = await _send(proxy, b"payload")
    assert (status, body) == (201, b"answer:payload")
    assert headers["X-Kept"] == "yes"
    assert headers["Content-Type"].startswith("application/jose")
    assert receiver.seen == [("POST", "/v1/things?x=1", b"payload")]


async def test_a_dropped_request_never_arrives_and_the_sender_sees_a_broken_link(
    link: Any,
) -> None:
    receiver, proxy, budget = link
    _only(budget, Fault.DROP_REQUEST)
    with pytest.raises(aiohttp.ClientError):
        await _send(proxy)
    assert receiver.seen == []
    assert budget.injected["drop_request"] == 1
    assert (await _send(proxy))[0] == 201  # the budget is spent: the link works again


async def test_a_dropped_response_arrives_but_the_sender_never_hears(link: Any) -> None:
    receiver, proxy, budget = link
    _only(budget, Fault.DROP_RESPONSE)
    with pytest.raises(aiohttp.ClientError):
        await _send(proxy)
    assert len(receiver.seen) == 1


async def test_a_duplicate_arrives_twice_and_the_sender_sees_one_answer(link: Any) -> None:
    receiver, proxy, budget = link
    _only(budget, Fault.DUPLICATE)
    status, body, _ = await _send(proxy, b"once")
    assert (status, body) == (201, b"answer:once")
    assert [seen[2] for seen in receiver.seen] == [b"once", b"once"]


async def test_a_delayed_or_reordered_message_still_arrives_once(link: Any) -> None:
    receiver, proxy, budget = link
    for fault in (Fault.DELAY, Fault.REORDER):
        _only(budget, fault)
        assert (await _send(proxy, fault.value.encode()))[0] == 201
    assert [seen[2] for seen in receiver.seen] == [b"delay", b"reorder"]


async def test_a_receiver_that_is_down_looks_like_a_broken_link(tmp_path: Path) -> None:
    budget = FaultBudget(0, rate=0.0, delay_max_s=0.0, seed=1)
    proxy = LinkProxy("a>nobody", free_port(), f"http://127.0.0.1:{free_port()}", budget)
    await proxy.start()
    try:
        with pytest.raises(aiohttp.ClientError):
            await _send(proxy)
    finally:
        await proxy.stop()


# --- the checker -------------------------------------------------------------------------

PAYER = Customer("Ann", "bank-a", "acct-ann", "+491", "1111", Path("/nonexistent"))
SHOP = Merchant("shop", "Shop", "mno-b", "acct-shop", "key")
LOCAL_SHOP = Merchant("local", "Local", "bank-a", "acct-local", "key")


def _accounts(customer: int, merchant: int, settlement: int, deposits: int) -> dict[str, Any]:
    rows = {
        "c": {"kind": "customer", "balance_minor": customer},
        "m": {"kind": "merchant", "balance_minor": merchant},
        "s": {"kind": "suspense", "balance_minor": 0},
        "t": {"kind": "settlement", "balance_minor": settlement},
        "f": {"kind": "funding", "balance_minor": -deposits},
    }
    return {
        key: row | {"account_id": key, "currency": "EUR", "overdraft_minor": 0}
        for key, row in rows.items()
    }


def _finished_run() -> tuple[list[Attempt], Snapshot, Counter[str]]:
    """Ann (bank-a, 1000 deposited) paid 100 routed to mno-b's shop, and 30 on-us; one
    more routed attempt of 50 was aborted everywhere."""
    attempts = [
        Attempt(0, PAYER, SHOP, 100, "req-0", "ord-0", "completed"),
        Attempt(1, PAYER, LOCAL_SHOP, 30, "req-1", "ord-1", "completed"),
        Attempt(2, PAYER, SHOP, 50, "req-2", "ord-2", "failed"),
    ]
    bank = ProcessorView(
        orders={
            "ord-0": {"state": "committed", "transfer_id": "tr-0", "on_us": False},
            "ord-1": {"state": "committed", "transfer_id": "tr-1", "on_us": True},
            "ord-2": {"state": "aborted", "transfer_id": "tr-2", "on_us": False},
        },
        inbound={},
        requests={"req-1": {"state": "paid", "transfer_id": "tr-1"}},
        accounts=_accounts(870, 30, 100, 1000),
        deposits_minor=1000,
        outbox_pending=0,
    )
    mno = ProcessorView(
        orders={},
        inbound={"tr-0": {"state": "committed"}, "tr-2": {"state": "aborted"}},
        requests={
            "req-0": {"state": "paid", "transfer_id": "tr-0"},
            "req-2": {"state": "open", "transfer_id": None},
        },
        accounts=_accounts(0, 100, -100, 0),
        deposits_minor=0,
        outbox_pending=0,
    )
    snapshot = Snapshot(
        processors={"bank-a": bank, "mno-b": mno},
        router_transfers={"tr-0": {"state": "committed"}, "tr-2": {"state": "aborted"}},
        positions={"bank-a": -100, "mno-b": 100},
        router_outbox_pending=0,
    )
    return attempts, snapshot, Counter({"req-0": 1, "req-1": 2})


def _violations(attempts: list[Attempt], snapshot: Snapshot, notices: Counter[str]) -> list[str]:
    return check(attempts, snapshot, 1000, notices, Counter())


def test_a_consistent_run_has_no_violations() -> None:
    attempts, snapshot, notices = _finished_run()
    checked: Counter[str] = Counter()
    assert check(attempts, snapshot, 1000, notices, checked) == []
    assert checked == Counter(
        {"complete routed": 1, "complete on-us": 1, "absent routed": 1, "ledgers": 2}
    )


def _broken(change: str) -> tuple[list[Attempt], Snapshot, Counter[str]]:
    attempts, snapshot, notices = _finished_run()
    snapshot = copy.deepcopy(snapshot)
    bank, mno = snapshot.processors["bank-a"], snapshot.processors["mno-b"]
    if change == "router aborted a committed payment":
        snapshot.router_transfers["tr-0"]["state"] = "aborted"
    elif change == "payee never committed":
        mno.inbound["tr-0"]["state"] = "in_doubt"
    elif change == "payee committed an aborted payment":
        mno.inbound["tr-2"]["state"] = "committed"
    elif change == "request paid by an aborted transfer":
        mno.requests["req-2"] = {"state": "paid", "transfer_id": "tr-2"}
    elif change == "payer still in doubt":
        bank.orders["ord-2"]["state"] = "in_doubt"
    elif change == "wallet disagrees":
        attempts[2].wallet_state = "completed"
    elif change == "merchant never told":
        del notices["req-0"]
    elif change == "money created":
        bank.accounts["c"]["balance_minor"] += 1
        bank.accounts["f"]["balance_minor"] -= 1
    elif change == "reservation left open":
        bank.accounts["c"]["balance_minor"] -= 50
        bank.accounts["s"]["balance_minor"] += 50
    elif change == "settlement does not mirror the router":
        snapshot.positions = {"bank-a": -90, "mno-b": 90}
    elif change == "outbox not empty":
        snapshot.router_outbox_pending = 1
    elif change == "order lost at the payer":
        del bank.orders["ord-0"]
    elif change == "overdrawn":
        bank.accounts["c"]["balance_minor"] = -5
        bank.accounts["m"]["balance_minor"] = 905
    else:  # pragma: no cover - a typo in the parameter list
        raise AssertionError(change)
    return attempts, snapshot, notices


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("router aborted a committed payment", "split"),
        ("payee never committed", "split"),
        ("payee committed an aborted payment", "split"),
        ("request paid by an aborted transfer", "request was paid"),
        ("payer still in doubt", "still in_doubt"),
        ("wallet disagrees", "wallet says completed"),
        ("merchant never told", "never notified"),
        ("money created", "not conserved"),
        ("reservation left open", "left reserved"),
        ("settlement does not mirror the router", "does not mirror"),
        ("outbox not empty", "router outbox"),
        ("order lost at the payer", "request paid although no order"),
        ("overdrawn", "overdrawn"),
    ],
)
def test_each_broken_detail_is_named(change: str, named: str) -> None:
    violations = _violations(*_broken(change))
    assert any(named in violation for violation in violations), violations
