"""What one routed payment asks of each processor's database: a bound per side, so that a
statement or a write transaction added to the payment path shows here (issue: fewer SQL
statements per payment; `semops bench` reports the same counters for the whole network).

The counters are `Database.stats`: statements executed (BEGIN, SAVEPOINT and COMMIT not
counted) and write transactions asked for. The bounds are what the path takes today; lower
them when a change takes fewer.
"""

from __future__ import annotations

import pytest

from semops.store.db import DatabaseStats
from tests.databases import CompiledPerCall
from tests.processor.network import Network, Node, enrolled_wallet, merchant, on_both

pytestmark = pytest.mark.anyio

# bank-a (payer): one read of the device with "is this order id stored or refused", then one
# write for the PIN attempt, the order and its reservation, one for the commit (post,
# receipt, the audit entry staged). A money move is the customer's or merchant's UPDATE ...
# RETURNING, then the entry with its postings: one statement on PostgreSQL (a CTE), two on
# SQLite. No statement touches a system account's row: their postings are folded later.
PAYER_STATEMENTS_MAX = {"sqlite": 10, "postgresql": 8}
PAYER_WRITES_MAX = 2
# mno-b (payee): the request read, then one write reserving it (if still as read) with the
# answer stored; on the commit the transfer read with its request and payee, then one
# write moving both on (if still as read) and crediting the payee.
PAYEE_STATEMENTS_MAX = {"sqlite": 10, "postgresql": 9}
PAYEE_WRITES_MAX = 2


def _taken(node: Node, before: DatabaseStats) -> tuple[int, int]:
    stats = node.processor.context.database.stats
    return stats.statements - before.statements, stats.writes - before.writes


def _copy(node: Node) -> DatabaseStats:
    stats = node.processor.context.database.stats
    return DatabaseStats(stats.statements, stats.writes, stats.commits)


@on_both
async def test_a_routed_payment_stays_within_its_statement_budget(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank, deposit_minor=10_000, phone="+447700900999")
    shop = await merchant(mno, "kiosk")
    created = await shop.request(1250, reference="T-42")
    bank_before, mno_before = _copy(bank), _copy(mno)
    per_call = CompiledPerCall(monkeypatch)
    response = await wallet.pay(created["token"])
    assert response.status_code == 200, response.text
    payer, payee = _taken(bank, bank_before), _taken(mno, mno_before)
    print(f"per routed payment: payer {payer}, payee {payee} (statements, writes)")
    backend = "sqlite" if bank.processor.context.database.sqlite else "postgresql"
    assert payer[0] <= PAYER_STATEMENTS_MAX[backend] and payer[1] <= PAYER_WRITES_MAX, payer
    assert payee[0] <= PAYEE_STATEMENTS_MAX[backend] and payee[1] <= PAYEE_WRITES_MAX, payee
    assert per_call.statements == []  # every statement compiled once, not per payment
