"""Size limits on every service: bodies, fields, lists and nesting depth.

Every body is bounded by `BodyLimit` (MESSAGE_MAX_BYTES unless a route says otherwise),
by Content-Length before a byte is read and while streaming a chunked body; every field
and list by its model (semops.core.limits); nesting by JSON_DEPTH_MAX or the parser.
Each over-limit request must be answered with problem+json carrying the stable code of
the error registry, and must leave every row of the service's database as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import pytest

from semops.core.errors import E, ErrorSpec
from semops.core.limits import (
    AMOUNT_MAX_MINOR,
    BASKET_LINES_MAX,
    BASKET_NAME_MAX_CHARS,
    DISPLAY_NAME_MAX_CHARS,
    ID_MAX_CHARS,
    JSON_DEPTH_MAX,
    MESSAGE_MAX_BYTES,
    PARTY_ID_MAX_CHARS,
    REASON_TEXT_MAX_CHARS,
    REFERENCE_MAX_CHARS,
)

from .support import FuzzNetwork, changed_tables, problem_of

pytestmark = pytest.mark.timeout(300)

JSON: Final = "application/json"
JOSE: Final = "application/jose"
# Deeper than any SEMOPS message and than Python's recursion limit, inside the body limit.
DEEP: Final = 3000
_ID: Final = "mo_" + "A" * 22


@dataclass(frozen=True)
class Over:
    """One over-limit request and the answer it must get."""

    label: str
    service: str
    method: str
    path: str
    body: bytes | None
    error: ErrorSpec
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _padded(value: dict[str, object]) -> bytes:
    """A well-formed JSON object one byte over the body limit."""
    body = _json({**value, "padding": ""})
    return _json({**value, "padding": "x" * (MESSAGE_MAX_BYTES + 1 - len(body))})


def _deep_list() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def _deep_object() -> bytes:
    depth = DEEP * 2 // 3  # five bytes a level: inside the body limit
    return b'{"a":' * depth + b"1" + b"}" * depth


def _deep_jws() -> bytes:
    """A compact JWS whose protected header nests far too deep (read before any key).
    Refused as an invalid signature: a token's every failure is one opaque error."""
    import base64

    header = base64.urlsafe_b64encode(b'{"alg":"ES256","x":' + b"[" * 2000 + b"]" * 2000 + b"}")
    return header.rstrip(b"=") + b".e30.AAAA"


def _customer(**fields: object) -> dict[str, object]:
    return {"name": "Fuzz Person", "phone": "+4915100000001", "currency": "EUR", **fields}


def _merchant_request(**fields: object) -> dict[str, object]:
    return {"amount_minor": 100, "currency": "EUR", "idempotency_key": "ik_" + "B" * 22, **fields}


def _order(**fields: object) -> dict[str, object]:
    return {"amount": "1.00", "currency": "EUR", **fields}


_LINE: Final = {"name": "Tea", "quantity": 1, "unit_amount_minor": 100}

CASES: Final = (
    # --- processor, public port ----------------------------------------------------------
    Over(
        "body", "processor-public", "POST", "/v1/admin/customers", _padded(_customer()), E.TOO_LARGE
    ),
    Over(
        "display name",
        "processor-public",
        "POST",
        "/v1/admin/customers",
        _json(_customer(name="N" * (DISPLAY_NAME_MAX_CHARS + 1))),
        E.VALIDATION_FAILED,
    ),
    Over(
        "merchant id",
        "processor-public",
        "POST",
        "/v1/admin/merchants",
        _json(
            {"merchant_id": "m" * (PARTY_ID_MAX_CHARS + 1), "display_name": "X", "currency": "EUR"}
        ),
        E.VALIDATION_FAILED,
    ),
    Over(
        "reference",
        "processor-public",
        "POST",
        "/v1/merchant/requests",
        _json(_merchant_request(reference="R" * (REFERENCE_MAX_CHARS + 1))),
        E.VALIDATION_FAILED,
    ),
    Over(
        "amount",
        "processor-public",
        "POST",
        "/v1/merchant/requests",
        _json(_merchant_request(amount_minor=AMOUNT_MAX_MINOR + 1)),
        E.VALIDATION_FAILED,
    ),
    Over(
        "refund reason",
        "processor-public",
        "POST",
        f"/v1/merchant/requests/rq_{'C' * 22}/refunds",
        _json({"refund_id": _ID, "amount_minor": 1, "reason": "r" * (REASON_TEXT_MAX_CHARS + 1)}),
        E.VALIDATION_FAILED,
    ),
    Over(
        "path id",
        "processor-public",
        "GET",
        f"/v1/merchant/requests/rq_{'C' * ID_MAX_CHARS}",
        None,
        E.VALIDATION_FAILED,
    ),
    Over(
        "p2p reference",
        "processor-public",
        "POST",
        "/v1/wallet/requests",
        _json({"amount_minor": 1, "currency": "EUR", "reference": "R" * (REFERENCE_MAX_CHARS + 1)}),
        E.VALIDATION_FAILED,
    ),
    Over("p2p body", "processor-public", "POST", "/v1/wallet/requests", _padded({}), E.TOO_LARGE),
    Over(
        "p2p nesting",
        "processor-public",
        "POST",
        "/v1/wallet/requests",
        _deep_list(),
        E.VALIDATION_FAILED,
    ),
    Over(
        "nested list", "processor-public", "POST", "/v1/admin/customers", _deep_list(), E.MALFORMED
    ),
    Over(
        "nested object",
        "processor-public",
        "POST",
        "/v1/admin/customers",
        _deep_object(),
        E.MALFORMED,
    ),
    Over(
        "jose body",
        "processor-public",
        "POST",
        "/v1/wallet/orders",
        b"e" * 20_000,
        E.TOO_LARGE,
        JOSE,
    ),
    Over(
        "nested jws",
        "processor-public",
        "POST",
        "/v1/wallet/orders",
        _deep_jws(),
        E.SIGNATURE_INVALID,
        JOSE,
    ),
    # --- processor, scheme port ----------------------------------------------------------
    Over(
        "body", "processor-scheme", "POST", "/v1/scheme/transfers", b"e" * 20_000, E.TOO_LARGE, JOSE
    ),
    Over(
        "nested jws",
        "processor-scheme",
        "POST",
        "/v1/scheme/transfers",
        _deep_jws(),
        E.SIGNATURE_INVALID,
        JOSE,
    ),
    # --- router, scheme port -------------------------------------------------------------
    Over("body", "router-scheme", "POST", "/v1/transfers", b"e" * 20_000, E.TOO_LARGE, JOSE),
    Over(
        "nested jws",
        "router-scheme",
        "POST",
        "/v1/transfers",
        _deep_jws(),
        E.SIGNATURE_INVALID,
        JOSE,
    ),
    Over(
        "path id",
        "router-scheme",
        "GET",
        f"/v1/transfers/tr_{'D' * ID_MAX_CHARS}",
        None,
        E.VALIDATION_FAILED,
    ),
    # --- router, operator port -----------------------------------------------------------
    Over(
        "body",
        "router-operator",
        "PUT",
        "/v1/admin/participants/bank-a/cap",
        _padded({"net_debit_cap_minor": 1}),
        E.TOO_LARGE,
    ),
    Over(
        "cap",
        "router-operator",
        "PUT",
        "/v1/admin/participants/bank-a/cap",
        _json({"net_debit_cap_minor": AMOUNT_MAX_MINOR + 1}),
        E.VALIDATION_FAILED,
    ),
    Over(
        "participant id",
        "router-operator",
        "PUT",
        f"/v1/admin/participants/{'p' * (PARTY_ID_MAX_CHARS + 1)}/cap",
        _json({"net_debit_cap_minor": 1}),
        E.VALIDATION_FAILED,
    ),
    Over(
        "nested list",
        "router-operator",
        "PUT",
        "/v1/admin/participants/bank-a/cap",
        _deep_list(),
        E.MALFORMED,
    ),
    # --- merchant backend ----------------------------------------------------------------
    Over("body", "merchant", "POST", "/v1/orders", _padded(_order()), E.TOO_LARGE),
    Over(
        "reference",
        "merchant",
        "POST",
        "/v1/orders",
        _json(_order(reference="R" * (REFERENCE_MAX_CHARS + 1))),
        E.VALIDATION_FAILED,
    ),
    Over(
        "basket lines",
        "merchant",
        "POST",
        "/v1/orders",
        _json(_order(amount="101.00", basket=[_LINE] * (BASKET_LINES_MAX + 1))),
        E.VALIDATION_FAILED,
    ),
    Over(
        "basket line name",
        "merchant",
        "POST",
        "/v1/orders",
        _json(_order(basket=[{**_LINE, "name": "T" * (BASKET_NAME_MAX_CHARS + 1)}])),
        E.VALIDATION_FAILED,
    ),
    Over(
        "idempotency key",
        "merchant",
        "POST",
        "/v1/orders",
        _json(_order()),
        E.VALIDATION_FAILED,
        headers=(("Idempotency-Key", "ik_" + "K" * ID_MAX_CHARS),),
    ),
    Over(
        "refund reason",
        "merchant",
        "POST",
        f"/v1/orders/{_ID}/refunds",
        _json({"amount": "1.00", "reason": "r" * (REASON_TEXT_MAX_CHARS + 1)}),
        E.VALIDATION_FAILED,
    ),
    Over("nested list", "merchant", "POST", "/v1/orders", _deep_list(), E.MALFORMED),
    Over("nested object", "merchant", "POST", "/v1/orders", _deep_object(), E.MALFORMED),
    Over("nested jws", "merchant", "POST", "/v1/notices", _deep_jws(), E.SIGNATURE_INVALID, JOSE),
)


@pytest.mark.parametrize("over", CASES, ids=lambda over: f"{over.service}-{over.label}")
def test_over_limit_is_refused_and_changes_nothing(fuzz_net: FuzzNetwork, over: Over) -> None:
    fuzz_net.quiesce()
    service = fuzz_net.services[over.service]
    before = service.database.take()
    response = service.request(
        over.method, over.path, data=over.body, content_type=over.content_type, **dict(over.headers)
    )
    assert response.status_code == over.error.http_status, response.text[:300]
    assert problem_of(response)["code"] == over.error.code
    assert changed_tables(before, service.database.take()) == []


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * 4096
        sent += 4096


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("processor-public", "/v1/wallet/orders"),
        ("processor-scheme", "/v1/scheme/transfers"),
        ("router-scheme", "/v1/transfers"),
        ("merchant", "/v1/notices"),
    ],
)
def test_chunked_body_over_limit_is_refused(fuzz_net: FuzzNetwork, name: str, path: str) -> None:
    """Without a Content-Length the limit holds while the body streams in."""
    fuzz_net.quiesce()
    service = fuzz_net.services[name]
    before = service.database.take()
    response = service.session.post(
        service.base_url + path,
        data=_chunks(4 * MESSAGE_MAX_BYTES),
        headers={"Content-Type": JOSE},
        timeout=20,
        verify=service.session.verify,
        cert=service.session.cert,
    )
    assert response.status_code == E.TOO_LARGE.http_status, response.text[:300]
    assert problem_of(response)["code"] == E.TOO_LARGE.code
    assert changed_tables(before, service.database.take()) == []


def test_depth_bound_is_below_the_nesting_sent() -> None:
    assert JSON_DEPTH_MAX < DEEP


def test_merchant_order_refused_by_the_processor_changes_nothing(fuzz_net: FuzzNetwork) -> None:
    fuzz_net.quiesce()
    service = fuzz_net.services["merchant"]
    before = service.database.take()
    response = service.request("POST", "/v1/orders", data=_json(_order(currency="USD")))
    assert response.status_code == E.CURRENCY_MISMATCH.http_status, response.text[:300]
    assert problem_of(response)["code"] == E.CURRENCY_MISMATCH.code
    assert changed_tables(before, service.database.take()) == []


def test_the_digests_see_an_accepted_change(fuzz_net: FuzzNetwork) -> None:
    """The check above can fail: an accepted request moves the digests of its tables."""
    service = fuzz_net.services["processor-public"]
    before = service.database.take()
    body = _json(_customer(phone="+4915100000002", deposit_minor=5))
    response = service.request("POST", "/v1/admin/customers", data=body)
    assert response.status_code == 201, response.text[:300]
    moved = changed_tables(before, service.database.take())
    assert {"customers", "accounts"} <= set(moved), moved
