"""The merchant backend's pure decisions: the order table, inputs, baskets, refunds,
notice matching, and the processor's key document."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

from semops.core.errors import E, SemopsError
from semops.crypto import KeyUse, condition_for, derive_key, make_fulfilment
from semops.merchant import core
from semops.merchant.core import (
    MERCHANT_ORDER,
    BasketLine,
    MerchantOrderEvent,
    MerchantOrderState,
    OrderInput,
    RefundInput,
    basket_digest_of,
    check_notice_matches,
    checked_order,
    parse_input,
    processor_state_event,
    refund_amount,
    refund_event,
)
from semops.merchant.trust import key_records_from
from semops.protocol import PaymentNotice, PaymentRequest

from .fakes import SIGN_KEY, FakeMerchantProcessor, entropy, seed

S, V = MerchantOrderState, MerchantOrderEvent
NOW = 1_800_000_000


# --- the order table ------------------------------------------------------------------------

ALLOWED = {
    (S.CREATING, V.CREATED): S.OPEN,
    (S.CREATING, V.REFUSED): S.FAILED,
    (S.CREATING, V.EXPIRE): S.EXPIRED,
    (S.OPEN, V.PAID): S.PAID,
    (S.OPEN, V.EXPIRE): S.EXPIRED,
    (S.EXPIRED, V.PAID): S.PAID,
    (S.PAID, V.PAID): S.PAID,
    (S.PARTIALLY_REFUNDED, V.PAID): S.PARTIALLY_REFUNDED,
    (S.REFUNDED, V.PAID): S.REFUNDED,
    (S.PAID, V.REFUND_PARTIAL): S.PARTIALLY_REFUNDED,
    (S.PAID, V.REFUND_FULL): S.REFUNDED,
    (S.PARTIALLY_REFUNDED, V.REFUND_PARTIAL): S.PARTIALLY_REFUNDED,
    (S.PARTIALLY_REFUNDED, V.REFUND_FULL): S.REFUNDED,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(S, V)))
def test_every_pair_of_the_order_table(state: S, event: V) -> None:
    """Each (state, event) pair is either exactly the listed move or refused."""
    if (state, event) in ALLOWED:
        assert MERCHANT_ORDER.next(state, event) is ALLOWED[(state, event)]
    else:
        with pytest.raises(SemopsError) as caught:
            MERCHANT_ORDER.next(state, event)
        assert caught.value.code == E.STATE_TRANSITION_INVALID.code


def test_only_a_notice_makes_an_order_paid() -> None:
    into_paid = {(state, event) for (state, event), target in ALLOWED.items() if target is S.PAID}
    assert {event for _, event in into_paid} == {V.PAID}


def test_failed_and_refunded_are_final_and_creating_is_first() -> None:
    assert MERCHANT_ORDER.initial is S.CREATING
    assert MERCHANT_ORDER.terminal == {S.FAILED, S.REFUNDED}
    assert not MERCHANT_ORDER.is_terminal(S.EXPIRED)  # a late notice still pays


# --- inputs ---------------------------------------------------------------------------------


def test_an_order_is_turned_into_minor_units_and_digested() -> None:
    order = parse_input(OrderInput, {"amount": "12.50", "currency": "EUR", "reference": "R-1"})
    checked = checked_order(order)
    assert (checked["amount_minor"], checked["currency"], checked["basket_digest"]) == (
        1250,
        "EUR",
        None,
    )
    again = checked_order(
        parse_input(OrderInput, {"amount": "12.5", "currency": "EUR", "reference": "R-1"})
    )
    assert again["content_digest"] == checked["content_digest"]
    other = checked_order(
        parse_input(OrderInput, {"amount": "12.51", "currency": "EUR", "reference": "R-1"})
    )
    assert other["content_digest"] != checked["content_digest"]


def test_amounts_follow_the_currency_scale() -> None:
    assert checked_order(OrderInput(amount="500", currency="JPY"))["amount_minor"] == 500
    assert checked_order(OrderInput(amount="1.234", currency="BHD"))["amount_minor"] == 1234
    with pytest.raises(SemopsError) as caught:
        checked_order(OrderInput(amount="5.5", currency="JPY"))
    assert caught.value.code == E.AMOUNT_INVALID.code


def test_a_basket_must_add_up_and_is_summarised_by_a_digest() -> None:
    lines = (
        BasketLine(name="Coffee", quantity=2, unit_amount_minor=350),
        BasketLine(name="Croissant", quantity=1, unit_amount_minor=550),
    )
    checked = checked_order(OrderInput(amount="12.50", currency="EUR", basket=lines))
    assert checked["basket_digest"] == basket_digest_of("EUR", lines)
    assert len(checked["basket_digest"]) == 43
    # Order, currency and every field of a line change the digest.
    assert basket_digest_of("EUR", lines[::-1]) != checked["basket_digest"]
    assert basket_digest_of("USD", lines) != checked["basket_digest"]
    renamed = (BasketLine(name="Tea", quantity=2, unit_amount_minor=350), lines[1])
    assert basket_digest_of("EUR", renamed) != checked["basket_digest"]
    with pytest.raises(SemopsError) as caught:
        checked_order(OrderInput(amount="12.49", currency="EUR", basket=lines))
    assert caught.value.code == E.AMOUNT_INVALID.code


@pytest.mark.parametrize(
    "document",
    [
        {"amount": 12.5, "currency": "EUR"},
        {"amount": "1", "currency": "eur"},
        {"amount": "1", "currency": "EUR", "unknown": 1},
        {"amount": "1", "currency": "EUR", "reference": " padded"},
        {"amount": "1", "currency": "EUR", "reference": "x" * 36},
        {"amount": "1" * 40, "currency": "EUR"},
        {
            "amount": "1",
            "currency": "EUR",
            "basket": [{"name": "a", "quantity": 0, "unit_amount_minor": 1}],
        },
        {
            "amount": "1",
            "currency": "EUR",
            "basket": [{"name": "", "quantity": 1, "unit_amount_minor": 1}],
        },
        {
            "amount": "1",
            "currency": "EUR",
            "basket": [{"name": "a", "quantity": 1, "unit_amount_minor": -1}],
        },
        {
            "amount": "1",
            "currency": "EUR",
            "basket": [{"name": "a", "quantity": "1", "unit_amount_minor": 1}],
        },
        "not an object",
    ],
)
def test_malformed_orders_are_refused_without_echoing_input(document: object) -> None:
    with pytest.raises(SemopsError) as caught:
        parse_input(OrderInput, document)
    assert caught.value.code == E.VALIDATION_FAILED.code
    assert "padded" not in str(caught.value.to_problem())


def test_refund_amounts_are_bounded_by_what_was_paid() -> None:
    assert refund_amount(None, "EUR", paid_minor=1250, committed_minor=0) == 1250
    assert refund_amount(None, "EUR", paid_minor=1250, committed_minor=250) == 1000
    assert refund_amount("2.50", "EUR", paid_minor=1250, committed_minor=0) == 250
    assert refund_amount("10.00", "EUR", paid_minor=1250, committed_minor=250) == 1000
    for requested, committed in (("10.01", 250), (None, 1250), ("0.01", 1250)):
        with pytest.raises(SemopsError) as caught:
            refund_amount(requested, "EUR", paid_minor=1250, committed_minor=committed)
        assert caught.value.code == E.REFUND_EXCEEDS_PAID.code
    with pytest.raises(SemopsError):
        refund_amount("0", "EUR", paid_minor=1250, committed_minor=0)
    assert parse_input(RefundInput, {}).amount is None


def test_refund_events_follow_the_refunded_total() -> None:
    assert refund_event(1250, 0) is None
    assert refund_event(1250, 1) is V.REFUND_PARTIAL
    assert refund_event(1250, 1250) is V.REFUND_FULL
    with pytest.raises(AssertionError):
        refund_event(1250, 1251)


def test_only_an_expired_or_cancelled_request_expires_the_order() -> None:
    assert processor_state_event("expired") is V.EXPIRE
    assert processor_state_event("cancelled") is V.EXPIRE
    for state in ("open", "reserved", "paid", None, 3):
        assert processor_state_event(state) is None


# --- notices --------------------------------------------------------------------------------


def _request() -> PaymentRequest:
    return PaymentRequest(
        request_id="rq_" + "R" * 22,
        payee_processor="mno-b",
        payee_id="corner-shop",
        payee_name="Corner Shop",
        amount_minor=1250,
        currency="EUR",
        reference="INV-1",
        created_at=NOW,
        expires_at=NOW + 600,
        condition=condition_for(make_fulfilment(entropy("f", 32))),
    )


def _notice(**changes: object) -> PaymentNotice:
    values: dict[str, object] = {
        "request_id": "rq_" + "R" * 22,
        "transfer_id": "tr_" + "T" * 22,
        "payee_processor": "mno-b",
        "payee_id": "corner-shop",
        "amount_minor": 1250,
        "currency": "EUR",
        "reference": "INV-1",
        "paid_at": NOW + 30,
        "guarantee": "irrevocable",
    }
    values.update(changes)
    return PaymentNotice.model_validate({k: v for k, v in values.items() if v is not None})


def test_a_matching_notice_passes() -> None:
    check_notice_matches(_notice(), _request())


@pytest.mark.parametrize(
    "change",
    [
        {"request_id": "rq_" + "X" * 22},
        {"payee_processor": "bank-a"},
        {"payee_id": "other-shop"},
        {"amount_minor": 1249},
        {"currency": "USD"},
        {"reference": "INV-2"},
        {"reference": None},
    ],
)
def test_a_notice_differing_in_anything_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(SemopsError) as caught:
        check_notice_matches(_notice(**change), _request())
    assert caught.value.code == E.ORDER_MISMATCH.code


def test_notices_carry_no_field_for_the_payer() -> None:
    fields = set(PaymentNotice.model_fields)
    assert not {f for f in fields if "payer" in f}


# --- the processor's keys -------------------------------------------------------------------


def test_the_key_document_forms_are_understood() -> None:
    record = FakeMerchantProcessor.key_record(SIGN_KEY)
    for document in (
        record,
        dict(record, processor_id="mno-b"),
        [record],
        {"processor_id": "mno-b", "keys": [record]},
        {"processor_id": "mno-b", "signing_key": record},
        dict(record, owner="mno-b", extra="ignored"),
    ):
        (key,) = key_records_from(document)
        assert (key.kid, key.owner, key.use) == (SIGN_KEY.kid, "mno-b", KeyUse.SIGN)


def test_a_key_claiming_another_owner_is_refused() -> None:
    record = FakeMerchantProcessor.key_record(SIGN_KEY)
    with pytest.raises(SemopsError) as caught:
        key_records_from(dict(record, processor_id="bank-a"))
    assert caught.value.code == E.KEY_UNKNOWN.code
    other = derive_key("bank-a", KeyUse.SIGN, seed("other"))
    forged = dict(record, jwk=FakeMerchantProcessor.key_record(other)["jwk"])
    with pytest.raises(SemopsError):
        key_records_from(forged)


def test_a_key_document_without_signing_keys_is_refused() -> None:
    enc = derive_key("mno-b", KeyUse.ENCRYPT, seed("enc"))
    with pytest.raises(SemopsError) as caught:
        key_records_from([FakeMerchantProcessor.key_record(enc)])
    assert caught.value.code == E.KEY_UNKNOWN.code
    for nonsense in ("x", 3, {"keys": "x"}, {"kid": "mno-b:x"}):
        with pytest.raises(SemopsError):
            key_records_from(nonsense)


def test_the_merchant_core_is_pure() -> None:
    tree = ast.parse(Path(core.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("semops."):
                assert node.module.split(".")[1] in {"core", "crypto", "protocol"}
    assert not roots & {"sqlalchemy", "fastapi", "aiohttp", "time", "secrets", "os", "asyncio"}


@pytest.mark.parametrize("control", ["\u202e", "\u2066", "\u200f", "\u061c"])
def test_a_basket_line_name_with_a_bidirectional_control_is_refused(control: str) -> None:
    # Regression: basket lines had their own copy of the one-line rule, without the
    # protocol's refusal of bidi controls, so a line could display as something else.
    from semops.merchant.core import BasketLine

    with pytest.raises(ValueError):
        BasketLine(name=f"Cafe{control}Latte", quantity=1, unit_amount_minor=100)
