"""The one error registry of SEMOPS.

Every error an API returns, and every operating error the core raises, is one entry here:
a stable machine code (never renamed, never reused), the HTTP status a service answers
with, and a short human title. Responses are RFC 9457 problem+json built from the entry.

Codes are grouped by hundreds so a newcomer can tell where an error comes from:

    1xxx  input: malformed, too large, wrong type, unknown field
    2xxx  message security: signatures, keys, sealing, replay, freshness
    3xxx  payment semantics: requests, orders, PIN, funds, limits, transfers, refunds
    4xxx  participants and scheme: directory, processors, certificates
    5xxx  internal: a broken invariant or an unavailable dependency

Error *details* never contain secrets (PINs, PIN blocks, keys, credentials, tokens); the
`detail` text is written for a person and must be safe to log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

PROBLEM_TYPE_PREFIX: Final = "urn:semops:error:"


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """One registry entry: a stable code, an HTTP status and a title."""

    number: int
    code: str
    http_status: int
    title: str

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPE_PREFIX + self.code


_REGISTRY: dict[str, ErrorSpec] = {}
_NUMBERS: set[int] = set()


def _register(number: int, code: str, http_status: int, title: str) -> ErrorSpec:
    assert code not in _REGISTRY, f"duplicate error code {code}"
    assert number not in _NUMBERS, f"duplicate error number {number}"
    spec = ErrorSpec(number, code, http_status, title)
    _REGISTRY[code] = spec
    _NUMBERS.add(number)
    return spec


class E:
    """Namespace of every registered error, so call sites read `E.SIGNATURE_INVALID`."""

    # 1xxx input
    MALFORMED = _register(1001, "malformed", 400, "The input is not well-formed")
    VALIDATION_FAILED = _register(1002, "validation_failed", 422, "A field is missing or invalid")
    TOO_LARGE = _register(1003, "too_large", 413, "The input exceeds a size limit")
    AMOUNT_INVALID = _register(1010, "amount_invalid", 422, "The amount is not valid")
    CURRENCY_UNKNOWN = _register(1011, "currency_unknown", 422, "The currency is not supported")
    CURRENCY_MISMATCH = _register(1012, "currency_mismatch", 422, "The currencies do not match")
    AMOUNT_OUT_OF_RANGE = _register(1013, "amount_out_of_range", 422, "The amount is out of range")
    TOKEN_INVALID = _register(1020, "token_invalid", 400, "The payment token cannot be read")
    NOT_FOUND = _register(1030, "not_found", 404, "No such resource")
    UNAUTHENTICATED = _register(1040, "unauthenticated", 401, "Credentials are missing or wrong")
    FORBIDDEN = _register(1041, "forbidden", 403, "Not allowed for this caller")
    URL_NOT_ALLOWED = _register(
        1050, "url_not_allowed", 422, "The URL is not one a service may be told to call"
    )
    NAME_NOT_ALLOWED = _register(
        1051, "name_not_allowed", 422, "The name or reference cannot be shown safely to a payer"
    )
    NAME_CONFUSABLE = _register(
        1052, "name_confusable", 409, "The name can be taken for another payee's name"
    )
    IDEMPOTENCY_KEY_REQUIRED = _register(
        1070, "idempotency_key_required", 400, "This call needs an Idempotency-Key header"
    )
    LOGIN_THROTTLED = _register(
        1071, "login_throttled", 429, "Too many failed sign-ins from this address; wait"
    )

    # 2xxx message security
    SIGNATURE_INVALID = _register(2001, "signature_invalid", 401, "The signature is not valid")
    KEY_UNKNOWN = _register(2002, "key_unknown", 401, "The signing key is not known")
    KEY_REVOKED = _register(2003, "key_revoked", 401, "The key has been revoked")
    KEY_EXPIRED = _register(2004, "key_expired", 401, "The key is not valid at this time")
    KEY_WRONG_USE = _register(2005, "key_wrong_use", 401, "The key is not for this use")
    SIGNER_MISMATCH = _register(2006, "signer_mismatch", 403, "Signed by the wrong party")
    SEAL_INVALID = _register(2010, "seal_invalid", 400, "The sealed part cannot be opened")
    MESSAGE_EXPIRED = _register(2020, "message_expired", 410, "The message has expired")
    MESSAGE_NOT_YET_VALID = _register(
        2021, "message_not_yet_valid", 400, "The message is dated in the future"
    )
    VERSION_UNSUPPORTED = _register(
        2022, "version_unsupported", 400, "The message version is not supported"
    )
    MESSAGE_TYPE_UNEXPECTED = _register(
        2023, "message_type_unexpected", 400, "The message is not of the expected type"
    )
    IDEMPOTENCY_CONFLICT = _register(
        2030, "idempotency_conflict", 409, "This id was already used with different content"
    )
    REPLAY = _register(2031, "replay", 409, "This message has already been processed")

    # 3xxx payment semantics
    REQUEST_EXPIRED = _register(3001, "request_expired", 410, "The payment request has expired")
    REQUEST_ALREADY_PAID = _register(
        3002, "request_already_paid", 409, "The payment request has already been paid"
    )
    REQUEST_NOT_PAYABLE = _register(
        3003, "request_not_payable", 409, "The payment request cannot be paid now"
    )
    ORDER_MISMATCH = _register(
        3004, "order_mismatch", 422, "The order does not match the payment request"
    )
    PIN_BLOCK_MISMATCH = _register(
        3010, "pin_block_mismatch", 403, "The PIN block does not belong to this order"
    )
    PIN_INVALID = _register(3011, "pin_invalid", 403, "The PIN is wrong")
    PIN_LOCKED = _register(3012, "pin_locked", 423, "The credential is locked after wrong PINs")
    PIN_FORMAT = _register(3013, "pin_format", 422, "A PIN is 4 to 6 digits")
    DEVICE_UNKNOWN = _register(3020, "device_unknown", 403, "The device is not enrolled")
    DEVICE_REVOKED = _register(3021, "device_revoked", 403, "The device has been revoked")
    ACTIVATION_INVALID = _register(
        3022, "activation_invalid", 403, "The activation code is wrong or used"
    )
    INSUFFICIENT_FUNDS = _register(3030, "insufficient_funds", 402, "Insufficient funds")
    LIMIT_EXCEEDED = _register(3031, "limit_exceeded", 403, "A payment limit would be exceeded")
    NET_DEBIT_CAP_EXCEEDED = _register(
        3032, "net_debit_cap_exceeded", 403, "The processor's net-debit cap would be exceeded"
    )
    ACCOUNT_UNKNOWN = _register(3033, "account_unknown", 404, "The account does not exist")
    ACCOUNT_BLOCKED = _register(3034, "account_blocked", 403, "The account is blocked")
    FULFILMENT_INVALID = _register(
        3040, "fulfilment_invalid", 422, "The fulfilment does not match the condition"
    )
    TRANSFER_EXPIRED = _register(3041, "transfer_expired", 410, "The transfer has expired")
    TRANSFER_REJECTED = _register(3042, "transfer_rejected", 409, "The payee side rejected it")
    TRANSFER_STATE_CONFLICT = _register(
        3043, "transfer_state_conflict", 409, "The transfer is not in a state that allows this"
    )
    REFUND_EXCEEDS_PAID = _register(
        3050, "refund_exceeds_paid", 422, "Refunds would exceed the paid amount"
    )
    REFUND_NOT_ALLOWED = _register(
        3051, "refund_not_allowed", 409, "This payment cannot be refunded"
    )
    STATE_TRANSITION_INVALID = _register(
        3060, "state_transition_invalid", 409, "That step is not allowed in this state"
    )
    REFUND_NOT_COMPLETED = _register(
        3070, "refund_not_completed", 409, "The refund could not be completed; nothing moved"
    )

    # 4xxx participants and scheme
    PROCESSOR_UNKNOWN = _register(4001, "processor_unknown", 404, "The processor is not known")
    PROCESSOR_SUSPENDED = _register(4002, "processor_suspended", 403, "The processor is suspended")
    CERTIFICATE_INVALID = _register(
        4010, "certificate_invalid", 401, "The certificate does not chain to the scheme root"
    )
    TLS_PEER_MISMATCH = _register(
        4011, "tls_peer_mismatch", 403, "The TLS client is not the party the message names"
    )
    TLS_PEER_NOT_ALLOWED = _register(
        4012, "tls_peer_not_allowed", 403, "This certificate may not connect to this port"
    )
    CERTIFICATE_REVOKED = _register(4013, "certificate_revoked", 401, "The certificate is revoked")
    REGISTRATIONS_PENDING_FULL = _register(
        4014, "registrations_pending_full", 429, "Too many registrations await the operator"
    )
    REGISTRATION_DECIDED = _register(
        4015, "registration_decided", 409, "The registration was already approved or rejected"
    )
    REVOCATIONS_FULL = _register(4016, "revocations_full", 409, "The revocation list is full")
    DIRECTORY_INVALID = _register(4020, "directory_invalid", 502, "The directory is not valid")

    # 5xxx internal and dependencies
    INTERNAL = _register(5001, "internal", 500, "Internal error")
    UNAVAILABLE = _register(5002, "unavailable", 503, "A party is unavailable; try again")
    TIMEOUT = _register(5003, "timeout", 504, "A party did not answer in time")


def lookup(code: str) -> ErrorSpec:
    """The entry for a code; KeyError for a code that is not registered."""
    return _REGISTRY[code]


def all_errors() -> tuple[ErrorSpec, ...]:
    return tuple(sorted(_REGISTRY.values(), key=lambda spec: spec.number))


class SemopsError(Exception):
    """An operating error: the caller handles it, a service answers it as problem+json.

    `detail` is for people and must never carry a secret; `extra` carries machine fields
    (for example the field that failed) and must obey the same rule.
    """

    def __init__(self, spec: ErrorSpec, detail: str | None = None, **extra: Any) -> None:
        self.spec = spec
        self.detail = detail or spec.title
        self.extra = extra
        super().__init__(f"{spec.code}: {self.detail}")

    @property
    def code(self) -> str:
        return self.spec.code

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details, plus the stable `code` member."""
        problem: dict[str, Any] = {
            "type": self.spec.problem_type,
            "title": self.spec.title,
            "status": self.spec.http_status,
            "code": self.spec.code,
            "detail": self.detail,
        }
        if instance is not None:
            problem["instance"] = instance
        for key, value in self.extra.items():
            problem.setdefault(key, value)
        return problem
