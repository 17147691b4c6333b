"""Six payments by two customers of one bank to one merchant at the MNO, interleaved: what
the merchant backend and the payee processor hold about them must not tell which payments
came from the same customer.

Everything each of them stores about a payment is collected: every column of every row,
in any table, that names the payment (its merchant order, request or transfer id), and
every claim and header field of every signed message inside those rows. A value is keyed
by where it sits (database, table, column or claim), so a timestamp is compared with the
same timestamp field only. A key that two payments of one customer share and no payment of
the other has would link them. Payments alternate between the two customers, so equal
timestamps of one customer's payments always enclose a payment of the other.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from semops.privacy import jose_tokens, read_tables, sqlite_read_url
from tests.privacy.story import LinkedPayment, Story

pytestmark = pytest.mark.timeout(300)

Key = tuple[str, str]  # (where: db.table.column[#claim], value)


def _leaves(prefix: str, value: Any) -> Iterator[Key]:
    if isinstance(value, dict):
        for name, inner in value.items():
            yield from _leaves(f"{prefix}.{name}", inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _leaves(f"{prefix}[]", inner)
    else:
        yield prefix, json.dumps(value)


def _keys_of_cell(where: str, value: Any) -> Iterator[Key]:
    text = value if isinstance(value, str) else json.dumps(value)
    yield where, text
    for token in jose_tokens(text):
        for part, decoded in zip(("header", "claims"), token.texts, strict=True):
            yield from _leaves(f"{where}#{part}", json.loads(decoded))


def _about(story: Story, label: str, db: Path) -> list[set[Key]]:
    """Per linked payment: every key the database holds in rows naming that payment."""
    tables = asyncio.run(read_tables(sqlite_read_url(db)))
    per_payment: list[set[Key]] = [set() for _ in story.linked]
    for table, rows in tables.items():
        for row in rows:
            texts = [str(value) for value in row.values() if value is not None]
            for index, payment in enumerate(story.linked):
                ids = (payment.order_id, payment.request_id, payment.transfer_id)
                if any(i in text for i in ids for text in texts):
                    for column, value in row.items():
                        if value is not None:
                            where = f"{label}.{table}.{column}"
                            per_payment[index].update(_keys_of_cell(where, value))
    return per_payment


def _linking(payments: list[LinkedPayment], held: list[set[Key]]) -> list[Key]:
    """Keys shared by two or more payments of one customer and by none of the other's."""
    by_payer: dict[str, list[set[Key]]] = {}
    for payment, keys in zip(payments, held, strict=True):
        by_payer.setdefault(payment.payer, []).append(keys)
    (first, firsts), (_, seconds) = by_payer.items()
    assert first and len(firsts) == len(seconds) == 3
    found = []
    for key in set().union(*held):
        in_first = sum(key in keys for keys in firsts)
        in_second = sum(key in keys for keys in seconds)
        if (in_first >= 2 and in_second == 0) or (in_second >= 2 and in_first == 0):
            found.append(key)
    return sorted(found)


@pytest.fixture(scope="module")
def held(story: Story) -> dict[str, list[set[Key]]]:
    data = story.data_dir
    return {
        "merchant": _about(story, "cafe", data / "merchants" / "corner-cafe" / "corner-cafe.db"),
        "payee processor": _about(story, "mno-b", data / "mno-b" / "mno-b.db"),
    }


@pytest.mark.parametrize("side", ["merchant", "payee processor"])
def test_nothing_held_about_the_payments_links_those_of_one_customer(
    story: Story, held: dict[str, list[set[Key]]], side: str
) -> None:
    per_payment = held[side]
    assert all(len(keys) >= 20 for keys in per_payment), "the comparison must not be vacuous"
    assert not _linking(story.linked, per_payment)


def test_the_payee_processor_holds_a_fresh_payer_reference_per_payment(
    held: dict[str, list[set[Key]]],
) -> None:
    refs = [
        {value for where, value in keys if where == "mno-b.inbound_transfers.payer_ref"}
        for keys in held["payee processor"]
    ]
    assert all(len(ref) == 1 for ref in refs)
    assert len(set().union(*refs)) == len(refs)  # six payments, six pseudonyms


def test_the_merchant_sees_the_notices_and_nothing_of_the_payer(
    held: dict[str, list[set[Key]]],
) -> None:
    claims = {
        where.split("#", 1)[1] for keys in held["merchant"] for where, _ in keys if "#" in where
    }
    assert "claims.guarantee" in claims and "claims.transfer_id" in claims  # notices were read
    assert not {claim for claim in claims if "payer" in claim}


def test_the_linking_rule_would_catch_a_value_one_customer_leaves_behind(
    story: Story, held: dict[str, list[set[Key]]]
) -> None:
    planted = [set(keys) for keys in held["merchant"]]
    for payment, keys in zip(story.linked, planted, strict=True):
        if payment.payer == "zelda":
            keys.add(("cafe.orders.device_hint", "zelda-phone"))
    assert _linking(story.linked, planted) == [("cafe.orders.device_hint", "zelda-phone")]
