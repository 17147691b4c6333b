"""A stateful property test of the processor's STORED ledger (semops.processor.accounts).

`tests/ledger/test_properties.py` walks the pure ledger; this machine drives the shell that
writes it: the real `accounts.reserve / post / post_to_settlement / void / credit_inbound /
deposit` on a real SQLite file brought up by the real migrations, each call in its own
`Database.write()` transaction exactly as the services make them. The rules are the money
movements of a processor -- payments reserved and then posted (on-us or to settlement) or
voided, money arriving through the router, refunds sent (reserved on the merchant and
posted back or routed) and received, deposits, accounts blocked and unblocked -- plus
retries of a finished operation (a no-op) and conflicting re-uses of a reference (a
stable error that writes nothing).

A small model written independently (plain integers per account, the open reservations,
what was deposited) predicts every answer. After every step the invariants of DESIGN.md §7
are read back from the database, not from the model: every entry's and every transfer's
postings sum to zero; no limited account is below its floor; the balances sum to zero and
people + suspense + settlement equal the deposits; suspense equals the open reservations
(and `held_minor` agrees per payer); replaying the postings gives the stored balances.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from semops.core.errors import E, ErrorSpec, SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import ID_RANDOM_BYTES
from semops.core.money import Money
from semops.ledger import AccountKind, Reservation
from semops.processor import accounts
from semops.store import processor as store
from semops.store.db import Database, sqlite_url
from semops.store.migrate import upgrade

EUR: Final = "EUR"
NOW: Final = 1_900_000_000
CUSTOMERS: Final = ("ac_alice-00001", "ac_bob-0000001")
MERCHANTS: Final = ("mc_shop-000001", "mc_cafe-000001")
LIMITED: Final = CUSTOMERS + MERCHANTS
# Bob has an overdraft: his floor is -500, everyone else's is 0.
OVERDRAFT: Final = dict.fromkeys(LIMITED, 0) | {"ac_bob-0000001": 500}
SUSPENSE: Final = accounts.system_account_name(AccountKind.SUSPENSE, EUR)
SETTLEMENT: Final = accounts.system_account_name(AccountKind.SETTLEMENT, EUR)
FUNDING: Final = accounts.system_account_name(AccountKind.FUNDING, EUR)
ALL_ACCOUNTS: Final = (*LIMITED, SUSPENSE, SETTLEMENT, FUNDING)
POST_TARGETS: Final = (*LIMITED, SETTLEMENT)

Operation = Callable[[AsyncConnection, int], Awaitable[Any]]

amounts = st.integers(min_value=1, max_value=1_000)
deposits = st.integers(min_value=100, max_value=3_000)
picks = st.integers(min_value=0, max_value=1_000)


def money(amount_minor: int) -> Money:
    return Money(amount_minor, EUR)


class StoredLedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="semops-ledger-"))
        self.loop = asyncio.new_event_loop()
        self.database = Database(sqlite_url(self.folder / "processor.db"))
        self.run(self._open())
        # The model: what each account must hold, and why.
        self.expected = dict.fromkeys(ALL_ACCOUNTS, 0)
        self.blocked: set[str] = set()
        self.open: dict[str, Reservation] = {}  # ref -> the reservation not yet closed
        self.posted: dict[str, str] = {}  # ref -> the account it was posted to
        self.voided: set[str] = set()
        # Payments that reached a merchant (on-us post or inbound credit) and could be
        # refunded: ref -> (merchant, paid amount, refunded so far, original payer or None).
        self.refundable: dict[str, tuple[str, int, int, str | None]] = {}
        self.deposited = 0
        self.done: list[tuple[str, Operation]] = []  # (what, the very same call again)
        self.refs = 0

    # --- plumbing --------------------------------------------------------------------------

    def run(self, coroutine: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _open(self) -> None:
        await upgrade(self.database, "processor")
        async with self.database.write() as connection:
            for account_id in LIMITED:
                kind = AccountKind.CUSTOMER if account_id in CUSTOMERS else AccountKind.MERCHANT
                await accounts.open_account(connection, account_id, kind, EUR, NOW)
            for account_id, overdraft_minor in OVERDRAFT.items():
                await connection.execute(
                    update(store.accounts)
                    .where(store.accounts.c.account_id == account_id)
                    .values(overdraft_minor=overdraft_minor)
                )

    def teardown(self) -> None:
        try:
            self.run(self.database.dispose())
        finally:
            self.loop.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    def next_ref(self, kind: IdKind) -> str:
        self.refs += 1
        return make_id(kind, self.refs.to_bytes(ID_RANDOM_BYTES, "big"))

    async def _write(self, operation: Operation) -> Any:
        async with self.database.write() as connection:
            return await operation(connection, NOW)

    async def _books(self) -> tuple[list[dict[str, Any]], ...]:
        """The accounts as booked (system postings folded or not), entries and postings."""
        async with self.database.read() as connection:
            tables = [await store.booked_accounts(connection)]
            for table in (store.entries, store.postings):
                result = await connection.execute(select(table))
                tables.append([dict(row) for row in result.mappings()])
        return tuple(tables)

    async def _rows(self) -> dict[str, int]:
        async with self.database.read() as connection:
            result = await connection.execute(select(store.accounts))
            return {row["account_id"]: int(row["balance_minor"]) for row in result.mappings()}

    def books(self) -> tuple[list[dict[str, Any]], ...]:
        return tuple(self.run(self._books()))

    def execute(self, refusal: ErrorSpec | None, operation: Operation) -> Any:
        """Run one operation whose answer the model predicted; a refusal writes nothing."""
        if refusal is None:
            return self.run(self._write(operation))
        before = self.books()
        with pytest.raises(SemopsError) as caught:
            self.run(self._write(operation))
        assert caught.value.code == refusal.code, caught.value
        assert self.books() == before, "a refused operation changed the books"
        return None

    def move(self, from_id: str, to_id: str, amount_minor: int) -> None:
        self.expected[from_id] -= amount_minor
        self.expected[to_id] += amount_minor

    def sending_refusal(self, account_id: str, amount_minor: int) -> ErrorSpec | None:
        """The documented order: a blocked account first, then its funds."""
        if account_id in self.blocked:
            return E.ACCOUNT_BLOCKED
        if self.expected[account_id] - amount_minor < -OVERDRAFT[account_id]:
            return E.INSUFFICIENT_FUNDS
        return None

    def pick_open(self, pick: int) -> Reservation:
        refs = sorted(self.open)
        return self.open[refs[pick % len(refs)]]

    def _reserve(self, payer: str, amount_minor: int, ref: str) -> bool:
        """Reserve and record it in the model; False if refused (and nothing was written)."""
        refusal = self.sending_refusal(payer, amount_minor)

        async def operation(connection: AsyncConnection, now: int) -> None:
            await accounts.reserve(connection, payer, money(amount_minor), ref, now)

        self.execute(refusal, operation)
        if refusal is not None:
            return False
        self.move(payer, SUSPENSE, amount_minor)
        self.open[ref] = Reservation(ref, payer, money(amount_minor))
        self.done.append(("reserve", operation))
        return True

    def _close(self, reservation: Reservation, target: str | None) -> None:
        """Post the reservation to `target`, or void it (target None)."""

        async def operation(connection: AsyncConnection, now: int) -> bool:
            if target is None:
                return await accounts.void(connection, reservation, now)
            if target == SETTLEMENT:
                return await accounts.post_to_settlement(connection, reservation, now)
            return await accounts.post(connection, reservation, target, now)

        assert self.execute(None, operation) is True  # posting or voiding never needs funds
        ref, amount_minor = reservation.ref, reservation.amount.amount_minor
        del self.open[ref]
        if target is None:
            self.move(SUSPENSE, reservation.payer_account_id, amount_minor)
            self.voided.add(ref)
        else:
            self.move(SUSPENSE, target, amount_minor)
            self.posted[ref] = target
            if target in MERCHANTS and ref.startswith("tr_"):
                self.refundable[ref] = (target, amount_minor, 0, reservation.payer_account_id)
        self.done.append(("close", operation))

    # --- rules -----------------------------------------------------------------------------

    @rule(account_id=st.sampled_from(LIMITED), amount_minor=deposits)
    def deposit(self, account_id: str, amount_minor: int) -> None:
        ref = "dp_" + self.next_ref(IdKind.TRANSFER)[3:]

        async def operation(connection: AsyncConnection, now: int) -> None:
            await accounts.deposit(connection, account_id, money(amount_minor), ref, now)

        self.execute(None, operation)  # money can always arrive, blocked or not
        self.move(FUNDING, account_id, amount_minor)
        self.deposited += amount_minor
        self.done.append(("deposit", operation))

    @rule(payer=st.sampled_from(LIMITED), amount_minor=amounts)
    def reserve(self, payer: str, amount_minor: int) -> None:
        self._reserve(payer, amount_minor, self.next_ref(IdKind.TRANSFER))

    @precondition(lambda self: bool(self.open))
    @rule(pick=picks, to_account=st.sampled_from(POST_TARGETS))
    def post(self, pick: int, to_account: str) -> None:
        reservation = self.pick_open(pick)
        if to_account == reservation.payer_account_id:
            to_account = SETTLEMENT  # paying oneself is not a payment
        self._close(reservation, to_account)

    @precondition(lambda self: bool(self.open))
    @rule(pick=picks)
    def void(self, pick: int) -> None:
        self._close(self.pick_open(pick), None)

    @rule(account_id=st.sampled_from(LIMITED), amount_minor=amounts, refund=st.booleans())
    def credit_inbound(self, account_id: str, amount_minor: int, refund: bool) -> None:
        """Money through the router: a routed payment to us, or a refund coming back."""
        ref = self.next_ref(IdKind.REFUND if refund else IdKind.TRANSFER)

        async def operation(connection: AsyncConnection, now: int) -> None:
            await accounts.credit_inbound(connection, account_id, money(amount_minor), ref, now)

        self.execute(None, operation)
        self.move(SETTLEMENT, account_id, amount_minor)
        if account_id in MERCHANTS and not refund:
            self.refundable[ref] = (account_id, amount_minor, 0, None)
        self.done.append(("credit_inbound", operation))

    @precondition(lambda self: any(paid > done for _, paid, done, _ in self.refundable.values()))
    @rule(pick=picks, share=st.integers(min_value=1, max_value=100))
    def refund(self, pick: int, share: int) -> None:
        """A merchant refunds (part of) a payment: reserved on its account; an on-us one is
        posted back to the payer in the same transaction (as refunds.py does), a routed one
        stays open until the router's word posts it to settlement or voids it."""
        candidates = sorted(
            ref for ref, (_, paid, done, _) in self.refundable.items() if paid > done
        )
        original = candidates[pick % len(candidates)]
        merchant, paid, done, payer = self.refundable[original]
        amount_minor = max(1, (paid - done) * share // 100)
        refund_ref = self.next_ref(IdKind.REFUND)
        if payer is None:  # routed: the refund stays a reservation in flight
            if self._reserve(merchant, amount_minor, refund_ref):
                self.refundable[original] = (merchant, paid, done + amount_minor, payer)
            return
        reservation = Reservation(refund_ref, merchant, money(amount_minor))
        refusal = self.sending_refusal(merchant, amount_minor)

        async def operation(connection: AsyncConnection, now: int) -> None:
            await accounts.lock_accounts(connection, [merchant, payer])
            await accounts.reserve(connection, merchant, reservation.amount, refund_ref, now)
            assert await accounts.post(connection, reservation, payer, now)

        self.execute(refusal, operation)
        if refusal is None:
            self.move(merchant, payer, amount_minor)
            self.posted[refund_ref] = payer
            self.refundable[original] = (merchant, paid, done + amount_minor, payer)

    @rule(pick=picks)
    def block_or_unblock(self, pick: int) -> None:
        """At most one account is blocked at a time: unblock it, or block one."""
        account_id = min(self.blocked) if self.blocked else LIMITED[pick % len(LIMITED)]
        status = "open" if account_id in self.blocked else "blocked"

        async def operation(connection: AsyncConnection, now: int) -> None:
            await connection.execute(
                update(store.accounts)
                .where(store.accounts.c.account_id == account_id)
                .values(status=status)
            )

        self.execute(None, operation)
        self.blocked.symmetric_difference_update({account_id})

    @rule()
    def fold(self) -> None:
        """System postings folded into their rows (any time): nothing booked changes."""
        before = self.books()
        self.run(self._write(lambda connection, now: accounts.fold(connection)))
        assert self.books()[0] == before[0]

    @precondition(lambda self: bool(self.done))
    @rule(pick=picks)
    def retry(self, pick: int) -> None:
        """The very same call again (a lost answer): nothing is written a second time."""
        what, operation = self.done[pick % len(self.done)]
        before = self.books()
        answer = self.execute(None, operation)
        assert answer is (False if what == "close" else None), (what, answer)
        assert self.books() == before

    @precondition(lambda self: bool(self.posted or self.voided))
    @rule(pick=picks, to_account=st.sampled_from((None, *POST_TARGETS)))
    def close_again_differently(self, pick: int, to_account: str | None) -> None:
        """A closed reservation closed another way: transfer_state_conflict, no change."""
        closed = sorted({*self.posted, *self.voided})
        ref = closed[pick % len(closed)]
        entry = self.run(self._read_entry(ref, "reserve"))
        assert entry is not None, "every closed reservation was reserved first"
        payer, amount_minor = entry
        reservation = Reservation(ref, payer, money(amount_minor))
        previous = self.posted.get(ref)  # None: it was voided
        target = to_account  # None: void
        if target == previous:  # the same closure again would be a retry, not a conflict
            target = SETTLEMENT if previous is None else None

        async def operation(connection: AsyncConnection, now: int) -> bool:
            if target is None:
                return await accounts.void(connection, reservation, now)
            return await accounts.post(connection, reservation, target, now)

        self.execute(E.TRANSFER_STATE_CONFLICT, operation)

    @precondition(lambda self: bool(self.open or self.posted or self.voided))
    @rule(pick=picks, extra=st.integers(min_value=1, max_value=50))
    def reuse_reference_for_other_content(self, pick: int, extra: int) -> None:
        """A reserve under a used reference with another amount: idempotency_conflict."""
        refs = sorted(ref for ref in {*self.open, *self.posted, *self.voided})
        ref = refs[pick % len(refs)]
        entry = self.run(self._read_entry(ref, "reserve"))
        assert entry is not None
        payer, amount_minor = entry

        async def operation(connection: AsyncConnection, now: int) -> None:
            await accounts.reserve(connection, payer, money(amount_minor + extra), ref, now)

        self.execute(E.IDEMPOTENCY_CONFLICT, operation)

    async def _read_entry(self, ref: str, kind: str) -> tuple[str, int] | None:
        """(debited account, amount) of the stored entry of that kind for `ref`."""
        async with self.database.read() as connection:
            row = await store.find_row(connection, store.entries, transfer_ref=ref, kind=kind)
            if row is None:
                return None
            postings = await store.entry_postings(connection, row["entry_id"])
        ((debited, amount_minor),) = [(a, -m) for a, m in postings if m < 0]
        return debited, amount_minor

    # --- invariants, read back from the database --------------------------------------------

    @invariant()
    def books_balance_and_match_the_model(self) -> None:
        account_rows, entry_rows, posting_rows = self.books()
        stored = {row["account_id"]: int(row["balance_minor"]) for row in account_rows}
        ref_of = {row["entry_id"]: row["transfer_ref"] for row in entry_rows}
        assert len(ref_of) == len(entry_rows), "an entry id was written twice"

        by_entry: dict[str, int] = {}
        by_transfer: dict[str, int] = {}
        replayed = dict.fromkeys(stored, 0)
        for posting in posting_rows:
            amount_minor = int(posting["amount_minor"])
            by_entry[posting["entry_id"]] = by_entry.get(posting["entry_id"], 0) + amount_minor
            ref = ref_of[posting["entry_id"]]
            by_transfer[ref] = by_transfer.get(ref, 0) + amount_minor
            replayed[posting["account_id"]] += amount_minor
        assert set(by_entry) == set(ref_of), "an entry without postings"
        assert all(total == 0 for total in by_entry.values()), by_entry
        assert all(total == 0 for total in by_transfer.values()), by_transfer
        assert replayed == stored, "replaying the postings does not give the stored balances"
        assert stored == self.expected
        folded = dict.fromkeys(stored, 0)
        for posting in posting_rows:
            if posting["folded"]:
                folded[posting["account_id"]] += int(posting["amount_minor"])
            else:
                assert posting["account_id"] in (FUNDING, SUSPENSE, SETTLEMENT), posting
        assert self.run(self._rows()) == folded, "a row is not the sum of its folded postings"

        for row in account_rows:
            if row["account_id"] in LIMITED:
                assert row["balance_minor"] >= -row["overdraft_minor"], row
                assert row["overdraft_minor"] == OVERDRAFT[row["account_id"]], row
        assert sum(stored.values()) == 0
        assert stored[FUNDING] == -self.deposited
        people = sum(stored[account_id] for account_id in LIMITED)
        assert people + stored[SUSPENSE] + stored[SETTLEMENT] == self.deposited

    @invariant()
    def suspense_holds_exactly_the_open_reservations(self) -> None:
        _, entry_rows, posting_rows = self.books()
        kinds: dict[str, list[str]] = {}
        for row in entry_rows:
            kinds.setdefault(row["transfer_ref"], []).append(row["kind"])
        reserved = {ref for ref, found in kinds.items() if "reserve" in found}
        closed = {ref for ref, found in kinds.items() if {"post", "void"} & set(found)}
        for found in kinds.values():
            assert sorted(found) in (
                ["deposit"],
                ["credit_inbound"],
                ["reserve"],
                ["post", "reserve"],
                ["reserve", "void"],
            ), found
        assert reserved - closed == set(self.open)
        open_entries = {f"{ref}:reserve" for ref in self.open}
        suspense_in = sum(
            p["amount_minor"]
            for p in posting_rows
            if p["entry_id"] in open_entries and p["account_id"] == SUSPENSE
        )
        model_open = sum(r.amount.amount_minor for r in self.open.values())
        assert self.expected[SUSPENSE] == suspense_in == model_open
        held = self.run(self._held())
        for account_id in LIMITED:
            expected_held = sum(
                r.amount.amount_minor
                for r in self.open.values()
                if r.payer_account_id == account_id
            )
            assert held[account_id] == expected_held, (account_id, held)

    async def _held(self) -> dict[str, int]:
        async with self.database.read() as connection:
            return {
                account_id: await store.held_minor(connection, account_id) for account_id in LIMITED
            }


StoredLedgerMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_any_sequence_of_stored_operations_keeps_the_books = StoredLedgerMachine.TestCase
