"""The messages of DESIGN.md §4 are the wire contract: what each carries, in which types and
bounds, and what it refuses, with which error code.

The tables below write the contract out a second time, independently of the models: the
wire keys of every message and the kind of value each holds. Every refusal test is driven
from them, for every message type, so a new field without a bound or a loosened type fails
here. Validation errors are also checked never to echo the refused value: it may be a PIN.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from semops.core.errors import SemopsError
from semops.core.limits import (
    ACCOUNT_ID_MAX_CHARS,
    AMOUNT_MAX_MINOR,
    AUTH_TTL_MAX_S,
    CERTIFICATE_PEM_MAX_CHARS,
    DIRECTORY_ENTRIES_MAX,
    DISPLAY_NAME_MAX_CHARS,
    ID_MAX_CHARS,
    ID_MIN_CHARS,
    KEYS_PER_PARTY_MAX,
    KID_MAX_CHARS,
    MESSAGE_TTL_MAX_S,
    ORDER_TTL_S,
    PARTY_ID_MAX_CHARS,
    PARTY_ID_MIN_CHARS,
    REASON_CODE_MAX_CHARS,
    REASON_TEXT_MAX_CHARS,
    REFERENCE_MAX_CHARS,
    REQUEST_TOKEN_MAX_BYTES,
    REQUEST_TTL_MAX_S,
    REQUEST_TTL_MIN_S,
    SEALED_MAX_BYTES,
    TIMESTAMP_MAX_S,
    TRANSFER_TTL_MAX_S,
    URL_MAX_CHARS,
)
from semops.core.money import CURRENCY_SCALES
from semops.crypto.keys import KeyStatus, KeyUse, derive_key, public_jwk
from semops.crypto.pki import load_certificate_pem, validate_chain
from semops.protocol.messages import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    SEALED_MESSAGES,
    SIGNED_MESSAGES,
    DeviceAuth,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    Enrolment,
    Message,
    ParticipantRegistration,
    PaymentNotice,
    PaymentOrder,
    PaymentRequest,
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
    order_digest_of,
    parse_claims,
)

from .helpers import (
    ACTIVATION_CODE,
    CERTIFICATES_ISSUED_AT,
    DEVICE,
    DIGEST,
    DROP,
    FULFILMENT,
    NOW,
    OTHER_FULFILMENT,
    PAYEE_PROCESSOR,
    PAYER_PROCESSOR,
    ROOT_CERTIFICATE,
    ROUTER,
    SAMPLES,
    SEALING_KEYS,
    SIGNING_KEYS,
    TRANSFER_ID,
    claims_of,
    leaked_anywhere,
    sample,
    seed,
)

ALL_MESSAGES: Final = SIGNED_MESSAGES + SEALED_MESSAGES

# --- The contract, written out independently ------------------------------------------------

# Kinds of wire values.
ID = "id"
PARTY = "party"
ACCOUNT = "account"
NAME = "display_name"
REFERENCE = "reference"
REASON_TEXT = "reason_text"
REASON_CODE = "reason_code"
DIGEST_KIND = "digest"
SEALED = "sealed"
TOKEN = "request_token"
AMOUNT = "amount"
CURRENCY = "currency"
TIME = "timestamp"
INT = "int"
CHOICE = "choice"
ENTRIES = "entries"
URL = "url"
CERTIFICATE = "pem_certificate"
ACTIVATION = "activation_code"
PATH = "request_path"
JWK = "public_jwk"
SIGNED_TOKEN = "signed_token"
SERIALS = "certificate_serials"

INT_KINDS: Final = {AMOUNT, TIME, INT}
STRING_KINDS: Final = {
    ID,
    PARTY,
    ACCOUNT,
    NAME,
    REFERENCE,
    REASON_TEXT,
    REASON_CODE,
    DIGEST_KIND,
    SEALED,
    TOKEN,
    CURRENCY,
    CHOICE,
    URL,
    CERTIFICATE,
    ACTIVATION,
    PATH,
}
ONE_LINE_TEXT_KINDS: Final = {NAME, REFERENCE, REASON_TEXT}

# Every wire key of every message besides "v" and the type, and its kind.
WIRE_FIELDS: Final[dict[type[Message], dict[str, str]]] = {
    PaymentRequest: {
        "rid": ID,
        "pp": PARTY,
        "pid": PARTY,
        "pn": NAME,
        "amt": AMOUNT,
        "cur": CURRENCY,
        "ref": REFERENCE,
        "iat": TIME,
        "exp": TIME,
        "cnd": DIGEST_KIND,
        "bd": DIGEST_KIND,
    },
    PaymentOrder: {
        "order_id": ID,
        "payer_processor": PARTY,
        "payer_account": ACCOUNT,
        "request": TOKEN,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "created_at": TIME,
        "expires_at": TIME,
        "pin_block": SEALED,
    },
    TransferPrepare: {
        "transfer_id": ID,
        "payer_processor": PARTY,
        "payee_processor": PARTY,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "condition": DIGEST_KIND,
        "created_at": TIME,
        "expires_at": TIME,
        "sealed": SEALED,
    },
    TransferDetails: {
        "transfer_id": ID,
        "request_id": ID,
        "payee_id": PARTY,
        "payer_ref": DIGEST_KIND,
    },
    RoutedPrepare: {
        "transfer_id": ID,
        "payee_processor": PARTY,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "condition": DIGEST_KIND,
        "created_at": TIME,
        "expires_at": TIME,
        "sealed": SEALED,
    },
    TransferFulfil: {
        "transfer_id": ID,
        "payee_processor": PARTY,
        "fulfilment": DIGEST_KIND,
        "fulfilled_at": TIME,
    },
    TransferReject: {
        "transfer_id": ID,
        "payee_processor": PARTY,
        "reason_code": REASON_CODE,
        "rejected_at": TIME,
    },
    TransferStatus: {
        "transfer_id": ID,
        "kind": CHOICE,
        "state": CHOICE,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "decided_at": TIME,
        "fulfilment": DIGEST_KIND,
        "reason_code": REASON_CODE,
        "original_transfer_id": ID,
    },
    PaymentNotice: {
        "request_id": ID,
        "transfer_id": ID,
        "payee_processor": PARTY,
        "payee_id": PARTY,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "reference": REFERENCE,
        "paid_at": TIME,
        "guarantee": CHOICE,
    },
    Receipt: {
        "order_id": ID,
        "request_id": ID,
        "transfer_id": ID,
        "payer_processor": PARTY,
        "payee_processor": PARTY,
        "payee_id": PARTY,
        "payee_name": NAME,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "reference": REFERENCE,
        "condition": DIGEST_KIND,
        "fulfilment": DIGEST_KIND,
        "committed_at": TIME,
    },
    RefundTransfer: {
        "refund_id": ID,
        "transfer_id": ID,
        "payee_processor": PARTY,
        "amount_minor": AMOUNT,
        "currency": CURRENCY,
        "reason": REASON_TEXT,
        "created_at": TIME,
        "expires_at": TIME,
    },
    RefundResult: {
        "refund_id": ID,
        "transfer_id": ID,
        "payer_processor": PARTY,
        "outcome": CHOICE,
        "reason_code": REASON_CODE,
        "decided_at": TIME,
    },
    Directory: {
        "serial": INT,
        "router_id": PARTY,
        "issued_at": TIME,
        "expires_at": TIME,
        "entries": ENTRIES,
        "revoked_serials": SERIALS,
    },
    ParticipantRegistration: {
        "participant_id": PARTY,
        "kind": CHOICE,
        "display_name": NAME,
        "endpoint": URL,
        "sign_certificate": CERTIFICATE,
        "enc_certificate": CERTIFICATE,
        "created_at": TIME,
        "expires_at": TIME,
        "endorsement": SIGNED_TOKEN,
    },
    RegistrationEndorsement: {
        "participant_id": PARTY,
        "registration_digest": DIGEST_KIND,
        "created_at": TIME,
        "expires_at": TIME,
    },
    DeviceAuth: {
        "auth_id": ID,
        "account_id": ACCOUNT,
        "method": CHOICE,
        "path": PATH,
        "body_digest": DIGEST_KIND,
        "created_at": TIME,
        "expires_at": TIME,
    },
    Enrolment: {
        "activation_code": ACTIVATION,
        "device_jwk": JWK,
        "device_name": NAME,
        "created_at": TIME,
        "expires_at": TIME,
        "pin_block": SEALED,
    },
}

# Wire keys a message may leave out (the rest are required).
OPTIONAL_FIELDS: Final[dict[type[Message], set[str]]] = {
    PaymentRequest: {"ref", "bd"},
    TransferStatus: {"fulfilment", "reason_code", "original_transfer_id"},
    PaymentNotice: {"reference"},  # the guarantee is required: see its own test
    Receipt: {"reference"},
    RefundTransfer: {"reason"},
    RefundResult: {"reason_code"},
    DeviceAuth: {"body_digest"},  # a call without a body has no body digest
    Directory: {"revoked_serials"},  # left out when nothing is revoked
    ParticipantRegistration: {"endorsement"},  # only a key rotation carries one
}

# Optional keys whose absence leaves the sample valid (the others are tied to a rule).
DROPPABLE_OPTIONAL: Final = [
    (PaymentRequest, "ref"),
    (PaymentRequest, "bd"),
    (PaymentNotice, "reference"),
    (Receipt, "reference"),
    (RefundTransfer, "reason"),
    (DeviceAuth, "body_digest"),
    (Directory, "revoked_serials"),
    (ParticipantRegistration, "endorsement"),
]

TYPE_KEY: Final[dict[type[Message], str]] = dict.fromkeys(ALL_MESSAGES, "type") | {
    PaymentRequest: "t"
}

SIGNER_FIELDS: Final[dict[type[Message], str | None]] = {
    PaymentRequest: "payee_processor",
    PaymentOrder: None,  # the wallet's enrolled device
    TransferPrepare: "payer_processor",
    TransferDetails: None,  # sealed, not signed
    RoutedPrepare: None,  # the router
    TransferFulfil: "payee_processor",
    TransferReject: "payee_processor",
    TransferStatus: None,  # the router
    PaymentNotice: "payee_processor",
    Receipt: "payer_processor",
    RefundTransfer: "payee_processor",
    RefundResult: "payer_processor",
    Directory: None,  # the router
    ParticipantRegistration: "participant_id",  # the key of its own sign_certificate
    RegistrationEndorsement: "participant_id",  # its currently registered key
    DeviceAuth: None,  # the wallet's enrolled device
    Enrolment: None,  # the new device key itself (proof of possession)
}

# (max chars, a value of exactly n chars that is valid for the kind)
STRING_LIMITS: Final[dict[str, tuple[int, Any]]] = {
    ID: (ID_MAX_CHARS, lambda n: "x" * n),
    PARTY: (PARTY_ID_MAX_CHARS, lambda n: "p" * n),
    ACCOUNT: (ACCOUNT_ID_MAX_CHARS, lambda n: "A" * n),
    NAME: (DISPLAY_NAME_MAX_CHARS, lambda n: "語" * n),
    REFERENCE: (REFERENCE_MAX_CHARS, lambda n: "R" * n),
    REASON_TEXT: (REASON_TEXT_MAX_CHARS, lambda n: "r" * n),
    TOKEN: (REQUEST_TOKEN_MAX_BYTES, lambda n: "a" * (n - 4) + ".b.c"),
    SEALED: (SEALED_MAX_BYTES, lambda n: "a" * (n - 8) + ".b.c.d.e"),
    URL: (URL_MAX_CHARS, lambda n: "https://r.example/" + "p" * (n - 18)),
    PATH: (URL_MAX_CHARS, lambda n: "/" + "p" * (n - 1)),
    ACTIVATION: (32, lambda n: "A" * n),
    CERTIFICATE: (CERTIFICATE_PEM_MAX_CHARS, lambda n: pem_shaped(n)),
}
PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----\n"
PEM_END: Final = "-----END CERTIFICATE-----\n"


def pem_shaped(n: int) -> str:
    """A string of exactly n characters in the shape of a PEM certificate.

    The model checks the shape and size only; whether it is a certificate the scheme root
    issued to the participant is the router's check (validate_chain), tested in tests/crypto.
    """
    size = n - len(PEM_BEGIN) - len(PEM_END)
    body = ("A" * 63 + "\n") * (size // 64 + 1)
    return PEM_BEGIN + body[: size - 1] + "\n" + PEM_END


# Fields that exist only in another shape of the message: the changes that make them apply.
FIELD_SHAPES: Final[dict[tuple[type[Message], str], dict[str, Any]]] = {
    (TransferStatus, "reason_code"): {"state": "aborted", "fulfilment": DROP},
    (TransferStatus, "original_transfer_id"): {"kind": "refund", "fulfilment": DROP},
}


def with_field(cls: type[Message], key: str, value: Any) -> dict[str, Any]:
    """The sample's claims, in the shape where `key` applies, with `key` set to value."""
    return claims_of(cls, **(FIELD_SHAPES.get((cls, key), {}) | {key: value}))


def fields_of_kind(kinds: set[str], classes: tuple[type[Message], ...] = ALL_MESSAGES) -> list[Any]:
    return [
        pytest.param(cls, key, kind, id=f"{cls.__name__}.{key}")
        for cls in classes
        for key, kind in WIRE_FIELDS[cls].items()
        if kind in kinds
    ]


def required_fields() -> list[Any]:
    return [
        pytest.param(cls, key, id=f"{cls.__name__}.{key}")
        for cls in ALL_MESSAGES
        for key in WIRE_FIELDS[cls]
        if key not in OPTIONAL_FIELDS.get(cls, set())
    ]


def refused(claims: Any, cls: type[Message]) -> SemopsError:
    with pytest.raises(SemopsError) as caught:
        parse_claims(claims, cls)
    return caught.value


def by_name(classes: tuple[type[Message], ...] = ALL_MESSAGES) -> Any:
    return pytest.mark.parametrize("cls", classes, ids=lambda cls: cls.__name__)


# --- The contract tables match the models ---------------------------------------------------


def test_every_message_type_is_registered_under_its_name() -> None:
    assert set(MESSAGE_TYPES) == {cls.__name__ for cls in ALL_MESSAGES}
    for name, cls in MESSAGE_TYPES.items():
        assert name == cls.MESSAGE_TYPE
    assert set(SAMPLES) == set(ALL_MESSAGES)
    assert set(WIRE_FIELDS) == set(ALL_MESSAGES)


@by_name()
def test_wire_keys_and_required_keys_are_exactly_the_contract(cls: type[Message]) -> None:
    wire = {
        field.alias or name: field.is_required()
        for name, field in cls.model_fields.items()
        if name not in {"v", "type"}
    }
    assert set(wire) == set(WIRE_FIELDS[cls])
    optional = {key for key, required in wire.items() if not required}
    assert optional == OPTIONAL_FIELDS.get(cls, set())


@by_name()
def test_signer_field_names_the_party_whose_key_signs(cls: type[Message]) -> None:
    assert SIGNER_FIELDS[cls] == cls.SIGNER_FIELD
    if cls.SIGNER_FIELD is not None:
        assert sample(cls).signer_party() == getattr(sample(cls), cls.SIGNER_FIELD)
    else:
        assert sample(cls).signer_party() is None


@by_name()
def test_claims_carry_version_and_type_name(cls: type[Message]) -> None:
    claims = sample(cls).to_claims()
    assert claims["v"] == PROTOCOL_VERSION == 1
    assert claims[TYPE_KEY[cls]] == cls.__name__
    assert cls.type_key() == TYPE_KEY[cls]


# --- Valid messages round-trip and are immutable -------------------------------------------


@by_name()
def test_valid_sample_round_trips_through_claims(cls: type[Message]) -> None:
    message = sample(cls)
    assert parse_claims(message.to_claims(), cls) == message


@by_name()
def test_claims_hold_only_json_ints_strings_and_containers(cls: type[Message]) -> None:
    def walk(value: Any) -> None:
        if isinstance(value, dict):
            assert all(isinstance(key, str) for key in value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        else:
            assert type(value) in {int, str}, value

    walk(sample(cls).to_claims())


@by_name()
def test_assigning_a_field_raises(cls: type[Message]) -> None:
    message = sample(cls)
    field = next(name for name in cls.model_fields if name not in {"v", "type"})
    before = message.to_claims()
    with pytest.raises(ValidationError):
        setattr(message, field, getattr(message, field))
    with pytest.raises(ValidationError):
        message.v = 2  # type: ignore[misc]
    assert message.to_claims() == before


def test_directory_entries_are_immutable_too() -> None:
    directory = sample(Directory)
    assert isinstance(directory, Directory)
    assert isinstance(directory.entries, tuple)
    with pytest.raises(ValidationError):
        directory.entries[0].status = "suspended"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        directory.entries[0].keys[0].status = "revoked"  # type: ignore[misc]


@by_name()
def test_digest_is_stable_and_follows_the_content(cls: type[Message]) -> None:
    message = sample(cls)
    assert message.digest() == parse_claims(message.to_claims(), cls).digest()
    assert len(message.digest()) == 43
    ids = [key for key, kind in WIRE_FIELDS[cls].items() if kind == ID]
    changes: dict[str, Any] = {ids[0]: "id_" + "z" * 20} if ids else CONTENT_CHANGES[cls]
    assert parse_claims(claims_of(cls, **changes), cls).digest() != message.digest()


# A change of content for the messages that carry no id.
CONTENT_CHANGES: Final[dict[type[Message], dict[str, Any]]] = {
    Directory: {"serial": 8},
    ParticipantRegistration: {"display_name": "Bank A (renamed)"},
    RegistrationEndorsement: {"registration_digest": "B" * 43},
    DeviceAuth: {"path": "/v1/orders/or_2"},
    Enrolment: {"device_name": "Alice's tablet"},
}


@pytest.mark.parametrize(
    ("cls", "changes"),
    [
        (TransferStatus, {"state": "reserved", "fulfilment": DROP}),
        (TransferStatus, {"state": "aborted", "fulfilment": DROP, "reason_code": "timeout"}),
        (
            TransferStatus,
            {"kind": "refund", "fulfilment": DROP, "original_transfer_id": "tr_" + "P" * 22},
        ),
        (RefundResult, {"outcome": "accepted", "reason_code": DROP}),
        (PaymentRequest, {"ref": DROP, "bd": DROP}),
    ],
    ids=["status-reserved", "status-aborted", "status-refund", "refund-accepted", "request-bare"],
)
def test_other_valid_shapes_round_trip(cls: type[Message], changes: dict[str, Any]) -> None:
    message = parse_claims(claims_of(cls, **changes), cls)
    assert parse_claims(message.to_claims(), cls) == message


@pytest.mark.parametrize(
    ("cls", "key"), DROPPABLE_OPTIONAL, ids=lambda x: getattr(x, "__name__", x)
)
def test_optional_field_may_be_left_out_and_is_then_absent_from_claims(
    cls: type[Message], key: str
) -> None:
    message = parse_claims(with_field(cls, key, DROP), cls)
    assert key not in message.to_claims()


def test_payment_notice_guarantee_is_irrevocable_only() -> None:
    assert sample(PaymentNotice).to_claims()["guarantee"] == "irrevocable"
    error = refused(claims_of(PaymentNotice, guarantee="revocable"), PaymentNotice)
    assert error.code == "validation_failed"


# --- Envelope-level refusals: not a dict, version, type -------------------------------------


@pytest.mark.parametrize("claims", [None, [], "{}", 1, b"{}", (("v", 1),), 1.5], ids=repr)
def test_claims_that_are_not_an_object_are_malformed(claims: Any) -> None:
    assert refused(claims, PaymentRequest).code == "malformed"


@by_name()
@pytest.mark.parametrize("version", [0, 2, -1, "1", True, 1.0, None, [1], DROP], ids=repr)
def test_any_version_but_integer_one_is_unsupported(cls: type[Message], version: Any) -> None:
    assert refused(claims_of(cls, v=version), cls).code == "version_unsupported"


@by_name()
def test_wrong_or_missing_type_name_is_unexpected(cls: type[Message]) -> None:
    key = TYPE_KEY[cls]
    other = next(name for name in MESSAGE_TYPES if name != cls.__name__)
    for wrong in (other, cls.__name__.lower(), cls.__name__ + " ", None, 1, DROP):
        assert refused(with_field(cls, key, wrong), cls).code == "message_type_unexpected"


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda cls: cls.__name__)
def test_a_message_of_one_type_does_not_parse_as_another(cls: type[Message]) -> None:
    claims = sample(cls).to_claims()
    for other in ALL_MESSAGES:
        if other is not cls:
            assert refused(claims, other).code == "message_type_unexpected"


def test_request_with_the_long_type_key_is_refused() -> None:
    claims = claims_of(PaymentRequest, t=DROP, type="PaymentRequest")
    assert refused(claims, PaymentRequest).code == "message_type_unexpected"


# --- Unknown, missing and mistyped fields ---------------------------------------------------


@by_name()
@pytest.mark.parametrize("extra_key", ["unexpected", "payer_name", "V", "kid", ""])
def test_unknown_field_is_refused(cls: type[Message], extra_key: str) -> None:
    error = refused(claims_of(cls, **{extra_key: "x"}), cls)
    assert error.code == "validation_failed"


@pytest.mark.parametrize(("cls", "key"), required_fields())
def test_missing_required_field_is_refused(cls: type[Message], key: str) -> None:
    error = refused(with_field(cls, key, DROP), cls)
    assert error.code == "validation_failed"
    assert key in {item["field"] for item in error.extra["errors"]}


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind(INT_KINDS))
@pytest.mark.parametrize(
    "wrong", [1250.0, 1.5, True, False, "1250", None, [1250], {"n": 1}], ids=repr
)
def test_integer_field_refuses_every_other_type(
    cls: type[Message], key: str, kind: str, wrong: Any
) -> None:
    error = refused(with_field(cls, key, wrong), cls)
    assert error.code == "validation_failed"
    assert key in {item["field"] for item in error.extra["errors"]}


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind(STRING_KINDS))
@pytest.mark.parametrize("wrong", [7, 0, True, None, ["x"], {"x": "y"}, 1.0, b"x"], ids=repr)
def test_string_field_refuses_every_other_type(
    cls: type[Message], key: str, kind: str, wrong: Any
) -> None:
    error = refused(with_field(cls, key, wrong), cls)
    assert error.code == "validation_failed"


@pytest.mark.parametrize("wrong", ["x", 1, {"a": 1}, [None], [1]], ids=repr)
def test_directory_entries_must_be_a_list_of_entries(wrong: Any) -> None:
    assert refused(claims_of(Directory, entries=wrong), Directory).code == "validation_failed"


@pytest.mark.parametrize(
    ("cls", "key"),
    required_fields()
    + [
        pytest.param(cls, key, id=f"{cls.__name__}.{key}")
        for cls, keys in OPTIONAL_FIELDS.items()
        for key in sorted(keys)
    ],
)
def test_null_is_refused_for_every_field_even_an_optional_one(cls: type[Message], key: str) -> None:
    # One message has one wire form: an absent optional is left out, never sent as null,
    # so the claims a party re-encodes are exactly the claims that were signed.
    error = refused(with_field(cls, key, None), cls)
    assert error.code == "validation_failed"
    assert key in {item["field"] for item in error.extra["errors"]}


# --- Amounts and currencies -----------------------------------------------------------------


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({AMOUNT}))
@pytest.mark.parametrize("amount", [0, -1, -1250, AMOUNT_MAX_MINOR + 1, 2**63, 2**64 + 1], ids=repr)
def test_amount_outside_one_to_max_is_refused(
    cls: type[Message], key: str, kind: str, amount: int
) -> None:
    assert refused(with_field(cls, key, amount), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({AMOUNT}))
@pytest.mark.parametrize("amount", [1, 2, AMOUNT_MAX_MINOR - 1, AMOUNT_MAX_MINOR], ids=repr)
def test_amount_from_one_to_max_is_accepted(
    cls: type[Message], key: str, kind: str, amount: int
) -> None:
    message = parse_claims(with_field(cls, key, amount), cls)
    assert message.to_claims()[key] == amount


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({CURRENCY}))
@pytest.mark.parametrize("code", ["XXX", "ZZZ", "EUX", "ABC"])
def test_well_formed_but_unsupported_currency_is_currency_unknown(
    cls: type[Message], key: str, kind: str, code: str
) -> None:
    assert refused(with_field(cls, key, code), cls).code == "currency_unknown"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({CURRENCY}))
@pytest.mark.parametrize("code", ["eur", "Eur", "EURO", "EU", "", " EUR", "EUR\n", "€", "E1R"])
def test_malformed_currency_code_is_validation_failed(
    cls: type[Message], key: str, kind: str, code: str
) -> None:
    assert refused(with_field(cls, key, code), cls).code == "validation_failed"


@pytest.mark.parametrize("code", sorted(CURRENCY_SCALES))
def test_every_supported_currency_is_accepted(code: str) -> None:
    message = parse_claims(claims_of(PaymentRequest, cur=code), PaymentRequest)
    assert isinstance(message, PaymentRequest)
    assert message.currency == code


# --- Times ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({TIME}))
@pytest.mark.parametrize("value", [-1, TIMESTAMP_MAX_S + 1, 2**63], ids=repr)
def test_timestamp_outside_zero_to_max_is_refused(
    cls: type[Message], key: str, kind: str, value: int
) -> None:
    assert refused(with_field(cls, key, value), cls).code == "validation_failed"


# --- String bounds --------------------------------------------------------------------------


def bounded_string_fields() -> list[Any]:
    return [
        param
        for param in fields_of_kind(set(STRING_LIMITS))
        if param.values[0] is not Directory  # the router id must also be listed: own tests
    ]


@pytest.mark.parametrize(("cls", "key", "kind"), bounded_string_fields())
def test_string_of_exactly_the_limit_is_accepted(cls: type[Message], key: str, kind: str) -> None:
    limit, make = STRING_LIMITS[kind]
    value = make(limit)
    assert len(value) == limit
    message = parse_claims(with_field(cls, key, value), cls)
    assert message.to_claims()[key] == value


@pytest.mark.parametrize(("cls", "key", "kind"), bounded_string_fields())
def test_string_one_past_the_limit_is_refused(cls: type[Message], key: str, kind: str) -> None:
    limit, make = STRING_LIMITS[kind]
    value = make(limit + 1)
    assert len(value) == limit + 1
    error = refused(with_field(cls, key, value), cls)
    assert error.code == "validation_failed"
    assert key in {item["field"] for item in error.extra["errors"]}


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({DIGEST_KIND}))
@pytest.mark.parametrize("length", [0, 42, 44, 64])
def test_digest_of_any_length_but_43_is_refused(
    cls: type[Message], key: str, kind: str, length: int
) -> None:
    assert refused(with_field(cls, key, "A" * length), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({DIGEST_KIND}))
@pytest.mark.parametrize("bad", ["+" * 43, "/" * 43, "=" * 43, "A" * 42 + "="], ids=repr)
def test_digest_outside_base64url_is_refused(
    cls: type[Message], key: str, kind: str, bad: str
) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({ID}))
@pytest.mark.parametrize(
    "bad",
    [
        "x" * (ID_MIN_CHARS - 1),
        "tr_abc/def",
        "tr_abc def",
        "tr_abcdef\n",
        "tr_abcdéfg",
        "tr.abcdefg",
    ],
    ids=repr,
)
def test_malformed_id_is_refused(cls: type[Message], key: str, kind: str, bad: str) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({PARTY}))
@pytest.mark.parametrize(
    "bad",
    ["b" * (PARTY_ID_MIN_CHARS - 1), "Bank-A", "-bank", "bank-", "bank_a", "bank a", "bank-a\n"],
    ids=repr,
)
def test_malformed_party_id_is_refused(cls: type[Message], key: str, kind: str, bad: str) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({ACCOUNT}))
@pytest.mark.parametrize("bad", ["", "ACC 1", "ACC/1", "ACC\n", "accöunt"], ids=repr)
def test_malformed_account_id_is_refused(cls: type[Message], key: str, kind: str, bad: str) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({TOKEN, SEALED}))
@pytest.mark.parametrize("bad", ["", "a.b", "a.b.c.d", "a..c", "a.b.c.d.e.f", "a.b+.c", "a.b.c="])
def test_nested_token_of_the_wrong_shape_is_refused(
    cls: type[Message], key: str, kind: str, bad: str
) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


# Text shown to people: one line, printable, no leading or trailing white space.
BAD_ONE_LINE_TEXT: Final = [
    "",
    " Shop",
    "Shop ",
    "\tShop",
    "Shop\n",
    "Corner\nShop",
    "Corner\rShop",
    "Corner\x00Shop",
    "Corner\x1b[31mShop",
    "Corner\x7fShop",
    "Corner\x85Shop",  # C1 NEXT LINE
    "Corner\x9b31mShop",  # C1 CONTROL SEQUENCE INTRODUCER
    "Corner\u2028Shop",  # LINE SEPARATOR
    "Corner\u2029Shop",  # PARAGRAPH SEPARATOR
    "\u00a0Shop",
    # Controls are not white space, so they must be refused at the edges too.
    "Corner Shop\x00",
    "\x1b[31mCorner Shop",
    "Corner Shop\x1b",
    "\x7fShop",
    "Shop\x9b",
    "\x85Shop",
    "\x00",
]
GOOD_ONE_LINE_TEXT: Final = [
    "S",
    "Corner Shop",
    "Café Noir",
    "O'Brien & Sons (Ltd.)",
    "語語語",
    # Right-to-left scripts are text like any other; only the invisible controls are refused.
    "مقهى الزاوية",
    "מספרה",
]


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind(ONE_LINE_TEXT_KINDS))
@pytest.mark.parametrize("bad", BAD_ONE_LINE_TEXT, ids=repr)
def test_text_with_control_characters_or_edge_spaces_is_refused(
    cls: type[Message], key: str, kind: str, bad: str
) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind(ONE_LINE_TEXT_KINDS))
@pytest.mark.parametrize("good", GOOD_ONE_LINE_TEXT, ids=repr)
def test_printable_one_line_text_is_accepted(
    cls: type[Message], key: str, kind: str, good: str
) -> None:
    assert parse_claims(with_field(cls, key, good), cls).to_claims()[key] == good


# Unicode's Bidi_Control characters: invisible, and able to reorder what is displayed, so
# that "Corner Shop\u202egnirts" or an isolate can make one payee look like another
# ("Trojan Source"). Written out as numbers, independently of the model's pattern.
BIDI_CONTROLS: Final = [
    0x061C,  # ARABIC LETTER MARK
    0x200E,  # LEFT-TO-RIGHT MARK
    0x200F,  # RIGHT-TO-LEFT MARK
    0x202A,  # LEFT-TO-RIGHT EMBEDDING
    0x202B,  # RIGHT-TO-LEFT EMBEDDING
    0x202C,  # POP DIRECTIONAL FORMATTING
    0x202D,  # LEFT-TO-RIGHT OVERRIDE
    0x202E,  # RIGHT-TO-LEFT OVERRIDE
    0x2066,  # LEFT-TO-RIGHT ISOLATE
    0x2067,  # RIGHT-TO-LEFT ISOLATE
    0x2068,  # FIRST STRONG ISOLATE
    0x2069,  # POP DIRECTIONAL ISOLATE
]
BIDI_PLACES: Final = {
    "inside": lambda c: f"Corner{c}Shop",
    "first": lambda c: f"{c}Corner Shop",
    "last": lambda c: f"Corner Shop{c}",
    "alone": lambda c: c,
}


def test_the_bidi_controls_are_exactly_unicodes_bidi_control_characters() -> None:
    # PropList.txt, Bidi_Control: 061C, 200E..200F, 202A..202E, 2066..2069.
    expected = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
    assert expected == BIDI_CONTROLS
    assert all(unicodedata.category(chr(code)) == "Cf" for code in BIDI_CONTROLS)


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind(ONE_LINE_TEXT_KINDS))
@pytest.mark.parametrize("code", BIDI_CONTROLS, ids=lambda code: f"U+{code:04X}")
@pytest.mark.parametrize("place", sorted(BIDI_PLACES))
def test_text_with_a_bidirectional_control_is_refused(
    cls: type[Message], key: str, kind: str, code: int, place: str
) -> None:
    bad = BIDI_PLACES[place](chr(code))
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize("code", BIDI_CONTROLS, ids=lambda code: f"U+{code:04X}")
@pytest.mark.parametrize(
    ("cls", "key"),
    [
        (PaymentRequest, "pn"),
        (Receipt, "payee_name"),
        (PaymentRequest, "ref"),
        (PaymentNotice, "reference"),
        (Receipt, "reference"),
        (RefundTransfer, "reason"),
    ],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_payee_name_reference_and_reason_refuse_every_bidi_control(
    code: int, cls: type[Message], key: str
) -> None:
    # The fields a payer reads before approving, named one by one (the table-driven test
    # above covers them too, through their kinds).
    assert refused(claims_of(cls, **{key: f"Corner {chr(code)}Shop"}), cls).code == (
        "validation_failed"
    )


@pytest.mark.parametrize("code", BIDI_CONTROLS, ids=lambda code: f"U+{code:04X}")
def test_directory_display_name_refuses_every_bidi_control(code: int) -> None:
    claims = claims_of(Directory)
    claims["entries"][1]["display_name"] = f"Bank{chr(code)} A"
    assert refused(claims, Directory).code == "validation_failed"


@pytest.mark.parametrize(("cls", "key", "kind"), fields_of_kind({REASON_CODE}))
@pytest.mark.parametrize(
    "bad", ["no_such_code", "Timeout", "timeout ", "x" * (REASON_CODE_MAX_CHARS + 1), ""], ids=repr
)
def test_reason_code_must_be_a_registered_error_code(
    cls: type[Message], key: str, kind: str, bad: str
) -> None:
    assert refused(with_field(cls, key, bad), cls).code == "validation_failed"


@pytest.mark.parametrize("code", ["timeout", "insufficient_funds", "request_expired", "internal"])
def test_registered_reason_codes_are_accepted(code: str) -> None:
    message = parse_claims(claims_of(TransferReject, reason_code=code), TransferReject)
    assert isinstance(message, TransferReject)
    assert message.reason_code == code


# --- The request's short wire keys ----------------------------------------------------------

REQUEST_SHORT_KEYS: Final = {
    "rid": "request_id",
    "pp": "payee_processor",
    "pid": "payee_id",
    "pn": "payee_name",
    "amt": "amount_minor",
    "cur": "currency",
    "ref": "reference",
    "iat": "created_at",
    "exp": "expires_at",
    "cnd": "condition",
    "bd": "basket_digest",
}


def test_request_claims_use_the_short_keys_only() -> None:
    assert set(sample(PaymentRequest).to_claims()) == {"v", "t", *REQUEST_SHORT_KEYS}


@pytest.mark.parametrize(("short", "long"), sorted(REQUEST_SHORT_KEYS.items()))
def test_request_refuses_the_long_field_name_on_the_wire(short: str, long: str) -> None:
    claims = sample(PaymentRequest).to_claims()
    claims[long] = claims.pop(short)
    error = refused(claims, PaymentRequest)
    assert error.code == "validation_failed"
    assert long in {item["field"] for item in error.extra["errors"]}


def test_request_built_in_python_by_name_reads_by_name() -> None:
    request = sample(PaymentRequest)
    assert isinstance(request, PaymentRequest)
    assert request.amount_minor == request.to_claims()["amt"] == 1250
    assert request.payee_name == request.to_claims()["pn"]


# --- Errors never echo the refused value ----------------------------------------------------

SECRET_PIN: Final = "9876"
SECRET_TEXT: Final = "s3cr3t-Zq7"

LEAK_CASES: Final = [
    (PaymentRequest, {"amt": SECRET_PIN}),
    (PaymentRequest, {"amt": f"{SECRET_PIN}.5"}),
    (PaymentRequest, {"cur": SECRET_PIN}),
    (PaymentRequest, {"pn": f"{SECRET_TEXT}\x00"}),
    (PaymentRequest, {"pn": SECRET_TEXT * 10}),
    (PaymentRequest, {"ref": f" {SECRET_PIN}"}),
    (PaymentRequest, {"rid": f"{SECRET_TEXT}/{SECRET_PIN}"}),
    (PaymentRequest, {"cnd": SECRET_TEXT}),
    (PaymentRequest, {"pin": SECRET_PIN}),
    (PaymentRequest, {"iat": [SECRET_PIN]}),
    (PaymentOrder, {"payer_account": f"{SECRET_PIN} {SECRET_TEXT}"}),
    (PaymentOrder, {"request": SECRET_TEXT}),
    (PaymentOrder, {"pin_block": SECRET_PIN}),
    (PaymentOrder, {"pin_block": {"pin": SECRET_PIN}}),
    (PaymentOrder, {"pin": SECRET_PIN, "pin_block": DROP}),
    (PaymentOrder, {"v": SECRET_PIN}),
    (PaymentOrder, {"type": SECRET_TEXT}),
    (TransferReject, {"reason_code": f"pin_{SECRET_PIN}"}),
    (TransferStatus, {"kind": SECRET_TEXT}),
    (PaymentNotice, {"guarantee": SECRET_TEXT}),
    (RefundTransfer, {"reason": f"{SECRET_TEXT}\n{SECRET_PIN}"}),
    (Directory, {"entries": [{"participant_id": SECRET_TEXT}]}),
    (ParticipantRegistration, {"sign_certificate": SECRET_TEXT}),
    (ParticipantRegistration, {"enc_certificate": f"-----BEGIN PRIVATE KEY-----{SECRET_TEXT}"}),
    (DeviceAuth, {"path": f"{SECRET_TEXT} {SECRET_PIN}"}),
    (DeviceAuth, {"account_id": f"{SECRET_TEXT}/{SECRET_PIN}"}),
    (Enrolment, {"activation_code": SECRET_TEXT}),
    (Enrolment, {"activation_code": f"{SECRET_PIN}-{SECRET_TEXT}"}),
    (Enrolment, {"pin_block": SECRET_PIN}),
    (Enrolment, {"pin": SECRET_PIN}),
    (Enrolment, {"device_jwk": {"kty": "EC", "d": SECRET_TEXT}}),
]


@pytest.mark.parametrize(("cls", "changes"), LEAK_CASES, ids=lambda x: getattr(x, "__name__", None))
def test_refusal_never_echoes_the_refused_value(
    cls: type[Message], changes: dict[str, Any]
) -> None:
    error = refused(claims_of(cls, **changes), cls)
    for secret in (SECRET_PIN, SECRET_TEXT):
        assert not leaked_anywhere(error, secret), (error.code, error.detail, error.extra)


def test_refusal_names_the_failing_field_for_the_caller() -> None:
    error = refused(claims_of(PaymentRequest, amt="12.50"), PaymentRequest)
    assert error.extra["errors"][0]["field"] == "amt"
    assert "amt" in error.detail
    assert error.to_problem()["errors"] == error.extra["errors"]


# --- Cross-field rules ----------------------------------------------------------------------

# (creation key, expiry key, shortest validity, longest validity) of every windowed type.
WINDOW_TABLE: Final[dict[type[Message], tuple[str, str, int, int]]] = {
    PaymentRequest: ("iat", "exp", REQUEST_TTL_MIN_S, REQUEST_TTL_MAX_S),
    PaymentOrder: ("created_at", "expires_at", 1, ORDER_TTL_S),
    TransferPrepare: ("created_at", "expires_at", 1, TRANSFER_TTL_MAX_S),
    RoutedPrepare: ("created_at", "expires_at", 1, TRANSFER_TTL_MAX_S),
    RefundTransfer: ("created_at", "expires_at", 1, MESSAGE_TTL_MAX_S),
    Directory: ("issued_at", "expires_at", 1, 30 * MESSAGE_TTL_MAX_S),
    ParticipantRegistration: ("created_at", "expires_at", 1, AUTH_TTL_MAX_S),
    RegistrationEndorsement: ("created_at", "expires_at", 1, AUTH_TTL_MAX_S),
    DeviceAuth: ("created_at", "expires_at", 1, AUTH_TTL_MAX_S),
    Enrolment: ("created_at", "expires_at", 1, ORDER_TTL_S),
}
WINDOWS: Final = [
    pytest.param(cls, *window, id=cls.__name__) for cls, window in WINDOW_TABLE.items()
]
windowed = pytest.mark.parametrize(("cls", "created", "expires", "ttl_min_s", "ttl_max_s"), WINDOWS)


def test_every_message_with_an_expiry_has_its_window_in_the_table() -> None:
    with_expiry = {cls for cls in ALL_MESSAGES if "expires_at" in cls.model_fields}
    assert with_expiry == set(WINDOW_TABLE)


@windowed
@pytest.mark.parametrize("offset", [0, -1, -3600])
def test_expiry_not_after_creation_is_refused(
    cls: type[Message], created: str, expires: str, ttl_min_s: int, ttl_max_s: int, offset: int
) -> None:
    claims = claims_of(cls, **{created: NOW, expires: NOW + offset})
    assert refused(claims, cls).code == "validation_failed"


@windowed
def test_validity_period_from_the_minimum_to_the_maximum_is_accepted(
    cls: type[Message], created: str, expires: str, ttl_min_s: int, ttl_max_s: int
) -> None:
    for ttl in (ttl_min_s, ttl_max_s):
        message = parse_claims(claims_of(cls, **{created: NOW, expires: NOW + ttl}), cls)
        assert message.to_claims()[expires] == NOW + ttl


@windowed
def test_validity_period_beyond_the_maximum_is_refused(
    cls: type[Message], created: str, expires: str, ttl_min_s: int, ttl_max_s: int
) -> None:
    claims = claims_of(cls, **{created: NOW, expires: NOW + ttl_max_s + 1})
    assert refused(claims, cls).code == "validation_failed"


@pytest.mark.parametrize("ttl", [1, 2, REQUEST_TTL_MIN_S // 2, REQUEST_TTL_MIN_S - 1])
def test_request_valid_for_less_than_the_minimum_is_refused(ttl: int) -> None:
    # A request that expires before a customer can scan it, approve and pay is a trap.
    assert REQUEST_TTL_MIN_S > 1
    claims = claims_of(PaymentRequest, iat=NOW, exp=NOW + ttl)
    error = refused(claims, PaymentRequest)
    assert error.code == "validation_failed"
    assert "payable" in error.detail


def test_request_cannot_be_built_in_python_with_a_too_short_validity() -> None:
    fields = sample(PaymentRequest).model_dump(by_alias=False)
    fields["expires_at"] = NOW + REQUEST_TTL_MIN_S - 1
    with pytest.raises(ValidationError):
        PaymentRequest(**fields)
    fields["expires_at"] = NOW + REQUEST_TTL_MIN_S
    assert PaymentRequest(**fields).expires_at == NOW + REQUEST_TTL_MIN_S


def test_transfer_prepare_between_one_processor_and_itself_is_refused() -> None:
    claims = claims_of(TransferPrepare, payee_processor=PAYER_PROCESSOR)
    assert refused(claims, TransferPrepare).code == "validation_failed"


ORIGINAL = "tr_" + "P" * 22


def _status_is_valid(kind: str, state: str, fulfilment: bool, reason: bool, original: bool) -> bool:
    """The rule, stated plainly: a committed payment carries the fulfilment and no other
    payment does; an aborted transfer carries a reason and no other does; a refund names
    the original transfer and a payment does not, and never carries a fulfilment."""
    if kind == "payment" and fulfilment != (state == "committed"):
        return False
    if kind == "refund" and fulfilment:
        return False  # a refund has no hash lock, so nothing fulfils it
    if reason != (state == "aborted"):
        return False
    return original == (kind == "refund")


STATUS_SHAPES: Final = [
    pytest.param(
        kind,
        state,
        fulfilment,
        reason,
        original,
        id=f"{kind}-{state}-f{fulfilment:d}-r{reason:d}-o{original:d}",
    )
    for kind in ("payment", "refund")
    for state in ("reserved", "committed", "aborted")
    for fulfilment in (False, True)
    for reason in (False, True)
    for original in (False, True)
]


@pytest.mark.parametrize(("kind", "state", "fulfilment", "reason", "original"), STATUS_SHAPES)
def test_transfer_status_fields_follow_kind_and_state(
    kind: str, state: str, fulfilment: bool, reason: bool, original: bool
) -> None:
    claims = claims_of(
        TransferStatus,
        kind=kind,
        state=state,
        fulfilment=FULFILMENT if fulfilment else DROP,
        reason_code="timeout" if reason else DROP,
        original_transfer_id=ORIGINAL if original else DROP,
    )
    if _status_is_valid(kind, state, fulfilment, reason, original):
        assert parse_claims(claims, TransferStatus).to_claims() == claims
    else:
        assert refused(claims, TransferStatus).code == "validation_failed"


@pytest.mark.parametrize(
    ("outcome", "reason", "valid"),
    [
        ("accepted", False, True),
        ("accepted", True, False),
        ("rejected", True, True),
        ("rejected", False, False),
    ],
)
def test_refund_result_carries_a_reason_exactly_when_rejected(
    outcome: str, reason: bool, valid: bool
) -> None:
    claims = claims_of(
        RefundResult, outcome=outcome, reason_code="account_blocked" if reason else DROP
    )
    if valid:
        assert parse_claims(claims, RefundResult).to_claims() == claims
    else:
        assert refused(claims, RefundResult).code == "validation_failed"


def test_refund_result_outcome_is_accepted_or_rejected_only() -> None:
    error = refused(claims_of(RefundResult, outcome="pending"), RefundResult)
    assert error.code == "validation_failed"


def test_receipt_whose_fulfilment_does_not_match_the_condition_is_fulfilment_invalid() -> None:
    claims = claims_of(Receipt, fulfilment=OTHER_FULFILMENT)
    assert refused(claims, Receipt).code == "fulfilment_invalid"
    claims = claims_of(Receipt, condition=DIGEST)
    assert refused(claims, Receipt).code == "fulfilment_invalid"


def test_receipt_cannot_be_built_in_python_with_a_wrong_fulfilment() -> None:
    receipt = sample(Receipt)
    fields = receipt.model_dump() | {"fulfilment": OTHER_FULFILMENT}
    with pytest.raises(SemopsError) as caught:
        Receipt(**fields)
    assert caught.value.code == "fulfilment_invalid"


# --- The directory --------------------------------------------------------------------------


def directory_claims(**changes: Any) -> dict[str, Any]:
    return claims_of(Directory, **changes)


def test_directory_listing_one_participant_twice_is_refused() -> None:
    claims = directory_claims()
    claims["entries"][2]["participant_id"] = PAYER_PROCESSOR
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_listing_one_kid_under_two_participants_is_refused() -> None:
    claims = directory_claims()
    claims["entries"][2]["keys"].append(claims["entries"][1]["keys"][0])
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_listing_one_kid_twice_in_one_entry_is_refused() -> None:
    claims = directory_claims()
    claims["entries"][1]["keys"].append(claims["entries"][1]["keys"][0])
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_whose_router_does_not_list_itself_is_refused() -> None:
    claims = directory_claims()
    claims["entries"] = claims["entries"][1:]
    assert refused(claims, Directory).code == "validation_failed"
    assert refused(directory_claims(router_id="other-router"), Directory).code == (
        "validation_failed"
    )


def test_directory_bounds_entries_and_keys() -> None:
    assert refused(directory_claims(entries=[]), Directory).code == "validation_failed"
    claims = directory_claims()
    claims["entries"][0]["keys"] = []
    assert refused(claims, Directory).code == "validation_failed"
    claims = directory_claims()
    spare = [
        DirectoryKey.from_record(
            derive_key(ROUTER, KeyUse.SIGN, seed(f"spare {n}")).public_record(0, 10**10)
        ).model_dump()
        for n in range(KEYS_PER_PARTY_MAX)
    ]
    claims["entries"][0]["keys"] = spare
    assert parse_claims(claims, Directory)
    claims["entries"][0]["keys"] = [*spare, claims["entries"][1]["keys"][0]]
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_lists_at_most_the_entry_limit() -> None:
    claims = directory_claims()
    template = claims["entries"][1]
    extra = DIRECTORY_ENTRIES_MAX - len(claims["entries"])
    for n in range(extra):
        key = dict(template["keys"][0], kid=f"bank-{n}:k")
        claims["entries"].append(dict(template, participant_id=f"bank-{n}", keys=[key]))
    assert len(parse_claims(claims, Directory).entries) == DIRECTORY_ENTRIES_MAX
    key = dict(template["keys"][0], kid="bank-last:k")
    claims["entries"].append(dict(template, participant_id="bank-last", keys=[key]))
    assert refused(claims, Directory).code == "validation_failed"


@pytest.mark.parametrize(
    ("field", "limit", "make"),
    [
        ("display_name", DISPLAY_NAME_MAX_CHARS, lambda n: "N" * n),
        ("endpoint", URL_MAX_CHARS, lambda n: "https://r.example/" + "p" * (n - 18)),
    ],
)
def test_directory_entry_strings_are_bounded(field: str, limit: int, make: Any) -> None:
    claims = directory_claims()
    claims["entries"][0][field] = make(limit)
    assert parse_claims(claims, Directory)
    claims["entries"][0][field] = make(limit + 1)
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_kid_is_bounded() -> None:
    claims = directory_claims()
    claims["entries"][0]["keys"][0]["kid"] = "k" * KID_MAX_CHARS
    assert parse_claims(claims, Directory)
    claims["entries"][0]["keys"][0]["kid"] = "k" * (KID_MAX_CHARS + 1)
    assert refused(claims, Directory).code == "validation_failed"


@pytest.mark.parametrize(
    "endpoint", ["ftp://r.example", "https://", "r.example", "https://r .example", "javascript:x"]
)
def test_directory_endpoint_must_be_an_http_url(endpoint: str) -> None:
    claims = directory_claims()
    claims["entries"][0]["endpoint"] = endpoint
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_key_with_a_private_member_is_refused() -> None:
    claims = directory_claims()
    claims["entries"][0]["keys"][0]["jwk"]["d"] = "A" * 43
    assert refused(claims, Directory).code == "validation_failed"


@pytest.mark.parametrize(
    ("member", "value"), [("kty", "OKP"), ("crv", "P-384"), ("crv", "secp256k1")]
)
def test_directory_key_of_another_type_is_refused(member: str, value: str) -> None:
    claims = directory_claims()
    claims["entries"][0]["keys"][0]["jwk"][member] = value
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_key_whose_point_is_not_on_the_curve_is_refused() -> None:
    claims = directory_claims()
    jwk = claims["entries"][1]["keys"][1]["jwk"]
    jwk["y"] = jwk["x"]
    assert refused(claims, Directory).code == "validation_failed"


def test_directory_serial_is_a_positive_integer() -> None:
    for bad in (0, -1, 2**53 + 1):
        assert refused(directory_claims(serial=bad), Directory).code == "validation_failed"


def test_directory_finds_entries_and_refuses_unknown_or_suspended_ones() -> None:
    directory = sample(Directory)
    assert isinstance(directory, Directory)
    assert directory.entry(PAYER_PROCESSOR).participant_id == PAYER_PROCESSOR
    with pytest.raises(SemopsError) as caught:
        directory.entry("bank-z")
    assert caught.value.code == "processor_unknown"
    claims = directory_claims()
    claims["entries"][1]["status"] = "suspended"
    suspended = parse_claims(claims, Directory)
    assert suspended.entry(PAYER_PROCESSOR).status == "suspended"
    with pytest.raises(SemopsError) as caught:
        suspended.active_entry(PAYER_PROCESSOR)
    assert caught.value.code == "processor_suspended"
    assert suspended.active_entry(PAYEE_PROCESSOR).participant_id == PAYEE_PROCESSOR


def test_directory_key_records_name_their_owner() -> None:
    directory = sample(Directory)
    assert isinstance(directory, Directory)
    owners = {(record.owner, record.use) for record in directory.key_records()}
    assert owners == {
        (ROUTER, KeyUse.SIGN),
        (PAYER_PROCESSOR, KeyUse.SIGN),
        (PAYER_PROCESSOR, KeyUse.ENCRYPT),
        (PAYEE_PROCESSOR, KeyUse.SIGN),
        (PAYEE_PROCESSOR, KeyUse.ENCRYPT),
    }


def test_directory_key_round_trips_to_a_key_record() -> None:
    key = derive_key(PAYEE_PROCESSOR, KeyUse.ENCRYPT, seed("round trip"))
    record = key.public_record(100, 200, KeyStatus.REVOKED)
    assert DirectoryKey.from_record(record).to_record(PAYEE_PROCESSOR) == record


def _entry_with_keys(*keys: tuple[str, int, int, str, KeyUse]) -> DirectoryEntry:
    """An entry for mno-b with keys (label, not_before, not_after, status, use)."""
    return DirectoryEntry(
        participant_id=PAYEE_PROCESSOR,
        kind="mno",
        display_name="MNO B",
        endpoint="https://mno-b.example",
        keys=tuple(
            DirectoryKey.from_record(
                derive_key(PAYEE_PROCESSOR, use, seed(label)).public_record(
                    not_before, not_after, KeyStatus(status)
                )
            )
            for label, not_before, not_after, status, use in keys
        ),
    )


def test_current_key_is_the_newest_active_key_valid_now() -> None:
    enc, sig = KeyUse.ENCRYPT, KeyUse.SIGN
    entry = _entry_with_keys(
        ("old", 100, 10**10, "active", enc),
        ("current", 200, 10**10, "active", enc),
        ("revoked", 300, 10**10, "revoked", enc),
        ("future", NOW + 1, 10**10, "active", enc),
        ("expired", 250, NOW, "active", enc),
        ("signing", 400, 10**10, "active", sig),
    )
    chosen = entry.current_key(enc, NOW)
    assert chosen.kid == derive_key(PAYEE_PROCESSOR, enc, seed("current")).kid
    assert chosen.owner == PAYEE_PROCESSOR
    assert entry.current_key(sig, NOW).kid == derive_key(PAYEE_PROCESSOR, sig, seed("signing")).kid
    # Once the future key starts, it becomes the current one.
    future = derive_key(PAYEE_PROCESSOR, enc, seed("future")).kid
    assert entry.current_key(enc, NOW + 1).kid == future


def test_current_key_is_refused_when_no_key_is_usable() -> None:
    enc = KeyUse.ENCRYPT
    entry = _entry_with_keys(
        ("revoked", 100, 10**10, "revoked", enc),
        ("future", NOW + 1, 10**10, "active", enc),
        ("expired", 100, NOW, "active", enc),
        ("signing", 100, 10**10, "active", KeyUse.SIGN),
    )
    with pytest.raises(SemopsError) as caught:
        entry.current_key(enc, NOW)
    assert caught.value.code == "key_expired"


# --- The order digest that a PIN block is bound to ------------------------------------------


def test_order_digest_ignores_the_pin_block() -> None:
    order = sample(PaymentOrder)
    assert isinstance(order, PaymentOrder)
    rebuilt = parse_claims(claims_of(PaymentOrder, pin_block="x.y.z.w.v"), PaymentOrder)
    assert isinstance(rebuilt, PaymentOrder)
    assert rebuilt.order_digest() == order.order_digest() == order_digest_of(order.to_claims())
    assert order.order_digest() != order.digest()


@settings(max_examples=60, deadline=None)
@given(pin_block=st.text(max_size=64))
def test_order_digest_is_the_same_for_any_pin_block(pin_block: str) -> None:
    claims = sample(PaymentOrder).to_claims()
    assert order_digest_of(claims | {"pin_block": pin_block}) == order_digest_of(claims)
    without = {key: value for key, value in claims.items() if key != "pin_block"}
    assert order_digest_of(without) == order_digest_of(claims)


@settings(max_examples=120, deadline=None)
@given(
    key=st.sampled_from(sorted(set(sample(PaymentOrder).to_claims()) - {"pin_block"})),
    value=st.one_of(st.integers(), st.text(max_size=40)),
)
def test_order_digest_changes_when_any_other_field_changes(key: str, value: Any) -> None:
    claims = sample(PaymentOrder).to_claims()
    if claims[key] == value and type(claims[key]) is type(value):
        value = f"{value}-changed" if isinstance(value, str) else value + 1
    assert order_digest_of(claims | {key: value}) != order_digest_of(claims)


# --- Privacy by construction (DESIGN.md §4, §5) ---------------------------------------------

PAYER_DATA_WORDS: Final = ("payer_account", "account", "phone", "pin", "device", "name")


def _wire_and_python_names(cls: type[Message]) -> set[str]:
    names = set(cls.model_fields)
    names |= {field.alias for field in cls.model_fields.values() if field.alias}
    return names


@pytest.mark.parametrize(
    "cls",
    [TransferPrepare, RoutedPrepare, TransferFulfil, TransferReject, TransferStatus, PaymentNotice],
    ids=lambda cls: cls.__name__,
)
def test_network_messages_have_no_field_for_payer_or_merchant_data(cls: type[Message]) -> None:
    for name in _wire_and_python_names(cls):
        assert not any(word in name for word in PAYER_DATA_WORDS), name


@pytest.mark.parametrize(
    "cls", [PaymentRequest, Receipt, RefundTransfer, TransferDetails], ids=lambda cls: cls.__name__
)
def test_payee_facing_messages_carry_only_the_payee_display_name(cls: type[Message]) -> None:
    allowed = {"payee_name", "pn"}
    for name in _wire_and_python_names(cls) - allowed:
        assert not any(word in name for word in PAYER_DATA_WORDS), name


def test_routed_prepare_hides_the_payer_processor() -> None:
    names = _wire_and_python_names(RoutedPrepare)
    assert not any("payer" in name for name in names)
    assert "payer_processor" not in sample(RoutedPrepare).to_claims()


@pytest.mark.parametrize(
    "cls", [PaymentNotice, PaymentRequest, RefundTransfer], ids=lambda cls: cls.__name__
)
def test_payee_side_messages_say_nothing_about_the_payer(cls: type[Message]) -> None:
    assert not any("payer" in name for name in _wire_and_python_names(cls))


@pytest.mark.parametrize(
    "cls", [TransferPrepare, RoutedPrepare, TransferFulfil, PaymentNotice, Receipt]
)
@pytest.mark.parametrize(
    "leak",
    ["payer_name", "payer_account", "payer_phone", "pin", "device_key", "payee_account", "payer"],
)
def test_payer_or_merchant_data_smuggled_in_is_refused(cls: type[Message], leak: str) -> None:
    assert refused(claims_of(cls, **{leak: "x"}), cls).code == "validation_failed"


def test_transfer_details_bind_the_sealed_part_to_its_transfer() -> None:
    details = sample(TransferDetails)
    assert isinstance(details, TransferDetails)
    assert details.transfer_id == TRANSFER_ID
    assert set(details.to_claims()) == {
        "v",
        "type",
        "transfer_id",
        "request_id",
        "payee_id",
        "payer_ref",
    }


def test_notice_whose_signed_claims_lack_the_guarantee_is_refused() -> None:
    claims = claims_of(PaymentNotice, guarantee=DROP)
    assert refused(claims, PaymentNotice).code == "validation_failed"


def test_notice_cannot_be_built_in_python_without_the_guarantee() -> None:
    assert PaymentNotice.model_fields["guarantee"].is_required()
    fields = sample(PaymentNotice).model_dump()
    del fields["guarantee"]
    with pytest.raises(ValidationError):
        PaymentNotice(**fields)


# --- Refunds carry no fulfilment ------------------------------------------------------------


@pytest.mark.parametrize("state", ["reserved", "committed", "aborted"])
def test_refund_status_carrying_a_fulfilment_is_refused_in_every_state(state: str) -> None:
    claims = claims_of(
        TransferStatus,
        kind="refund",
        state=state,
        original_transfer_id=ORIGINAL,
        reason_code="timeout" if state == "aborted" else DROP,
    )
    assert claims["fulfilment"] == FULFILMENT  # the sample's, left in on purpose
    assert refused(claims, TransferStatus).code == "validation_failed"
    without = {key: value for key, value in claims.items() if key != "fulfilment"}
    assert parse_claims(without, TransferStatus).to_claims() == without


def test_refund_status_cannot_be_built_in_python_with_a_fulfilment() -> None:
    with pytest.raises(ValidationError):
        TransferStatus(
            transfer_id="rf_" + "F" * 22,
            kind="refund",
            state="committed",
            amount_minor=250,
            currency="EUR",
            decided_at=NOW,
            fulfilment=FULFILMENT,
            original_transfer_id=TRANSFER_ID,
        )


# --- Participant registration ---------------------------------------------------------------


def test_registration_sample_carries_real_certificates_of_its_participant() -> None:
    registration = sample(ParticipantRegistration)
    assert isinstance(registration, ParticipantRegistration)
    at = CERTIFICATES_ISSUED_AT
    pems = {"sign": registration.sign_certificate, "encrypt": registration.enc_certificate}
    keys = {"sign": SIGNING_KEYS[PAYER_PROCESSOR], "encrypt": SEALING_KEYS[PAYER_PROCESSOR]}
    for usage, pem in pems.items():
        cert = load_certificate_pem(pem.encode("ascii"))
        identity = validate_chain(
            cert,
            ROOT_CERTIFICATE,
            at,
            expected_party=registration.participant_id,
            expected_usage=usage,  # type: ignore[arg-type]
        )
        assert identity.party_id == PAYER_PROCESSOR
        assert public_jwk(cert.public_key()) == public_jwk(keys[usage].key)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["bank", "mno"])
def test_registration_kind_is_bank_or_mno(kind: str) -> None:
    message = parse_claims(claims_of(ParticipantRegistration, kind=kind), ParticipantRegistration)
    assert message.to_claims()["kind"] == kind


@pytest.mark.parametrize("kind", ["router", "Bank", "bank ", "wallet", ""])
def test_a_participant_cannot_register_as_the_router_or_another_kind(kind: str) -> None:
    claims = claims_of(ParticipantRegistration, kind=kind)
    assert refused(claims, ParticipantRegistration).code == "validation_failed"


@pytest.mark.parametrize(
    "endpoint", ["ftp://r.example", "https://", "r.example", "https://r .example", "javascript:x"]
)
def test_registration_endpoint_must_be_an_http_url(endpoint: str) -> None:
    claims = claims_of(ParticipantRegistration, endpoint=endpoint)
    assert refused(claims, ParticipantRegistration).code == "validation_failed"


@pytest.mark.parametrize("key", ["sign_certificate", "enc_certificate"])
@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda pem: pem.replace("\n", "\r\n"), id="crlf"),
        pytest.param(lambda pem: pem.replace("CERTIFICATE", "PRIVATE KEY"), id="private-key"),
        pytest.param(lambda pem: pem.replace("CERTIFICATE", "PUBLIC KEY"), id="public-key"),
        pytest.param(lambda pem: pem + pem, id="two-certificates"),
        pytest.param(lambda pem: " " + pem, id="leading-space"),
        pytest.param(lambda pem: pem + "\n", id="trailing-blank-line"),
        pytest.param(lambda pem: pem.split("\n", 1)[1], id="no-begin-line"),
        pytest.param(lambda pem: pem.rsplit("-----END", 1)[0], id="no-end-line"),
        pytest.param(lambda pem: PEM_BEGIN + "-" + pem[len(PEM_BEGIN) + 1 :], id="dash"),
        pytest.param(lambda pem: pem.replace("\n", "\n\x00", 1), id="nul"),
        pytest.param(lambda pem: PEM_BEGIN + "AAAA" + PEM_END, id="too-short"),
    ],
)
def test_certificate_not_in_pem_certificate_shape_is_refused(key: str, mangle: Any) -> None:
    pem = claims_of(ParticipantRegistration)[key]
    bad = mangle(pem)
    assert bad != pem
    assert refused(
        claims_of(ParticipantRegistration, **{key: bad}), ParticipantRegistration
    ).code == ("validation_failed")


def test_certificate_of_the_minimum_size_is_accepted() -> None:
    pem = pem_shaped(64)
    message = parse_claims(
        claims_of(ParticipantRegistration, sign_certificate=pem), ParticipantRegistration
    )
    assert message.to_claims()["sign_certificate"] == pem
    claims = claims_of(ParticipantRegistration, sign_certificate=pem_shaped(63))
    assert refused(claims, ParticipantRegistration).code == "validation_failed"


def test_certificate_without_its_final_newline_is_accepted() -> None:
    pem = claims_of(ParticipantRegistration)["sign_certificate"].rstrip("\n")
    message = parse_claims(
        claims_of(ParticipantRegistration, sign_certificate=pem), ParticipantRegistration
    )
    assert isinstance(message, ParticipantRegistration)
    assert message.sign_certificate == pem


# --- Device authorisation -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
def test_device_auth_method_is_get_post_or_delete(method: str) -> None:
    message = parse_claims(claims_of(DeviceAuth, method=method), DeviceAuth)
    assert message.to_claims()["method"] == method


@pytest.mark.parametrize("method", ["PUT", "PATCH", "get", "Post", "POST ", "", "CONNECT"])
def test_device_auth_refuses_any_other_method(method: str) -> None:
    assert refused(claims_of(DeviceAuth, method=method), DeviceAuth).code == "validation_failed"


@pytest.mark.parametrize(
    "path", ["/", "/v1/orders", "/v1/orders/or_AAAA-bbbb", "/v1/balance?currency=EUR&x=%20"]
)
def test_device_auth_path_is_an_absolute_request_path(path: str) -> None:
    message = parse_claims(claims_of(DeviceAuth, path=path), DeviceAuth)
    assert message.to_claims()["path"] == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "v1/orders",
        "https://bank-a.example/v1/orders",
        "/v1 orders",
        "/v1/orders\n",
        "/v1/orders#fragment",
        "/v1/örders",
        "/v1/<script>",
        "/v1/orders\\x",
        "/" + "p" * URL_MAX_CHARS,
    ],
    ids=repr,
)
def test_device_auth_refuses_anything_but_a_request_path(path: str) -> None:
    assert refused(claims_of(DeviceAuth, path=path), DeviceAuth).code == "validation_failed"


def test_device_auth_for_a_call_without_a_body_has_no_body_digest() -> None:
    claims = claims_of(DeviceAuth, method="GET", path="/v1/balance", body_digest=DROP)
    message = parse_claims(claims, DeviceAuth)
    assert isinstance(message, DeviceAuth)
    assert message.body_digest is None
    assert "body_digest" not in message.to_claims()


def test_device_auth_binds_method_path_and_body() -> None:
    base = sample(DeviceAuth).digest()
    for changes in (
        {"method": "DELETE"},
        {"path": "/v1/orders/or_1"},
        {"body_digest": FULFILMENT},
        {"body_digest": DROP},
        {"account_id": "ACC-0002"},
    ):
        assert parse_claims(claims_of(DeviceAuth, **changes), DeviceAuth).digest() != base


# --- Enrolment ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["ABCD2345", "K7QX-2M9D-WP4T", "A" * 32, "12345678", "--------"])
def test_activation_code_of_8_to_32_upper_case_letters_digits_and_dashes_is_accepted(
    code: str,
) -> None:
    message = parse_claims(claims_of(Enrolment, activation_code=code), Enrolment)
    assert message.to_claims()["activation_code"] == code


@pytest.mark.parametrize(
    "code",
    ["A" * 7, "A" * 33, "k7qx-2m9d", "K7QX 2M9D", "K7QX_2M9D", "K7QX-2M9D\n", "K7QX-2M9É", ""],
    ids=repr,
)
def test_malformed_activation_code_is_refused(code: str) -> None:
    assert refused(claims_of(Enrolment, activation_code=code), Enrolment).code == (
        "validation_failed"
    )


def test_enrolment_device_jwk_is_the_public_key_it_enrols() -> None:
    enrolment = sample(Enrolment)
    assert isinstance(enrolment, Enrolment)
    assert enrolment.device_jwk.model_dump() == public_jwk(SIGNING_KEYS[DEVICE].key)
    assert enrolment.activation_code == ACTIVATION_CODE


def _device_jwk(**changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = dict(claims_of(Enrolment)["device_jwk"])
    for key, value in changes.items():
        if value is DROP:
            jwk.pop(key)
        else:
            jwk[key] = value
    return jwk


@pytest.mark.parametrize(
    "jwk",
    [
        pytest.param(_device_jwk(d="A" * 43), id="private-member"),
        pytest.param(_device_jwk(kid="device-1"), id="extra-member"),
        pytest.param(_device_jwk(y=DROP), id="missing-y"),
        pytest.param(_device_jwk(kty="OKP"), id="kty-okp"),
        pytest.param(_device_jwk(kty="RSA"), id="kty-rsa"),
        pytest.param(_device_jwk(crv="P-384"), id="crv-p384"),
        pytest.param(_device_jwk(crv="secp256k1"), id="crv-secp256k1"),
        pytest.param(_device_jwk(y=_device_jwk()["x"]), id="off-curve"),
        pytest.param(_device_jwk(x="A" * 42), id="short-coordinate"),
        pytest.param(_device_jwk(x=7), id="coordinate-not-a-string"),
        pytest.param("eyJrdHkiOiJFQyJ9", id="a-string"),
        pytest.param([_device_jwk()], id="a-list"),
        pytest.param(1, id="a-number"),
        pytest.param({}, id="empty"),
    ],
)
def test_enrolment_refuses_a_device_key_that_is_not_a_public_p256_jwk(jwk: Any) -> None:
    assert refused(claims_of(Enrolment, device_jwk=jwk), Enrolment).code == "validation_failed"


def test_enrolment_digest_ignores_the_pin_block() -> None:
    enrolment = sample(Enrolment)
    assert isinstance(enrolment, Enrolment)
    rebuilt = parse_claims(claims_of(Enrolment, pin_block="x.y.z.w.v"), Enrolment)
    assert isinstance(rebuilt, Enrolment)
    assert rebuilt.enrolment_digest() == enrolment.enrolment_digest()
    assert enrolment.enrolment_digest() == order_digest_of(enrolment.to_claims())
    assert enrolment.enrolment_digest() != enrolment.digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"activation_code": "ABCD-EFGH-2345"},
        {"device_name": "Alice's tablet"},
        {"device_jwk": public_jwk(SIGNING_KEYS[PAYER_PROCESSOR].key)},
        {"created_at": NOW + 1},
        {"expires_at": NOW + 299},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_enrolment_digest_changes_when_any_other_field_changes(changes: dict[str, Any]) -> None:
    enrolment = sample(Enrolment)
    assert isinstance(enrolment, Enrolment)
    changed = parse_claims(claims_of(Enrolment, **changes), Enrolment)
    assert isinstance(changed, Enrolment)
    assert changed.enrolment_digest() != enrolment.enrolment_digest()
