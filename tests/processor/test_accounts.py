"""The ledger shell on a real database: every planning decision, written and re-read.

Property test at the end: any sequence of deposits, payments (retried), refunds and
refusals keeps the books balanced and conserves money.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from semops.core.errors import SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.money import Money
from semops.ledger import AccountKind, Reservation
from semops.processor import accounts
from semops.processor.accounts import system_account, system_account_name
from semops.store import processor as store
from tests.processor.network import (
    Network,
    Node,
    booked,
    check_ledger,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio
EUR = "EUR"


def ref(kind: IdKind = IdKind.TRANSFER) -> str:
    return make_id(kind, secrets.token_bytes(16))


async def open_two(node: Node) -> tuple[str, str]:
    now = node.processor.context.clock.now()
    async with node.processor.context.database.write() as connection:
        await accounts.open_account(connection, "ac_payer-0001", AccountKind.CUSTOMER, EUR, now)
        await accounts.open_account(connection, "mc_payee-0001", AccountKind.MERCHANT, EUR, now)
        await accounts.deposit(connection, "ac_payer-0001", Money(1000, EUR), "dp_first-0001", now)
    return "ac_payer-0001", "mc_payee-0001"


async def run(node: Node, operation: Any) -> Any:
    async with node.processor.context.database.write() as connection:
        return await operation(connection, node.processor.context.clock.now())


async def balance(node: Node, account_id: str) -> int:
    """The account's balance as booked (a system account's unfolded postings included)."""
    (found,) = (a["balance_minor"] for a in await booked(node) if a["account_id"] == account_id)
    return int(found)


async def test_system_accounts_are_made_once_per_currency(network: Network) -> None:
    node = await network.add("bank-a")
    await open_two(node)
    async with node.processor.context.database.write() as connection:
        await accounts.ensure_system_accounts(connection, EUR, 0)
        await accounts.ensure_system_accounts(connection, "USD", 0)
    kinds = sorted(
        (row["kind"], row["currency"])
        for row in await rows(node, "accounts")
        if ":" in row["account_id"]
    )
    assert kinds == sorted(
        (kind, currency)
        for kind in ("funding", "settlement", "suspense")
        for currency in ("EUR", "USD")
    )
    assert system_account_name(AccountKind.SUSPENSE, EUR) == "suspense:EUR"


@on_both
@pytest.mark.parametrize("amount", [300, 1000])
async def test_a_reservation_is_written_once(network: Network, amount: int) -> None:
    """The balance moves before the entry's key is tried: a retry of a reservation that
    took everything (1000) finds no money left, and must still be told a retry."""
    node = await network.add("bank-a")
    payer, _ = await open_two(node)
    transfer = ref()

    async def reserve(amount_minor: int) -> Any:
        return await run(
            node, lambda c, now: accounts.reserve(c, payer, Money(amount_minor, EUR), transfer, now)
        )

    await reserve(amount)
    await reserve(amount)  # the same operation again: no second entry
    assert await balance(node, payer) == 1000 - amount
    assert await balance(node, "suspense:EUR") == amount
    with pytest.raises(SemopsError) as conflict:
        await reserve(amount + 1)
    assert conflict.value.code == "idempotency_conflict"
    assert len([e for e in await rows(node, "entries") if e["kind"] == "reserve"]) == 1
    await check_ledger(node)


@on_both
async def test_insufficient_funds_write_nothing(network: Network) -> None:
    node = await network.add("bank-a")
    payer, _ = await open_two(node)
    with pytest.raises(SemopsError) as refused:
        await run(node, lambda c, now: accounts.reserve(c, payer, Money(1001, EUR), ref(), now))
    assert refused.value.code == "insufficient_funds"
    assert await balance(node, payer) == 1000
    assert [e["kind"] for e in await rows(node, "entries")] == ["deposit"]


@on_both
async def test_an_overdraft_lets_the_balance_go_below_zero_but_no_further(
    network: Network,
) -> None:
    node = await network.add("bank-a")
    payer, _ = await open_two(node)
    async with node.processor.context.database.write() as connection:
        await connection.execute(
            update(store.accounts)
            .where(store.accounts.c.account_id == payer)
            .values(overdraft_minor=500)
        )
    await run(node, lambda c, now: accounts.reserve(c, payer, Money(1500, EUR), ref(), now))
    assert await balance(node, payer) == -500
    with pytest.raises(SemopsError) as refused:
        await run(node, lambda c, now: accounts.reserve(c, payer, Money(1, EUR), ref(), now))
    assert refused.value.code == "insufficient_funds"
    await check_ledger(node)


async def test_a_blocked_account_receives_but_does_not_send(network: Network) -> None:
    node = await network.add("bank-a")
    payer, payee = await open_two(node)
    async with node.processor.context.database.write() as connection:
        await connection.execute(
            update(store.accounts)
            .where(store.accounts.c.account_id == payer)
            .values(status="blocked")
        )
    with pytest.raises(SemopsError) as refused:
        await run(node, lambda c, now: accounts.reserve(c, payer, Money(1, EUR), ref(), now))
    assert refused.value.code == "account_blocked"
    await run(node, lambda c, now: accounts.deposit(c, payer, Money(5, EUR), "dp_second-001", now))
    assert await balance(node, payer) == 1005
    assert await balance(node, payee) == 0


@on_both
async def test_a_reservation_closes_exactly_once(network: Network) -> None:
    node = await network.add("bank-a")
    payer, payee = await open_two(node)
    transfer = ref()
    reservation = Reservation(transfer, payer, Money(400, EUR))
    await run(node, lambda c, now: accounts.reserve(c, payer, reservation.amount, transfer, now))
    assert await run(node, lambda c, now: accounts.post(c, reservation, payee, now)) is True
    assert await run(node, lambda c, now: accounts.post(c, reservation, payee, now)) is False
    for closing in (
        lambda c, now: accounts.void(c, reservation, now),
        lambda c, now: accounts.post_to_settlement(c, reservation, now),
    ):
        with pytest.raises(SemopsError) as conflict:
            await run(node, closing)
        assert conflict.value.code == "transfer_state_conflict"
    assert (await balance(node, payer), await balance(node, payee)) == (600, 400)
    assert await balance(node, "suspense:EUR") == 0
    await check_ledger(node)


async def test_a_voided_reservation_returns_the_money_and_cannot_be_posted(
    network: Network,
) -> None:
    node = await network.add("bank-a")
    payer, payee = await open_two(node)
    transfer = ref()
    reservation = Reservation(transfer, payer, Money(250, EUR))
    await run(node, lambda c, now: accounts.reserve(c, payer, reservation.amount, transfer, now))
    async with node.processor.context.database.read() as connection:
        view = await accounts.balance_view(connection, payer)
    assert view["balance_minor"] == 1000 and view["available_minor"] == 750
    assert await run(node, lambda c, now: accounts.void(c, reservation, now)) is True
    assert await run(node, lambda c, now: accounts.void(c, reservation, now)) is False
    with pytest.raises(SemopsError):
        await run(node, lambda c, now: accounts.post(c, reservation, payee, now))
    async with node.processor.context.database.read() as connection:
        view = await accounts.balance_view(connection, payer)
    assert view["balance_minor"] == view["available_minor"] == 1000
    await check_ledger(node)


async def test_money_arriving_through_the_router_is_booked_once(network: Network) -> None:
    node = await network.add("bank-a")
    _, payee = await open_two(node)
    transfer = ref()
    for _ in range(2):
        await run(
            node, lambda c, now: accounts.credit_inbound(c, payee, Money(90, EUR), transfer, now)
        )
    assert await balance(node, payee) == 90
    assert await balance(node, "settlement:EUR") == -90
    with pytest.raises(SemopsError) as conflict:
        await run(
            node, lambda c, now: accounts.credit_inbound(c, payee, Money(91, EUR), transfer, now)
        )
    assert conflict.value.code == "idempotency_conflict"


async def test_unknown_accounts_are_refused(network: Network) -> None:
    node = await network.add("bank-a")
    await open_two(node)
    with pytest.raises(SemopsError) as unknown:
        await run(
            node, lambda c, now: accounts.deposit(c, "ac_nobody", Money(1, EUR), "dp_x-000001", now)
        )
    assert unknown.value.code == "account_unknown"


def test_system_accounts_are_told_by_their_names() -> None:
    suspense = system_account("suspense:EUR")
    assert suspense is not None and (suspense.kind, suspense.currency) == ("suspense", EUR)
    for other in ("ac_aaa", "mc_zzz", "customer:EUR", "suspense:XXX", "suspense", ":EUR"):
        assert system_account(other) is None, other


@on_both
async def test_system_postings_are_folded_once_and_booked_balances_never_move(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Payments leave the system rows alone; folding moves their postings into the rows a
    batch at a time, and what is booked is the same before, during and after."""
    node = await network.add("bank-a")
    payer, payee = await open_two(node)
    for amount in (100, 200, 300):
        held = Reservation(ref(), payer, Money(amount, EUR))
        await run(node, lambda c, now, r=held: accounts.reserve(c, payer, r.amount, r.ref, now))
        await run(node, lambda c, now, r=held: accounts.post_to_settlement(c, r, now))
    await run(node, lambda c, now: accounts.credit_inbound(c, payee, Money(50, EUR), ref(), now))
    system_rows = {
        row["account_id"]: row["balance_minor"]
        for row in await rows(node, "accounts")
        if ":" in row["account_id"]
    }
    assert system_rows == {"funding:EUR": 0, "settlement:EUR": 0, "suspense:EUR": 0}
    as_booked = await booked(node)
    assert {a["account_id"]: a["balance_minor"] for a in as_booked if ":" in a["account_id"]} == {
        "funding:EUR": -1000,
        "settlement:EUR": 550,
        "suspense:EUR": 0,
    }
    async with node.processor.context.database.read() as connection:
        settlement = await accounts.snapshot(connection, "settlement:EUR")
    assert settlement.balance_minor == 550  # as booked, not the row
    monkeypatch.setattr(accounts, "FOLD_BATCH_MAX", 4)
    folded = []
    while (count := await run(node, lambda c, now: accounts.fold(c))) > 0:
        folded.append(count)
        assert await booked(node) == as_booked
        await check_ledger(node)
    assert folded == [4, 4, 3]  # a deposit, 3 x (reserve, post: 3 system legs), a credit
    assert [p for p in await rows(node, "postings") if not p["folded"]] == []
    assert {r["account_id"]: r["balance_minor"] for r in await rows(node, "accounts")} == {
        a["account_id"]: a["balance_minor"] for a in as_booked
    }


@on_both
async def test_two_folds_at_once_fold_each_posting_once(network: Network) -> None:
    """On PostgreSQL the second fold waits on the rows the first marks, then finds them
    folded and skips them (SQLite runs one writer at a time)."""
    node = await network.add("bank-a")
    payer, _ = await open_two(node)
    for amount in (10, 20, 30):
        await run(
            node, lambda c, now, a=amount: accounts.reserve(c, payer, Money(a, EUR), ref(), now)
        )
    as_booked = await booked(node)

    async def fold_once() -> int:
        async with node.processor.context.database.write() as connection:
            return await accounts.fold(connection)

    assert sorted(await asyncio.gather(fold_once(), fold_once())) == [0, 4]
    assert await booked(node) == as_booked
    await check_ledger(node)


# --- conservation under any sequence of operations -----------------------------------------

Step = tuple[str, int, int]  # (operation, payer index, amount)
steps = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "pay", "pay_retry", "pay_wrong_pin", "refund"]),
        st.integers(min_value=0, max_value=2),
        st.integers(min_value=1, max_value=1500),
    ),
    min_size=1,
    max_size=12,
)


async def _run_steps(root: Path, plan: list[Step]) -> None:
    network = Network(root)
    try:
        bank = await network.add("bank-a")
        shop = await merchant(bank)
        wallets = [
            await enrolled_wallet(bank, deposit_minor=1000, name=f"Payer {i}") for i in range(3)
        ]
        deposited = 3000
        paid: list[tuple[str, int]] = []
        refunded = 0
        for operation, index, amount in plan:
            wallet = wallets[index]
            if operation == "deposit":
                path = f"/v1/admin/accounts/{wallet.account_id}/deposits"
                body = {"amount_minor": amount, "reference": secrets.token_hex(6)}
                assert (await bank.admin("POST", path, body)).status_code == 200
                deposited += amount
            elif operation.startswith("pay"):
                created = await shop.request(amount)
                pin = "0000" if operation == "pay_wrong_pin" else None
                _, order = wallet.order(created["token"], pin=pin)
                answers = [
                    await wallet.send(order) for _ in range(2 if operation == "pay_retry" else 1)
                ]
                if answers[0].status_code == 200:
                    paid.append((created["request_id"], amount))
                    assert all(answer.text == answers[0].text for answer in answers)
                else:
                    assert answers[0].json()["code"] in (
                        "insufficient_funds",
                        "pin_invalid",
                        "pin_locked",
                    )
            elif paid:
                request_id, paid_amount = paid.pop()
                response = await shop.refund(request_id, min(amount, paid_amount))
                assert response.json()["state"] == "completed"
                refunded += min(amount, paid_amount)
        await check_ledger(bank)
        balances = {row["account_id"]: row["balance_minor"] for row in await booked(bank)}
        people = sum(balances[w.account_id] for w in wallets) + balances[shop.account_id]
        assert people == deposited  # payments and refunds only move money between them
        assert balances["suspense:EUR"] == 0 and balances["funding:EUR"] == -deposited
        assert balances["settlement:EUR"] == 0  # all on-us: nothing owed to the router
        assert min(balances[w.account_id] for w in wallets) >= 0
        assert refunded <= deposited
    finally:
        await network.close()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
def test_any_sequence_of_operations_conserves_money(tmp_path: Path, plan: list[Step]) -> None:
    root = tmp_path / secrets.token_hex(4)
    root.mkdir()
    asyncio.run(_run_steps(root, plan))


@on_both
async def test_a_refused_move_leaves_no_trace_even_when_its_transaction_commits(
    network: Network,
) -> None:
    """The balances move before the plan decides (UPDATE ... RETURNING): a refusal must take
    them back itself, since a caller may catch it and commit what else it wrote."""
    node = await network.add("bank-a")
    payer, _ = await open_two(node)
    now = node.processor.context.clock.now()
    async with node.processor.context.database.write() as connection:
        await accounts.open_account(connection, "ac_dollar-0001", AccountKind.CUSTOMER, "USD", now)
    before = sorted(
        (row["account_id"], row["balance_minor"]) for row in await rows(node, "accounts")
    )
    transfer = ref()
    refusals: list[str] = []

    async def refused(connection: Any, now: int) -> None:
        for operation in (
            accounts.reserve(connection, payer, Money(1001, EUR), transfer, now),  # funds
            accounts.reserve(connection, "ac_nobody-0001", Money(1, EUR), ref(), now),  # unknown
            accounts.credit_inbound(connection, "ac_dollar-0001", Money(1, EUR), ref(), now),
        ):
            with pytest.raises(SemopsError) as error:
                await operation
            refusals.append(error.value.code)

    await run(node, refused)
    assert refusals == ["insufficient_funds", "account_unknown", "currency_mismatch"]
    after = sorted(
        (row["account_id"], row["balance_minor"]) for row in await rows(node, "accounts")
    )
    assert after == before
    assert [entry["kind"] for entry in await rows(node, "entries")] == ["deposit"]
    await run(node, lambda c, now: accounts.reserve(c, payer, Money(1000, EUR), transfer, now))
    assert await balance(node, payer) == 0
    await check_ledger(node)
