"""The wallet's pure core: trust in the directory, requests, orders, PIN binding, receipts."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json
from semops.core.errors import E, SemopsError
from semops.core.ids import IdKind, make_id
from semops.core.limits import CLOCK_SKEW_MAX_S, ORDER_TTL_S, REQUEST_TOKEN_MAX_BYTES
from semops.crypto import (
    KeyRing,
    KeyUse,
    condition_for,
    derive_key,
    make_fulfilment,
    open_pin_block,
    public_jwk,
)
from semops.crypto.keys import make_kid
from semops.protocol import (
    DeviceAuth,
    DirectoryKey,
    Enrolment,
    OrderEvent,
    PaymentOrder,
    Receipt,
    open_signed,
    sign,
)
from semops.wallet import core
from semops.wallet.core import (
    answer_to_order,
    build_enrolment,
    build_order,
    check_receipt,
    device_auth_header,
    make_device_key,
    order_never_executable,
    parse_payment_input,
    pay_link,
    should_resend,
    status_to_order,
    verify_config,
    verify_request,
)

from .scheme import ACTIVATION_CODE, PAYEE, PAYER, Scheme, entropy, seed

NOW = 1_800_000_000
PIN = "4821"


@pytest.fixture(scope="module")
def scheme() -> Scheme:
    return Scheme.build(NOW)


@pytest.fixture(scope="module")
def trusted(scheme: Scheme) -> core.TrustedConfig:
    return verify_config(scheme.config_document(), NOW + 5)


def _device_ring(key: object) -> KeyRing:
    assert isinstance(key, core.PrivateKey)
    return KeyRing([key.public_record(0, 2**34)])


DEVICE = make_device_key(seed("device"))


def _order(scheme: Scheme, trusted: core.TrustedConfig, **changes: object) -> core.SignedOrder:
    token, _ = scheme.request()
    request = verify_request(token, trusted, NOW + 5)
    options: dict[str, object] = {
        "request_token": token,
        "request": request,
        "processor_id": PAYER,
        "payer_account": "alice-001",
        "processor_enc_key": trusted.encryption_key,
        "device_key": DEVICE,
        "pin": PIN,
        "order_entropy": entropy("order", 16),
        "now": NOW + 10,
    }
    options.update(changes)
    return build_order(**options)  # type: ignore[arg-type]


# --- keys and enrolment -------------------------------------------------------------------


def test_device_key_kid_follows_the_convention_the_processor_checks() -> None:
    key = make_device_key(seed("another device"))
    assert key.kid == make_kid("device", public_jwk(key.key))
    assert key.kid.startswith("device:")
    assert key.use is KeyUse.SIGN
    assert "PRIVATE" not in repr(key) and "key=" not in repr(key)


def test_device_key_is_determined_by_its_seed_only() -> None:
    assert make_device_key(seed("x")).kid == make_device_key(seed("x")).kid
    assert make_device_key(seed("x")).kid != make_device_key(seed("y")).kid


def test_enrolment_is_signed_by_the_new_key_and_seals_the_pin_to_its_own_digest(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = build_enrolment(
        device_key=DEVICE,
        activation_code=ACTIVATION_CODE,
        device_name="Alice's phone",
        pin=PIN,
        processor_enc_key=trusted.encryption_key,
        now=NOW,
    )
    opened = open_signed(signed.token, Enrolment, _device_ring(DEVICE), NOW + 1).message
    assert opened == signed.message
    assert opened.device_jwk.model_dump() == public_jwk(DEVICE.key)
    enc_key = scheme.key(PAYER, KeyUse.ENCRYPT)
    assert open_pin_block(opened.pin_block, enc_key, opened.enrolment_digest()) == PIN
    assert PIN not in signed.token


def test_an_enrolment_pin_block_does_not_fit_another_enrolment(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = build_enrolment(
        device_key=DEVICE,
        activation_code=ACTIVATION_CODE,
        device_name="Alice's phone",
        pin=PIN,
        processor_enc_key=trusted.encryption_key,
        now=NOW,
    )
    other = Enrolment.model_validate(
        {**signed.message.to_claims(), "activation_code": "AAAA-BBBB-CCCC"}
    )
    with pytest.raises(SemopsError) as caught:
        open_pin_block(other.pin_block, scheme.key(PAYER, KeyUse.ENCRYPT), other.enrolment_digest())
    assert caught.value.code == E.PIN_BLOCK_MISMATCH.code


def test_enrolment_refuses_a_badly_formed_pin(trusted: core.TrustedConfig) -> None:
    for pin in ("12", "1234567", "12a4", ""):
        with pytest.raises(SemopsError) as caught:
            build_enrolment(
                device_key=DEVICE,
                activation_code=ACTIVATION_CODE,
                device_name="phone",
                pin=pin,
                processor_enc_key=trusted.encryption_key,
                now=NOW,
            )
        assert caught.value.code == E.PIN_FORMAT.code
        assert pin == "" or pin not in str(caught.value)


# --- the processor configuration and directory --------------------------------------------


def test_a_valid_configuration_yields_the_processor_and_its_sealing_key(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    assert trusted.processor_id == PAYER
    assert trusted.display_name == "Bank A"
    assert trusted.encryption_key.kid == scheme.key(PAYER, KeyUse.ENCRYPT).kid
    assert trusted.encryption_key.use is KeyUse.ENCRYPT
    assert scheme.key(PAYEE, KeyUse.SIGN).kid in trusted.ring
    assert trusted.display_name_of(PAYEE) == "MNO B"
    assert trusted.display_name_of("nobody") == "nobody"


def test_configuration_from_another_root_is_refused_once_a_root_is_pinned(
    scheme: Scheme,
) -> None:
    other = Scheme.build(NOW, label="rogue")
    with pytest.raises(SemopsError) as caught:
        verify_config(other.config_document(), NOW, pinned_root_pem=scheme.root_pem)
    assert caught.value.code == E.CERTIFICATE_INVALID.code
    # The same root passes.
    verify_config(scheme.config_document(), NOW, pinned_root_pem=scheme.root_pem)


def test_a_router_certificate_from_another_root_is_refused(scheme: Scheme) -> None:
    other = Scheme.build(NOW, label="rogue")
    document = dict(scheme.config_document(), router_certificate=other.router_pem)
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code == E.CERTIFICATE_INVALID.code


def test_a_directory_not_signed_by_the_certified_router_is_refused(scheme: Scheme) -> None:
    other = Scheme.build(NOW, label="rogue")
    document = dict(scheme.config_document(), directory=other.directory_token)
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code in (E.KEY_UNKNOWN.code, E.SIGNATURE_INVALID.code)


def test_a_tampered_directory_is_refused(scheme: Scheme) -> None:
    header, payload, signature = scheme.directory_token.split(".")
    flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
    document = dict(scheme.config_document(), directory=f"{header}.{flipped}.{signature}")
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code in (E.SIGNATURE_INVALID.code, E.MALFORMED.code)


def test_an_announced_encryption_key_other_than_the_directorys_is_refused(
    scheme: Scheme,
) -> None:
    payee_enc = scheme.config_document()["encryption_key"]
    document = scheme.config_document()
    document["encryption_key"] = dict(payee_enc, kid=scheme.key(PAYEE, KeyUse.ENCRYPT).kid)
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code == E.DIRECTORY_INVALID.code


def test_an_expired_directory_is_refused(scheme: Scheme) -> None:
    with pytest.raises(SemopsError) as caught:
        verify_config(scheme.config_document(), NOW + 86400 + 1)
    assert caught.value.code == E.MESSAGE_EXPIRED.code


def test_a_verified_config_says_until_when_it_holds(scheme: Scheme) -> None:
    """The wallet keeps a verified configuration in memory inside this window only, so
    the window must end no later than the first time-bound check that would fail."""
    assert scheme.directory is not None
    checked = verify_config(scheme.config_document(), NOW + 5)
    assert (checked.checked_at, checked.valid_until) == (NOW + 5, scheme.directory.expires_at)
    assert checked.still_valid(NOW + 5) and checked.still_valid(checked.valid_until - 1)
    assert not checked.still_valid(checked.valid_until)
    assert not checked.still_valid(NOW + 4)  # a clock set back: checked again
    verify_config(scheme.config_document(), checked.valid_until - 1)
    with pytest.raises(SemopsError):
        verify_config(scheme.config_document(), checked.valid_until)


def test_a_verified_config_ends_when_a_newer_encryption_key_starts(scheme: Scheme) -> None:
    assert scheme.directory is not None and scheme.router_key is not None
    starts_at = NOW + 3600
    newer = derive_key(PAYER, KeyUse.ENCRYPT, seed("newer payer enc"))
    newer_key = DirectoryKey.from_record(newer.public_record(starts_at, starts_at + 86400))
    entries = tuple(
        entry.model_copy(update={"keys": (*entry.keys, newer_key)})
        if entry.participant_id == PAYER
        else entry
        for entry in scheme.directory.entries
    )
    directory = scheme.directory.model_copy(update={"entries": entries})
    document = {**scheme.config_document(), "directory": sign(directory, scheme.router_key)}
    assert verify_config(document, NOW + 5).valid_until == starts_at


@pytest.mark.parametrize(
    "member", ["processor_id", "directory", "router_certificate", "root_certificate"]
)
def test_an_incomplete_configuration_is_refused(scheme: Scheme, member: str) -> None:
    document = scheme.config_document()
    del document[member]
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code == E.DIRECTORY_INVALID.code


def test_a_configuration_naming_an_unknown_processor_is_refused(scheme: Scheme) -> None:
    document = dict(scheme.config_document(), processor_id="bank-z")
    with pytest.raises(SemopsError) as caught:
        verify_config(document, NOW)
    assert caught.value.code == E.PROCESSOR_UNKNOWN.code


def test_a_configuration_with_garbage_certificates_is_refused(scheme: Scheme) -> None:
    for member in ("root_certificate", "router_certificate"):
        document = dict(scheme.config_document(), **{member: "not a certificate"})
        with pytest.raises(SemopsError) as caught:
            verify_config(document, NOW)
        assert caught.value.code == E.DIRECTORY_INVALID.code
    with pytest.raises(SemopsError):
        verify_config(["not", "an", "object"], NOW)


# --- requests -------------------------------------------------------------------------------


def test_token_link_and_qr_text_all_give_the_same_token(scheme: Scheme) -> None:
    token, _ = scheme.request()
    assert parse_payment_input(token) == token
    assert parse_payment_input(f"  {token}\n") == token
    assert parse_payment_input(pay_link(token)) == token
    assert parse_payment_input(f"semops://pay?r={token}") == token
    assert parse_payment_input(f"semops:pay?v=1&r={token}") == token
    assert pay_link(token) == f"semops:pay?r={token}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "a.b",
        "a.b.c.d",
        "semops:pay?x=1",
        "semops:pay?r=a.b.c&r=d.e.f",
        "semops:refund?r=a.b.c",
        "https://example.com/pay?r=a.b.c",
        "a.b.c" + "d" * REQUEST_TOKEN_MAX_BYTES,
        "a.b.c<script>",
    ],
)
def test_anything_else_is_not_a_payment_token(text: str) -> None:
    with pytest.raises(SemopsError) as caught:
        parse_payment_input(text)
    assert caught.value.code == E.TOKEN_INVALID.code


def test_a_request_signed_by_its_payee_processor_verifies(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    token, _ = scheme.request(reference="INV-7")
    request = verify_request(token, trusted, NOW + 5)
    assert (request.payee_processor, request.amount_minor, request.reference) == (
        PAYEE,
        1250,
        "INV-7",
    )
    assert len(token) <= REQUEST_TOKEN_MAX_BYTES


def test_an_expired_request_is_refused(scheme: Scheme, trusted: core.TrustedConfig) -> None:
    token, _ = scheme.request(ttl_s=60)
    with pytest.raises(SemopsError) as caught:
        verify_request(token, trusted, NOW + 60)
    assert caught.value.code == E.REQUEST_EXPIRED.code


def test_a_request_forged_with_another_processors_key_is_refused(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    token, _ = scheme.request(signer=PAYER)
    with pytest.raises(SemopsError) as caught:
        verify_request(token, trusted, NOW + 5)
    assert caught.value.code == E.SIGNER_MISMATCH.code


def test_a_tampered_request_is_refused(scheme: Scheme, trusted: core.TrustedConfig) -> None:
    token, _ = scheme.request()
    header, payload, signature = token.split(".")
    claims = json.loads(b64url_decode(payload))
    claims["amt"] = 1
    forged = f"{header}.{b64url_encode(canonical_json(claims))}.{signature}"
    with pytest.raises(SemopsError) as caught:
        verify_request(forged, trusted, NOW + 5)
    assert caught.value.code == E.SIGNATURE_INVALID.code


def test_a_request_from_a_suspended_payee_processor_is_refused(scheme: Scheme) -> None:
    suspended = Scheme.build(NOW)
    suspended.sign_directory(NOW, payee_status="suspended")
    trusted = verify_config(suspended.config_document(), NOW)
    token, _ = suspended.request()
    with pytest.raises(SemopsError) as caught:
        verify_request(token, trusted, NOW + 5)
    assert caught.value.code == E.PROCESSOR_SUSPENDED.code


# --- orders ---------------------------------------------------------------------------------


def test_an_order_carries_the_request_and_is_signed_by_the_device(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    order = open_signed(signed.token, PaymentOrder, _device_ring(DEVICE), NOW + 11).message
    request = verify_request(order.request, trusted, NOW + 11)
    assert order == signed.order
    assert signed.order_id == make_id(IdKind.ORDER, entropy("order", 16))
    assert (order.amount_minor, order.currency) == (request.amount_minor, request.currency)
    assert (order.payer_processor, order.payer_account) == (PAYER, "alice-001")
    assert order.expires_at - order.created_at == ORDER_TTL_S
    assert PIN not in signed.token


def test_the_order_id_comes_from_the_entropy_given_and_nothing_else(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    first = _order(scheme, trusted, order_entropy=entropy("same", 16))
    second = _order(scheme, trusted, order_entropy=entropy("same", 16))
    third = _order(scheme, trusted, order_entropy=entropy("different", 16))
    assert first.order_id == second.order_id != third.order_id


def test_the_pin_block_is_bound_to_the_order_digest(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    enc_key = scheme.key(PAYER, KeyUse.ENCRYPT)
    assert open_pin_block(signed.order.pin_block, enc_key, signed.order.order_digest()) == PIN


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount_minor", 99_999),
        ("payer_account", "mallory-666"),
        ("order_id", "or_" + "M" * 22),
        ("expires_at", NOW + 11 + 60),
    ],
)
def test_a_pin_block_cannot_authorise_a_changed_order(
    scheme: Scheme, trusted: core.TrustedConfig, field: str, value: object
) -> None:
    """Dynamic linking: the same PIN block in an order with any other field is refused."""
    signed = _order(scheme, trusted)
    forged = PaymentOrder.model_validate({**signed.order.to_claims(), field: value})
    with pytest.raises(SemopsError) as caught:
        open_pin_block(forged.pin_block, scheme.key(PAYER, KeyUse.ENCRYPT), forged.order_digest())
    assert caught.value.code == E.PIN_BLOCK_MISMATCH.code


def test_a_pin_block_for_another_request_does_not_fit(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    other_token, _ = scheme.request(label="other")
    signed = _order(scheme, trusted)
    forged = PaymentOrder.model_validate({**signed.order.to_claims(), "request": other_token})
    with pytest.raises(SemopsError) as caught:
        open_pin_block(forged.pin_block, scheme.key(PAYER, KeyUse.ENCRYPT), forged.order_digest())
    assert caught.value.code == E.PIN_BLOCK_MISMATCH.code


def test_the_pin_block_is_sealed_to_the_payer_processor_only(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    with pytest.raises(SemopsError) as caught:
        open_pin_block(
            signed.order.pin_block,
            scheme.key(PAYEE, KeyUse.ENCRYPT),
            signed.order.order_digest(),
        )
    assert caught.value.code == E.SEAL_INVALID.code


def test_an_order_with_a_bad_pin_is_not_built(scheme: Scheme, trusted: core.TrustedConfig) -> None:
    with pytest.raises(SemopsError) as caught:
        _order(scheme, trusted, pin="12")
    assert caught.value.code == E.PIN_FORMAT.code


def test_device_auth_binds_method_path_account_and_body() -> None:
    header = device_auth_header(
        DEVICE,
        account_id="alice-001",
        method="GET",
        path="/v1/wallet/balance",
        now=NOW,
        auth_entropy=bytes(16),
    )
    scheme_name, _, token = header.partition(" ")
    assert scheme_name == "SEMOPS-Device"
    auth = open_signed(token, DeviceAuth, _device_ring(DEVICE), NOW + 1).message
    assert (auth.method, auth.path, auth.account_id, auth.body_digest) == (
        "GET",
        "/v1/wallet/balance",
        "alice-001",
        None,
    )
    assert auth.expires_at - auth.created_at <= 120
    assert auth.auth_id == "da_" + "A" * 22  # made from the entropy given: single use
    with_body = device_auth_header(
        DEVICE,
        account_id="alice-001",
        method="POST",
        path="/v1/x",
        now=NOW,
        auth_entropy=bytes(range(16)),
        body=b"{}",
    )
    auth = open_signed(
        with_body.partition(" ")[2], DeviceAuth, _device_ring(DEVICE), NOW + 1
    ).message
    assert auth.body_digest is not None
    with pytest.raises(SemopsError):
        open_signed(token, DeviceAuth, _device_ring(DEVICE), NOW + 61)


# --- receipts -------------------------------------------------------------------------------


def _receipt_for(
    scheme: Scheme, signed: core.SignedOrder, fulfilment: str, **changes: object
) -> str:
    request = verify_request(
        signed.order.request, verify_config(scheme.config_document(), NOW), NOW
    )
    values: dict[str, object] = {
        "order_id": signed.order_id,
        "request_id": request.request_id,
        "transfer_id": "tr_" + "T" * 22,
        "payer_processor": PAYER,
        "payee_processor": PAYEE,
        "payee_id": request.payee_id,
        "payee_name": request.payee_name,
        "amount_minor": request.amount_minor,
        "currency": request.currency,
        "reference": request.reference,
        "condition": request.condition,
        "fulfilment": fulfilment,
        "committed_at": NOW + 12,
    }
    values.update(changes)
    signer = str(values.pop("_signer", PAYER))
    return sign(Receipt.model_validate(values), scheme.key(signer, KeyUse.SIGN))


def _check(
    scheme: Scheme, trusted: core.TrustedConfig, signed: core.SignedOrder, token: str
) -> Receipt:
    request = verify_request(signed.order.request, trusted, NOW + 5)
    return check_receipt(token, trusted, NOW + 13, order=signed.order, request=request)


def test_a_receipt_proving_this_payment_is_accepted(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    _, fulfilment = scheme.request()
    receipt = _check(scheme, trusted, signed, _receipt_for(scheme, signed, fulfilment))
    assert receipt.order_id == signed.order_id
    assert condition_for(receipt.fulfilment) == receipt.condition


def test_a_receipt_whose_fulfilment_does_not_match_the_request_is_refused(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    """A receipt internally consistent (its own condition and fulfilment agree) but for a
    different hash lock than the approved request's proves nothing."""
    signed = _order(scheme, trusted)
    wrong = make_fulfilment(entropy("not the payee's", 32))
    token = _receipt_for(scheme, signed, wrong, condition=condition_for(wrong))
    with pytest.raises(SemopsError) as caught:
        _check(scheme, trusted, signed, token)
    assert caught.value.code == E.FULFILMENT_INVALID.code


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", "or_" + "X" * 22),
        ("amount_minor", 1),
        ("currency", "USD"),
        ("payee_id", "other-shop"),
        ("request_id", "rq_" + "Y" * 22),
    ],
)
def test_a_receipt_for_another_order_or_amount_is_refused(
    scheme: Scheme, trusted: core.TrustedConfig, field: str, value: object
) -> None:
    signed = _order(scheme, trusted)
    _, fulfilment = scheme.request()
    token = _receipt_for(scheme, signed, fulfilment, **{field: value})
    with pytest.raises(SemopsError) as caught:
        _check(scheme, trusted, signed, token)
    assert caught.value.code == E.ORDER_MISMATCH.code
    assert field in caught.value.detail


def test_a_receipt_signed_by_another_processor_is_refused(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    _, fulfilment = scheme.request()
    token = _receipt_for(scheme, signed, fulfilment, payer_processor=PAYEE, _signer=PAYEE)
    with pytest.raises(SemopsError) as caught:
        _check(scheme, trusted, signed, token)
    assert caught.value.code == E.SIGNER_MISMATCH.code


def test_a_tampered_receipt_is_refused(scheme: Scheme, trusted: core.TrustedConfig) -> None:
    signed = _order(scheme, trusted)
    _, fulfilment = scheme.request()
    header, payload, signature = _receipt_for(scheme, signed, fulfilment).split(".")
    with pytest.raises(SemopsError) as caught:
        _check(scheme, trusted, signed, f"{header}.{payload}.{signature[::-1]}")
    assert caught.value.code == E.SIGNATURE_INVALID.code


def test_a_receipt_signed_by_a_key_outside_the_directory_is_refused(
    scheme: Scheme, trusted: core.TrustedConfig
) -> None:
    signed = _order(scheme, trusted)
    _, fulfilment = scheme.request()
    rogue = derive_key(PAYER, KeyUse.SIGN, seed("rogue bank-a"))
    request = verify_request(signed.order.request, trusted, NOW)
    receipt = Receipt(
        order_id=signed.order_id,
        request_id=request.request_id,
        transfer_id="tr_" + "T" * 22,
        payer_processor=PAYER,
        payee_processor=PAYEE,
        payee_id=request.payee_id,
        payee_name=request.payee_name,
        amount_minor=request.amount_minor,
        currency=request.currency,
        reference=request.reference,
        condition=request.condition,
        fulfilment=fulfilment,
        committed_at=NOW + 12,
    )
    with pytest.raises(SemopsError) as caught:
        _check(scheme, trusted, signed, sign(receipt, rogue))
    assert caught.value.code == E.KEY_UNKNOWN.code


# --- answers as ORDER events ----------------------------------------------------------------


def _problem_body(spec: object, **extra: object) -> bytes:
    return json.dumps(SemopsError(spec, **extra).to_problem()).encode()  # type: ignore[arg-type]


def test_a_signed_receipt_answer_is_a_receipt_event() -> None:
    answer = answer_to_order(200, "application/jose", b"aaa.bbb.ccc\n")
    assert (answer.event, answer.receipt) == (OrderEvent.RECEIPT, "aaa.bbb.ccc")


@pytest.mark.parametrize(
    ("status", "content_type", "body"),
    [
        (202, "application/json", b'{"order_id": "or_x", "state": "pending"}'),
        (200, "application/json", b"{}"),
        (200, "application/jose", b"not a token"),
        (500, "application/problem+json", _problem_body(E.INTERNAL)),
        (503, "application/problem+json", _problem_body(E.UNAVAILABLE)),
        (504, "text/html", b"<h1>Gateway Timeout</h1>"),
        (429, "application/problem+json", _problem_body(E.MALFORMED)),
        (408, "text/plain", b"timeout"),
        (404, "text/html", b"<h1>proxy error</h1>"),
        (400, "application/problem+json", b'{"code": "never_registered"}'),
        (400, "application/problem+json", b"not json"),
    ],
)
def test_an_unclear_answer_leaves_the_order_pending(
    status: int, content_type: str, body: bytes
) -> None:
    assert answer_to_order(status, content_type, body).event is OrderEvent.NO_ANSWER


@pytest.mark.parametrize(
    "spec",
    [E.PIN_INVALID, E.PIN_LOCKED, E.INSUFFICIENT_FUNDS, E.REQUEST_EXPIRED, E.IDEMPOTENCY_CONFLICT],
)
def test_a_definite_refusal_declines_the_order(spec: object) -> None:
    answer = answer_to_order(
        spec.http_status,  # type: ignore[attr-defined]
        "application/problem+json",
        _problem_body(spec),
    )
    assert answer.event is OrderEvent.DECLINED
    assert answer.error_code == spec.code  # type: ignore[attr-defined]


def test_a_pin_refusal_says_how_many_attempts_are_left() -> None:
    body = _problem_body(E.PIN_INVALID, attempts_remaining=2)
    answer = answer_to_order(403, "application/problem+json", body)
    assert answer.error_detail is not None and "2 attempts left" in answer.error_detail


def test_status_documents_become_events() -> None:
    assert status_to_order({"state": "completed", "receipt": "a.b.c"}).event is OrderEvent.RECEIPT
    declined = status_to_order(
        {"state": "failed", "receipt": None, "error": {"code": "insufficient_funds"}}
    )
    assert (declined.event, declined.error_code) == (OrderEvent.DECLINED, "insufficient_funds")
    odd = status_to_order({"state": "failed", "receipt": None, "error": {"code": "???"}})
    assert (odd.event, odd.error_code) == (OrderEvent.DECLINED, E.TRANSFER_REJECTED.code)
    for document in ({"state": "pending", "receipt": None, "error": None}, None, [], "x"):
        assert status_to_order(document).event is OrderEvent.NO_ANSWER


def test_an_unknown_order_is_given_up_only_after_its_expiry_and_the_skew() -> None:
    expires_at = NOW + ORDER_TTL_S
    assert should_resend(expires_at, expires_at - 1)
    assert not should_resend(expires_at, expires_at)
    assert not order_never_executable(expires_at, expires_at + CLOCK_SKEW_MAX_S - 1)
    assert order_never_executable(expires_at, expires_at + CLOCK_SKEW_MAX_S)


def test_the_wallet_core_is_pure() -> None:
    """No I/O library, clock read or randomness in the wallet's core (STYLE.md)."""
    source = Path(core.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
            if node.module.startswith("semops."):
                assert node.module.split(".")[1] in {"core", "crypto", "protocol"}, node.module
    forbidden = {
        "sqlite3", "aiohttp", "httpx", "socket", "os", "time", "random", "secrets",
        "asyncio", "typer", "rich", "fastapi", "sqlalchemy", "zxingcpp", "PIL",
    }  # fmt: skip
    assert not roots & forbidden
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & {"now", "utcnow", "time", "token_bytes", "urandom"}
