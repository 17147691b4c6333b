"""The audit chain's pure core: entries, allowlist, checkpoints, and a verifier that names
the first entry that does not hold, whatever was done to the stored rows."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.audit.chain import (
    CHECKPOINT_KIND,
    GENESIS_HASH,
    AuditDataError,
    AuditEntry,
    checkpoint_due,
    entry_body,
    entry_hash,
    make_checkpoint,
    next_entry,
    verify_chain,
)
from semops.crypto import KeyRing, KeyUse, derive_key

START = 1_900_000_000
KEY = derive_key("router", KeyUse.SIGN, hashlib.sha384(b"audit test router").digest())
OTHER_KEY = derive_key("router", KeyUse.SIGN, hashlib.sha384(b"someone else").digest())
RING = KeyRing([KEY.public_record(not_before=START - 10, not_after=START + 10**6)])
EVERY = 5


def build(count: int, *, every: int = EVERY, key: Any = KEY) -> list[dict[str, Any]]:
    """A log of `count` ordinary entries with checkpoints, as stored rows."""
    rows: list[dict[str, Any]] = []
    last: AuditEntry | None = None
    for index in range(count):
        previous = (last.seq, last.hash) if last else None
        last = next_entry(
            previous,
            at=START + index,
            kind="transfer_committed",
            actor="router",
            data={"transfer_id": f"tr_{index:08d}", "amount_minor": 100 + index, "currency": "EUR"},
        )
        rows.append(last.row())
        if checkpoint_due(last, every):
            last = make_checkpoint("router", last, key, START + index)
            rows.append(last.row())
    return rows


def verdict(rows: list[dict[str, Any]], *, every: int = EVERY) -> tuple[int, str] | None:
    report = verify_chain("router", rows, RING, every=every)
    return (report.broken.seq, report.broken.problem) if report.broken else None


def test_a_clean_log_verifies_with_its_checkpoints_counted() -> None:
    rows = build(12)
    report = verify_chain("router", rows, RING, every=EVERY)
    # Ordinary entries 5 and 10 are followed by checkpoints 6 and 11; 12..14 are unsigned.
    assert report.ok and report.entries == 14 and report.checkpoints == 2
    assert report.last_checkpoint_seq == 11 and report.unsigned_tail == 3


def test_the_first_entry_chains_to_the_genesis_hash_and_each_hash_covers_the_body() -> None:
    first = next_entry(None, at=START, kind="cap_changed", actor="operator", data={"cap_minor": 5})
    assert first.seq == 1 and first.prev_hash == GENESIS_HASH
    assert first.hash == entry_hash(
        entry_body(1, START, "cap_changed", "operator", {"cap_minor": 5}, GENESIS_HASH)
    )


def test_an_edited_entry_is_named() -> None:
    rows = build(12)
    rows[3]["data"] = rows[3]["data"].replace('"amount_minor":103', '"amount_minor":903')
    assert verdict(rows) == (4, "hash does not match the content (altered)")


def test_an_edit_with_every_later_hash_recomputed_is_caught_by_the_checkpoint() -> None:
    rows = build(12)
    data = {"transfer_id": "tr_00000003", "amount_minor": 903, "currency": "EUR"}
    previous = (3, rows[2]["hash"])
    for index in range(3, len(rows)):  # the attacker edits entry 4 and rebuilds the chain
        row = rows[index]
        content = data if index == 3 else _data(row)
        if row["kind"] == CHECKPOINT_KIND:  # re-point the checkpoint; its signature stays
            content = {**content, "covers_seq": previous[0], "covers_hash": previous[1]}
        rebuilt = next_entry(
            previous, at=row["at"], kind=row["kind"], actor=row["actor"], data=content
        )
        rows[index], previous = rebuilt.row(), (rebuilt.seq, rebuilt.hash)
    assert verdict(rows) == (6, "checkpoint signature is over other content")


def _data(row: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(row["data"]))


def test_a_removed_entry_is_named() -> None:
    rows = build(12)
    del rows[4]
    assert verdict(rows) == (6, "expected entry 5 here (removed or reordered)")


def test_an_inserted_entry_with_a_valid_hash_is_named() -> None:
    rows = build(12)
    forged = next_entry(
        (2, rows[1]["hash"]), at=START, kind="cap_changed", actor="operator", data={"cap_minor": 1}
    )
    renumbered = [forged.row()] + [{**row, "seq": row["seq"] + 1} for row in rows[2:]]
    rows = rows[:2] + renumbered
    assert verdict(rows) == (
        4,
        "prev_hash does not match the previous entry (inserted or reordered)",
    )


def test_two_swapped_entries_are_named() -> None:
    rows = build(12)
    rows[1], rows[2] = {**rows[2], "seq": 2}, {**rows[1], "seq": 3}
    assert verdict(rows) == (
        2,
        "prev_hash does not match the previous entry (inserted or reordered)",
    )


def test_a_log_cut_at_a_due_checkpoint_is_named_but_a_short_tail_is_not() -> None:
    rows = build(9)  # ends with entry 10 and its checkpoint 11
    assert verdict(rows[:-1]) == (10, "the log ends where a signed checkpoint is due (cut short)")
    assert verdict(rows[:-3]) is None  # undetectable without an outside anchor: see chain.py


def test_a_removed_checkpoint_is_named() -> None:
    rows = build(12)
    del rows[5]
    assert verdict(rows) == (7, "the checkpoint due after entry 5 is missing")


def test_a_checkpoint_signed_by_another_key_is_refused() -> None:
    rows = build(6, key=OTHER_KEY)
    seq, problem = verdict(rows) or (0, "")
    assert seq == 6 and problem == "checkpoint signature does not verify (key_unknown)"


def test_a_checkpoint_from_another_service_is_refused() -> None:
    rows = build(5)
    checkpoint = make_checkpoint("bank-a", _entry(rows[-2]), KEY, START)
    rows[-1] = checkpoint.row()
    assert verdict(rows) == (6, "checkpoint signature is over other content")


def _entry(row: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        row["seq"], row["at"], row["kind"], row["actor"], _data(row), row["prev_hash"], row["hash"]
    )


def test_data_outside_the_allowlist_is_refused_when_written() -> None:
    for data in (
        {"name": "Alice Example"},  # not a field at all
        {"pin": "1234"},
        {"request_id": "rq_0123456789abcdef"},  # the router must not see it (§5)
        {"account_id": "Alice Example"},  # free text in an id field
        {"amount_minor": "100"},
        {"signature": "a.b.c"},  # only checkpoints carry signatures
    ):
        with pytest.raises(AuditDataError):
            next_entry(None, at=START, kind="order_committed", actor="bank-a", data=data)
    with pytest.raises(AuditDataError):
        next_entry(None, at=START, kind="Order Committed", actor="bank-a", data={})


def test_a_stored_entry_outside_the_allowlist_is_named_even_with_a_matching_hash() -> None:
    rows = build(3)
    body = entry_body(
        2, START, "order_committed", "bank-a", {"phone": "+4915112345678"}, rows[0]["hash"]
    )
    rows[1] = {**body, "data": '{"phone":"+4915112345678"}', "hash": entry_hash(body)}
    rows[2]["prev_hash"] = rows[1]["hash"]
    problem = verdict(rows)
    assert problem is not None and problem[0] == 2 and "outside the audit allowlist" in problem[1]


def test_non_canonical_or_broken_data_text_is_named() -> None:
    rows = build(3)
    rows[1]["data"] = rows[1]["data"].replace(",", ", ")
    assert verdict(rows) == (2, "data is not in canonical form (altered)")
    rows = build(3)
    rows[1]["data"] = "{not json"
    assert verdict(rows) == (2, "data is not valid JSON")


MUTATIONS = ("edit", "delete", "insert", "swap")


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=3, max_value=30),
    mutation=st.sampled_from(MUTATIONS),
    where=st.integers(min_value=0, max_value=10_000),
)
def test_every_single_tampering_before_the_last_checkpoint_is_detected(
    count: int, mutation: str, where: int
) -> None:
    rows = build(count)
    checkpoints = [i for i, row in enumerate(rows) if row["kind"] == CHECKPOINT_KIND]
    if not checkpoints:
        return
    last_checkpoint = checkpoints[-1]
    index = where % last_checkpoint  # strictly before the last checkpoint
    if mutation == "edit":
        rows[index] = {**rows[index], "at": rows[index]["at"] + 1}
    elif mutation == "delete":
        del rows[index]
    elif mutation == "insert":
        rows.insert(index, dict(rows[index]))
    else:
        rows[index], rows[index + 1] = rows[index + 1], rows[index]
    assert verdict(rows) is not None
