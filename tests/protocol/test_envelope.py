"""Typed messages on the wire: `sign`/`open_signed` and `seal`/`unseal`.

What a receiving party relies on: only a message that is signed by a known, usable key of
the very party it names, that validates strictly and that is fresh comes out of
`open_signed`; each refusal has its code, and the checks run in the documented order
(key, signature, claims, signer, freshness). Byte-level tampering and interoperability are
covered in tests/crypto; here the subject is the typed layer on top.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

import pytest

from semops.core.encoding import b64url_decode
from semops.core.errors import SemopsError
from semops.core.limits import (
    AUTH_TTL_MAX_S,
    CLOCK_SKEW_MAX_S,
    MESSAGE_MAX_BYTES,
    REQUEST_TOKEN_MAX_BYTES,
)
from semops.crypto.jose import sign_message
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import KeyStatus, KeyUse, PublicKeyRecord, derive_key, make_kid, public_jwk
from semops.crypto.pin import make_pin_block, open_pin_block
from semops.protocol.envelope import Signed, open_signed, seal, sign, unseal
from semops.protocol.messages import (
    MESSAGE_TYPES,
    SIGNED_MESSAGES,
    DeviceAuth,
    Directory,
    Enrolment,
    Message,
    ParticipantRegistration,
    PaymentNotice,
    PaymentOrder,
    PaymentRequest,
    PublicJwk,
    Receipt,
    RefundResult,
    RefundTransfer,
    RegistrationEndorsement,
    RoutedPrepare,
    TransferDetails,
    TransferFulfil,
    TransferPrepare,
    TransferReject,
    TransferStatus,
    parse_claims,
)

from .helpers import (
    DEVICE,
    DIGEST,
    KEY_NOT_AFTER,
    KEY_NOT_BEFORE,
    NOW,
    PAYEE_PROCESSOR,
    PAYER_PROCESSOR,
    RING,
    SEALING_KEYS,
    SIGNING_KEYS,
    TRANSFER_ID,
    claims_of,
    sample,
    seed,
    signer_of,
)

by_name = pytest.mark.parametrize("cls", SIGNED_MESSAGES, ids=lambda cls: cls.__name__)
NAMED_SIGNER_MESSAGES: Final = tuple(cls for cls in SIGNED_MESSAGES if cls.SIGNER_FIELD)
CONTEXT_SIGNER_MESSAGES: Final = tuple(cls for cls in SIGNED_MESSAGES if not cls.SIGNER_FIELD)

# Messages with a validity window: (creation key, expiry key, the code for "too late").
WINDOWED: Final[dict[type[Message], tuple[str, str, str]]] = {
    PaymentRequest: ("iat", "exp", "request_expired"),
    PaymentOrder: ("created_at", "expires_at", "message_expired"),
    TransferPrepare: ("created_at", "expires_at", "transfer_expired"),
    RoutedPrepare: ("created_at", "expires_at", "transfer_expired"),
    RefundTransfer: ("created_at", "expires_at", "message_expired"),
    Directory: ("issued_at", "expires_at", "message_expired"),
    ParticipantRegistration: ("created_at", "expires_at", "message_expired"),
    RegistrationEndorsement: ("created_at", "expires_at", "message_expired"),
    DeviceAuth: ("created_at", "expires_at", "message_expired"),
    Enrolment: ("created_at", "expires_at", "message_expired"),
}
# Replies without an expiry of their own, and the field that dates each.
REPLIES: Final[dict[type[Message], str]] = {
    TransferFulfil: "fulfilled_at",
    TransferReject: "rejected_at",
    TransferStatus: "decided_at",
    PaymentNotice: "paid_at",
    Receipt: "committed_at",
    RefundResult: "decided_at",
}
replies = pytest.mark.parametrize("cls", list(REPLIES), ids=lambda cls: cls.__name__)
YEAR_S: Final = 365 * 86400
windowed = pytest.mark.parametrize("cls", list(WINDOWED), ids=lambda cls: cls.__name__)


def refusal_code(action: Any) -> str:
    with pytest.raises(SemopsError) as caught:
        action()
    return caught.value.code


def signed_sample(cls: type[Message]) -> str:
    return sign(sample(cls), SIGNING_KEYS[signer_of(cls)])


def shifted(cls: type[Message], created_at: int, ttl_s: int) -> Message:
    """The sample of a windowed type, created at created_at and valid for ttl_s."""
    created, expires, _ = WINDOWED[cls]
    return parse_claims(claims_of(cls, **{created: created_at, expires: created_at + ttl_s}), cls)


def other_party(owner: str) -> str:
    return PAYER_PROCESSOR if owner != PAYER_PROCESSOR else PAYEE_PROCESSOR


# --- Round trip -----------------------------------------------------------------------------


@by_name
def test_signed_message_opens_to_the_same_message_with_its_signer(cls: type[Message]) -> None:
    token = signed_sample(cls)
    opened = open_signed(token, cls, RING, NOW)
    assert isinstance(opened, Signed)
    assert opened.message == sample(cls)
    assert opened.signer.owner == signer_of(cls)
    assert opened.signer.kid == SIGNING_KEYS[signer_of(cls)].kid
    assert opened.token == token


@by_name
def test_opening_with_the_expected_signer_succeeds(cls: type[Message]) -> None:
    opened = open_signed(signed_sample(cls), cls, RING, NOW, expected_signer=signer_of(cls))
    assert opened.message == sample(cls)


def test_signed_result_is_immutable() -> None:
    opened = open_signed(signed_sample(PaymentNotice), PaymentNotice, RING, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opened.token = "x"  # type: ignore[misc]


def test_prepare_carries_sealed_details_only_the_payee_processor_opens() -> None:
    payee_enc = SEALING_KEYS[PAYEE_PROCESSOR]
    details = sample(TransferDetails)
    sealed = seal(details, payee_enc.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER))
    prepare = parse_claims(claims_of(TransferPrepare, sealed=sealed), TransferPrepare)
    token = sign(prepare, SIGNING_KEYS[PAYER_PROCESSOR])
    opened = open_signed(token, TransferPrepare, RING, NOW, expected_signer=PAYER_PROCESSOR)
    assert isinstance(opened.message, TransferPrepare)
    assert unseal(opened.message.sealed, TransferDetails, payee_enc) == details
    # What the router can read of the prepare does not include the request id.
    readable = b64url_decode(token.split(".")[1]).decode()
    assert details.request_id not in readable
    assert details.payer_ref not in readable


def test_order_nests_a_real_request_token_and_pin_block() -> None:
    request_token = signed_sample(PaymentRequest)
    pin_block = seal(
        sample(TransferDetails),
        SEALING_KEYS[PAYER_PROCESSOR].public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER),
    )
    order = parse_claims(
        claims_of(PaymentOrder, request=request_token, pin_block=pin_block), PaymentOrder
    )
    token = sign(order, SIGNING_KEYS[DEVICE])
    opened = open_signed(token, PaymentOrder, RING, NOW, expected_signer=DEVICE)
    assert isinstance(opened.message, PaymentOrder)
    inner = open_signed(opened.message.request, PaymentRequest, RING, NOW)
    assert inner.message == sample(PaymentRequest)


# --- Who signed -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", NAMED_SIGNER_MESSAGES, ids=lambda cls: cls.__name__)
def test_sign_refuses_a_key_of_a_party_other_than_the_named_signer(cls: type[Message]) -> None:
    wrong = SIGNING_KEYS[other_party(signer_of(cls))]
    assert refusal_code(lambda: sign(sample(cls), wrong)) == "signer_mismatch"


@pytest.mark.parametrize("cls", NAMED_SIGNER_MESSAGES, ids=lambda cls: cls.__name__)
def test_open_refuses_a_message_signed_by_a_party_other_than_the_one_named(
    cls: type[Message],
) -> None:
    wrong = SIGNING_KEYS[other_party(signer_of(cls))]
    message = sample(cls)
    token = sign_message(message.to_claims(), wrong, max_bytes=cls.TOKEN_MAX_BYTES)
    assert refusal_code(lambda: open_signed(token, cls, RING, NOW)) == "signer_mismatch"


@by_name
def test_open_refuses_when_the_signer_is_not_the_expected_party(cls: type[Message]) -> None:
    token = signed_sample(cls)
    expected = other_party(signer_of(cls))
    code = refusal_code(lambda: open_signed(token, cls, RING, NOW, expected_signer=expected))
    assert code == "signer_mismatch"


@pytest.mark.parametrize("cls", CONTEXT_SIGNER_MESSAGES, ids=lambda cls: cls.__name__)
def test_context_signed_messages_are_pinned_to_their_signer_by_the_caller(
    cls: type[Message],
) -> None:
    # A routed prepare, status or directory names no signer: the receiver says who it
    # expects (the router), so a processor's signature on one is refused.
    imposter = sign(sample(cls), SIGNING_KEYS[PAYEE_PROCESSOR])
    expected = signer_of(cls)
    code = refusal_code(lambda: open_signed(imposter, cls, RING, NOW, expected_signer=expected))
    assert code == "signer_mismatch"


@by_name
def test_sign_refuses_an_encryption_key(cls: type[Message]) -> None:
    owner = signer_of(cls)
    enc = SEALING_KEYS.get(owner) or derive_key(owner, KeyUse.ENCRYPT, seed("enc " + owner))
    assert refusal_code(lambda: sign(sample(cls), enc)) == "key_wrong_use"


def test_a_key_unknown_to_the_receiver_is_refused() -> None:
    stranger = derive_key(PAYEE_PROCESSOR, KeyUse.SIGN, seed("not in the directory"))
    token = sign(sample(PaymentNotice), stranger)
    assert refusal_code(lambda: open_signed(token, PaymentNotice, RING, NOW)) == "key_unknown"


@pytest.mark.parametrize(
    ("status", "not_before", "not_after", "code"),
    [
        (KeyStatus.REVOKED, KEY_NOT_BEFORE, KEY_NOT_AFTER, "key_revoked"),
        (KeyStatus.ACTIVE, NOW + 1, KEY_NOT_AFTER, "key_expired"),
        (KeyStatus.ACTIVE, KEY_NOT_BEFORE, NOW, "key_expired"),
    ],
    ids=["revoked", "not-yet-valid", "expired"],
)
def test_a_key_the_receiver_no_longer_accepts_is_refused(
    status: KeyStatus, not_before: int, not_after: int, code: str
) -> None:
    key = SIGNING_KEYS[PAYEE_PROCESSOR]
    ring = RING.with_records([key.public_record(not_before, not_after, status)])
    token = sign(sample(PaymentNotice), key)
    assert refusal_code(lambda: open_signed(token, PaymentNotice, ring, NOW)) == code


def test_a_receiver_that_holds_the_key_for_encryption_only_refuses_it_for_signing() -> None:
    key = SIGNING_KEYS[PAYEE_PROCESSOR]
    misfiled = dataclasses.replace(
        key.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER), use=KeyUse.ENCRYPT
    )
    ring = RING.with_records([misfiled])
    token = sign(sample(PaymentNotice), key)
    assert refusal_code(lambda: open_signed(token, PaymentNotice, ring, NOW)) == "key_wrong_use"


# --- Type and order of the checks -----------------------------------------------------------


def test_a_message_opened_as_another_type_is_refused() -> None:
    token = signed_sample(PaymentNotice)
    code = refusal_code(lambda: open_signed(token, Receipt, RING, NOW))
    assert code == "message_type_unexpected"


def test_invalid_claims_under_a_good_signature_are_refused_after_verification() -> None:
    claims = sample(PaymentNotice).to_claims() | {"amount_minor": 0}
    token = sign_message(claims, SIGNING_KEYS[PAYEE_PROCESSOR])
    code = refusal_code(lambda: open_signed(token, PaymentNotice, RING, NOW))
    assert code == "validation_failed"


def test_the_key_is_checked_before_the_claims_are_read() -> None:
    stranger = derive_key(PAYEE_PROCESSOR, KeyUse.SIGN, seed("stranger"))
    token = sign_message({"v": 99, "junk": True}, stranger)
    assert refusal_code(lambda: open_signed(token, PaymentNotice, RING, NOW)) == "key_unknown"


def test_the_signer_is_checked_before_freshness() -> None:
    late = NOW + 10**6
    wrong = SIGNING_KEYS[PAYER_PROCESSOR]
    token = sign_message(sample(PaymentRequest).to_claims(), wrong, max_bytes=600)
    assert refusal_code(lambda: open_signed(token, PaymentRequest, RING, late)) == (
        "signer_mismatch"
    )


# --- Freshness ------------------------------------------------------------------------------


@windowed
def test_dated_more_than_the_skew_in_the_future_is_not_yet_valid(cls: type[Message]) -> None:
    message = shifted(cls, NOW + CLOCK_SKEW_MAX_S + 1, 60)
    token = sign(message, SIGNING_KEYS[signer_of(cls)])
    code = refusal_code(lambda: open_signed(token, cls, RING, NOW))
    assert code == "message_not_yet_valid"


@windowed
def test_dated_within_the_skew_in_the_future_is_accepted(cls: type[Message]) -> None:
    message = shifted(cls, NOW + CLOCK_SKEW_MAX_S, 60)
    token = sign(message, SIGNING_KEYS[signer_of(cls)])
    assert open_signed(token, cls, RING, NOW).message == message


@windowed
def test_opened_at_its_expiry_is_refused_with_the_code_of_what_expired(
    cls: type[Message],
) -> None:
    _, expires, code = WINDOWED[cls]
    token = signed_sample(cls)
    expires_at = sample(cls).to_claims()[expires]
    assert open_signed(token, cls, RING, expires_at - 1).message == sample(cls)
    assert refusal_code(lambda: open_signed(token, cls, RING, expires_at)) == code
    assert refusal_code(lambda: open_signed(token, cls, RING, expires_at + 3600)) == code


@windowed
def test_freshness_can_be_skipped_to_reread_a_stored_message(cls: type[Message]) -> None:
    token = signed_sample(cls)
    expires_at = sample(cls).to_claims()[WINDOWED[cls][1]]
    opened = open_signed(token, cls, RING, expires_at + 3600, check_freshness=False)
    assert opened.message == sample(cls)


def test_expired_error_of_each_type_is_declared_on_the_type() -> None:
    for cls, (_, _, code) in WINDOWED.items():
        assert cls.EXPIRED_ERROR.code == code


def test_every_message_type_says_which_field_dates_it() -> None:
    expected: dict[type[Message], str | None] = {
        cls: created for cls, (created, _, _) in WINDOWED.items()
    } | dict(REPLIES)
    expected[TransferDetails] = None  # sealed inside a prepare, which is dated
    expected[PaymentRequest] = "created_at"  # the Python name of the wire key "iat"
    assert {cls: cls.DATED_FIELD for cls in MESSAGE_TYPES.values()} == expected


def test_dated_window_is_the_date_and_the_expiry_if_any() -> None:
    for cls in SIGNED_MESSAGES:
        message = sample(cls)
        window = message.dated_window()
        assert window is not None
        dated_at, expires_at = window
        assert dated_at == getattr(message, cls.DATED_FIELD or "") == NOW
        assert expires_at == getattr(message, "expires_at", None)
    assert sample(TransferDetails).dated_window() is None


def dated(cls: type[Message], at: int) -> Message:
    """The sample reply, dated at `at`."""
    message = sample(cls)
    claims = message.to_claims() | {REPLIES[cls]: at}
    return parse_claims(claims, cls)


@replies
def test_a_reply_dated_beyond_the_skew_in_the_future_is_not_yet_valid(cls: type[Message]) -> None:
    for future in (NOW + CLOCK_SKEW_MAX_S + 1, NOW + 86400, NOW + 10 * YEAR_S):
        token = sign(dated(cls, future), SIGNING_KEYS[signer_of(cls)])
        code = refusal_code(lambda token=token: open_signed(token, cls, RING, NOW))
        assert code == "message_not_yet_valid"


@replies
def test_a_reply_dated_within_the_skew_in_the_future_is_accepted(cls: type[Message]) -> None:
    message = dated(cls, NOW + CLOCK_SKEW_MAX_S)
    token = sign(message, SIGNING_KEYS[signer_of(cls)])
    assert open_signed(token, cls, RING, NOW).message == message


@replies
@pytest.mark.parametrize("age_s", [86400 + 1, YEAR_S, 10 * YEAR_S])
def test_a_reply_dated_long_ago_still_opens(cls: type[Message], age_s: int) -> None:
    # A receipt or a notice is proof kept for years: it is re-read from storage, and its
    # age alone never makes it invalid (its id and the state machines stop replays).
    message = dated(cls, NOW - age_s)
    token = sign(message, SIGNING_KEYS[signer_of(cls)])
    assert open_signed(token, cls, RING, NOW).message == message


@replies
def test_a_reply_from_the_future_can_be_reread_without_freshness(cls: type[Message]) -> None:
    message = dated(cls, NOW + 86400)
    token = sign(message, SIGNING_KEYS[signer_of(cls)])
    assert open_signed(token, cls, RING, NOW, check_freshness=False).message == message


def test_a_receipt_dated_a_year_ago_opens_with_its_proof() -> None:
    receipt = dated(Receipt, NOW - YEAR_S)
    assert isinstance(receipt, Receipt)
    token = sign(receipt, SIGNING_KEYS[PAYER_PROCESSOR])
    opened = open_signed(token, Receipt, RING, NOW, expected_signer=PAYER_PROCESSOR)
    assert opened.message == receipt
    assert opened.message.committed_at == NOW - YEAR_S


def test_a_fulfil_dated_beyond_the_skew_in_the_future_is_not_yet_valid() -> None:
    claims = claims_of(TransferFulfil, fulfilled_at=NOW + 86400)
    fulfil = parse_claims(claims, TransferFulfil)
    token = sign(fulfil, SIGNING_KEYS[PAYEE_PROCESSOR])
    code = refusal_code(lambda: open_signed(token, TransferFulfil, RING, NOW))
    assert code == "message_not_yet_valid"


# --- Short-lived authorisations -----------------------------------------------------------


@pytest.mark.parametrize("cls", [DeviceAuth, ParticipantRegistration], ids=lambda c: c.__name__)
def test_an_authorisation_lives_at_most_auth_ttl_max(cls: type[Message]) -> None:
    key = SIGNING_KEYS[signer_of(cls)]
    longest = claims_of(cls, created_at=NOW, expires_at=NOW + AUTH_TTL_MAX_S)
    token = sign_message(longest, key)
    assert open_signed(token, cls, RING, NOW + AUTH_TTL_MAX_S - 1).message.to_claims() == longest
    assert refusal_code(lambda: open_signed(token, cls, RING, NOW + AUTH_TTL_MAX_S)) == (
        "message_expired"
    )
    # Signed with a longer life by its own signer: refused as invalid, whenever it arrives.
    too_long = claims_of(cls, created_at=NOW, expires_at=NOW + AUTH_TTL_MAX_S + 1)
    token = sign_message(too_long, key)
    for at in (NOW, NOW + 60):
        assert refusal_code(lambda at=at: open_signed(token, cls, RING, at)) == (
            "validation_failed"
        )


def test_a_device_auth_cannot_be_stretched_by_dating_it_in_the_future() -> None:
    # Dated beyond the skew, it is refused now; dated within it, it still ends at its expiry.
    ahead = shifted(DeviceAuth, NOW + CLOCK_SKEW_MAX_S + 1, AUTH_TTL_MAX_S)
    token = sign(ahead, SIGNING_KEYS[DEVICE])
    assert refusal_code(lambda: open_signed(token, DeviceAuth, RING, NOW)) == (
        "message_not_yet_valid"
    )
    edge = shifted(DeviceAuth, NOW + CLOCK_SKEW_MAX_S, AUTH_TTL_MAX_S)
    token = sign(edge, SIGNING_KEYS[DEVICE])
    assert open_signed(token, DeviceAuth, RING, NOW).message == edge
    latest = NOW + CLOCK_SKEW_MAX_S + AUTH_TTL_MAX_S
    assert refusal_code(lambda: open_signed(token, DeviceAuth, RING, latest)) == ("message_expired")


def test_a_device_auth_is_pinned_to_the_device_by_the_caller() -> None:
    token = signed_sample(DeviceAuth)
    opened = open_signed(token, DeviceAuth, RING, NOW, expected_signer=DEVICE)
    assert opened.signer.kid == SIGNING_KEYS[DEVICE].kid
    other_device = derive_key("device-2", KeyUse.SIGN, seed("device-2/sig"))
    ring = RING.with_records([other_device.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER)])
    forged = sign(sample(DeviceAuth), other_device)
    code = refusal_code(lambda: open_signed(forged, DeviceAuth, ring, NOW, expected_signer=DEVICE))
    assert code == "signer_mismatch"


# --- Enrolment: proof of possession, and a PIN block bound to the enrolment ----------------

PIN: Final = "4711"


def _processor_enc() -> PublicKeyRecord:
    return SEALING_KEYS[PAYER_PROCESSOR].public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER)


def enrolment_with_pin(**changes: Any) -> Enrolment:
    """An enrolment whose PIN block is bound to its own digest, as a wallet makes it."""
    placeholder = parse_claims(claims_of(Enrolment, **changes), Enrolment)
    assert isinstance(placeholder, Enrolment)
    pin_block = make_pin_block(PIN, placeholder.enrolment_digest(), _processor_enc())
    enrolment = parse_claims(claims_of(Enrolment, **changes, pin_block=pin_block), Enrolment)
    assert isinstance(enrolment, Enrolment)
    return enrolment


def device_ring(jwk: PublicJwk, owner: str = DEVICE) -> KeyRing:
    """The one-key ring a processor makes from the key an enrolment carries."""
    members = jwk.model_dump()
    record = PublicKeyRecord(
        kid=make_kid(owner, members),
        owner=owner,
        use=KeyUse.SIGN,
        jwk=members,
        not_before=KEY_NOT_BEFORE,
        not_after=KEY_NOT_AFTER,
    )
    return KeyRing([record])


def test_an_enrolment_opens_with_the_key_it_carries_and_yields_its_pin() -> None:
    enrolment = enrolment_with_pin()
    token = sign(enrolment, SIGNING_KEYS[DEVICE])
    opened = open_signed(token, Enrolment, device_ring(enrolment.device_jwk), NOW)
    assert opened.message == enrolment
    assert opened.signer.jwk == enrolment.device_jwk.model_dump()
    key = SEALING_KEYS[PAYER_PROCESSOR]
    assert open_pin_block(opened.message.pin_block, key, opened.message.enrolment_digest()) == PIN


def test_an_enrolment_signed_by_another_key_than_the_one_it_carries_is_refused() -> None:
    # Proof of possession: a key the sender cannot sign with cannot be enrolled.
    enrolment = enrolment_with_pin()
    thief = derive_key(DEVICE, KeyUse.SIGN, seed("not the enrolled device"))
    token = sign(enrolment, thief)
    code = refusal_code(
        lambda: open_signed(token, Enrolment, device_ring(enrolment.device_jwk), NOW)
    )
    assert code == "key_unknown"


@pytest.mark.parametrize(
    "changes",
    [
        {"activation_code": "ZZZZ-9999-ZZZZ"},
        {"device_name": "Mallory's phone"},
        {"expires_at": NOW + 299},
        {"created_at": NOW + 1},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_an_enrolment_digest_binds_the_pin_block(changes: dict[str, Any]) -> None:
    enrolment = enrolment_with_pin()
    changed = parse_claims(
        claims_of(Enrolment, **changes, pin_block=enrolment.pin_block), Enrolment
    )
    assert isinstance(changed, Enrolment)
    assert changed.pin_block == enrolment.pin_block
    key = SEALING_KEYS[PAYER_PROCESSOR]
    code = refusal_code(lambda: open_pin_block(changed.pin_block, key, changed.enrolment_digest()))
    assert code == "pin_block_mismatch"


def test_a_captured_pin_block_cannot_enrol_the_attackers_key() -> None:
    # The attacker lifts the PIN block and activation code from a wallet's enrolment, puts
    # in its own key and signs with it (so proof of possession holds for its key): the PIN
    # block is bound to the digest that named the wallet's key, so it is refused.
    genuine = enrolment_with_pin()
    attacker = derive_key("mallory", KeyUse.SIGN, seed("attacker device"))
    jwk = PublicJwk.model_validate(public_jwk(attacker.key))
    forged = parse_claims(
        claims_of(Enrolment, device_jwk=jwk.model_dump(), pin_block=genuine.pin_block), Enrolment
    )
    assert isinstance(forged, Enrolment)
    token = sign(forged, attacker)
    opened = open_signed(token, Enrolment, device_ring(jwk, "mallory"), NOW).message
    key = SEALING_KEYS[PAYER_PROCESSOR]
    code = refusal_code(lambda: open_pin_block(opened.pin_block, key, opened.enrolment_digest()))
    assert code == "pin_block_mismatch"


def test_an_orders_pin_block_is_not_an_enrolments_and_vice_versa() -> None:
    order = sample(PaymentOrder)
    assert isinstance(order, PaymentOrder)
    order_block = make_pin_block(PIN, order.order_digest(), _processor_enc())
    enrolment = enrolment_with_pin()
    key = SEALING_KEYS[PAYER_PROCESSOR]
    assert refusal_code(lambda: open_pin_block(order_block, key, enrolment.enrolment_digest())) == (
        "pin_block_mismatch"
    )
    assert refusal_code(lambda: open_pin_block(enrolment.pin_block, key, order.order_digest())) == (
        "pin_block_mismatch"
    )


# --- Size -----------------------------------------------------------------------------------


def _request_with(**changes: Any) -> PaymentRequest:
    message = parse_claims(claims_of(PaymentRequest, **changes), PaymentRequest)
    assert isinstance(message, PaymentRequest)
    return message


def test_a_request_that_would_not_fit_a_qr_code_is_refused_at_signing() -> None:
    # Every field is within its own limit; together they exceed the token limit.
    request = _request_with(pn="語" * 40, ref="R" * 35, bd=DIGEST)
    key = SIGNING_KEYS[PAYEE_PROCESSOR]
    assert refusal_code(lambda: sign(request, key)) == "too_large"


def test_a_request_with_a_shorter_name_fits() -> None:
    request = _request_with(pn="語" * 10, ref="R" * 35, bd=DIGEST)
    token = sign(request, SIGNING_KEYS[PAYEE_PROCESSOR])
    assert len(token) <= REQUEST_TOKEN_MAX_BYTES
    assert open_signed(token, PaymentRequest, RING, NOW).message == request


def test_an_over_long_request_token_is_refused_when_opened() -> None:
    request = _request_with(pn="語" * 40, ref="R" * 35, bd=DIGEST)
    claims = request.to_claims()
    token = sign_message(claims, SIGNING_KEYS[PAYEE_PROCESSOR], max_bytes=MESSAGE_MAX_BYTES)
    assert len(token) > REQUEST_TOKEN_MAX_BYTES
    assert refusal_code(lambda: open_signed(token, PaymentRequest, RING, NOW)) == "too_large"


# --- Sealing --------------------------------------------------------------------------------


def _payee_enc_record() -> Any:
    return SEALING_KEYS[PAYEE_PROCESSOR].public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER)


def test_sealed_details_open_with_the_recipient_key() -> None:
    details = sample(TransferDetails)
    sealed = seal(details, _payee_enc_record())
    assert unseal(sealed, TransferDetails, SEALING_KEYS[PAYEE_PROCESSOR]) == details
    assert TRANSFER_ID not in sealed


def test_sealing_twice_gives_different_tokens() -> None:
    details = sample(TransferDetails)
    assert seal(details, _payee_enc_record()) != seal(details, _payee_enc_record())


def test_sealed_details_do_not_open_with_another_processors_key() -> None:
    sealed = seal(sample(TransferDetails), _payee_enc_record())
    wrong = SEALING_KEYS[PAYER_PROCESSOR]
    assert refusal_code(lambda: unseal(sealed, TransferDetails, wrong)) == "seal_invalid"


def test_sealed_details_do_not_open_with_a_key_of_the_same_kid_and_other_material() -> None:
    sealed = seal(sample(TransferDetails), _payee_enc_record())
    genuine = SEALING_KEYS[PAYEE_PROCESSOR]
    impostor = dataclasses.replace(
        genuine, key=derive_key(PAYEE_PROCESSOR, KeyUse.ENCRYPT, seed("impostor")).key
    )
    assert refusal_code(lambda: unseal(sealed, TransferDetails, impostor)) == "seal_invalid"


def test_unsealing_with_a_signing_key_is_key_wrong_use() -> None:
    sealed = seal(sample(TransferDetails), _payee_enc_record())
    signing = SIGNING_KEYS[PAYEE_PROCESSOR]
    assert refusal_code(lambda: unseal(sealed, TransferDetails, signing)) == "key_wrong_use"


def test_sealing_to_a_signing_key_is_key_wrong_use() -> None:
    record = SIGNING_KEYS[PAYEE_PROCESSOR].public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER)
    assert refusal_code(lambda: seal(sample(TransferDetails), record)) == "key_wrong_use"


def test_unsealing_as_another_type_is_refused() -> None:
    sealed = seal(sample(PaymentNotice), _payee_enc_record())
    code = refusal_code(lambda: unseal(sealed, TransferDetails, SEALING_KEYS[PAYEE_PROCESSOR]))
    assert code == "message_type_unexpected"
