"""The messages of DESIGN.md §4: immutable, strictly validated, versioned, size-limited.

Theory of operation. Every inter-party message is a pydantic model in strict mode: an
unknown field, a wrong type (a float or a bool where an int belongs, a number where a
string belongs), a negative or oversized amount, an unknown currency or an over-long
string is refused before any business logic runs, and validation errors never echo the
refused input (it might be a PIN). Each model knows its wire type name, the field that
names the party whose key must have signed it, and how to turn itself into the claims that
get signed (`to_claims`). Amounts are integer minor units; times are integer Unix seconds.

The PaymentRequest travels inside a QR code, so its claims use short JWT-style keys (`rid`,
`amt`, `exp`, ...) to keep the token under REQUEST_TOKEN_MAX_BYTES; every other message uses
the readable field names. What each message must NOT carry (DESIGN.md §4 and §5) is
enforced by omission: there is no field for it, and unknown fields are refused.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from semops.core.encoding import digest_of
from semops.core.errors import E, ErrorSpec, SemopsError, lookup
from semops.core.ids import ID_PATTERN
from semops.core.limits import (
    ACCOUNT_ID_MAX_CHARS,
    ACTIVATION_CODE_MAX_CHARS,
    ACTIVATION_CODE_MIN_CHARS,
    AMOUNT_MAX_MINOR,
    AMOUNT_MIN_MINOR,
    AUTH_TTL_MAX_S,
    CERTIFICATE_PEM_MAX_CHARS,
    DIRECTORY_ENTRIES_MAX,
    DIRECTORY_MAX_BYTES,
    DISPLAY_NAME_MAX_CHARS,
    ID_MAX_CHARS,
    ID_MIN_CHARS,
    KEYS_PER_PARTY_MAX,
    KID_MAX_CHARS,
    MESSAGE_MAX_BYTES,
    MESSAGE_TTL_MAX_S,
    ORDER_TTL_S,
    PARTY_ID_MAX_CHARS,
    REASON_CODE_MAX_CHARS,
    REASON_TEXT_MAX_CHARS,
    REFERENCE_MAX_CHARS,
    REQUEST_TOKEN_MAX_BYTES,
    REQUEST_TTL_MAX_S,
    REQUEST_TTL_MIN_S,
    REVOKED_SERIALS_MAX,
    SEALED_MAX_BYTES,
    TIMESTAMP_MAX_S,
    TRANSFER_TTL_MAX_S,
    URL_MAX_CHARS,
)
from semops.core.money import CURRENCY_SCALES
from semops.crypto.hashlock import check_fulfilment
from semops.crypto.keys import KeyStatus, KeyUse, PublicKeyRecord, check_public_jwk
from semops.protocol.names import check_display_text

PROTOCOL_VERSION: Final = 1


def _known_currency(code: str) -> str:
    if code not in CURRENCY_SCALES:
        raise SemopsError(E.CURRENCY_UNKNOWN, "the currency is not supported")
    return code


def _registered_reason(code: str) -> str:
    try:
        lookup(code)
    except KeyError:
        raise ValueError("not a registered error code") from None
    return code


# Printable text on one line, no leading or trailing space: shown to people, logged safely.
# No C0 or C1 control character (ESC, NEL, CSI...) and no Unicode line or paragraph
# separator anywhere, including first and last (a bare \S would admit a control there).
# Bidirectional controls (Unicode's Bidi_Control: U+061C, U+200E/F, U+202A-E, U+2066-9) are
# refused too: they can make one payee name display as another ("Trojan Source" spoofing).
_BIDI: Final = r"\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
ONE_LINE_TEXT: Final = (
    rf"^[^\s\x00-\x1f\x7f-\x9f{_BIDI}]"
    rf"(?:[^\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]*[^\s\x00-\x1f\x7f-\x9f{_BIDI}])?$"
)
_JWS_COMPACT: Final = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
_JWE_COMPACT: Final = (
    r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"
)

Id = Annotated[
    str, StringConstraints(min_length=ID_MIN_CHARS, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)
]
PartyId = Annotated[
    str,
    StringConstraints(
        min_length=2, max_length=PARTY_ID_MAX_CHARS, pattern=r"^[a-z0-9][a-z0-9-]*[a-z0-9]$"
    ),
]
AccountId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=ACCOUNT_ID_MAX_CHARS, pattern=r"^[A-Za-z0-9._:+-]+$"
    ),
]
AmountMinor = Annotated[int, Field(ge=AMOUNT_MIN_MINOR, le=AMOUNT_MAX_MINOR)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_currency)]
Timestamp = Annotated[int, Field(ge=0, le=TIMESTAMP_MAX_S)]
Digest = Annotated[
    str, StringConstraints(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]{43}$")
]
# What a payer reads on the PIN prompt: one line, and text a person reads as what it is
# (semops.protocol.names, UTS #39). A token carrying anything else is refused by wallets too.
DisplayName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=DISPLAY_NAME_MAX_CHARS, pattern=ONE_LINE_TEXT),
    AfterValidator(check_display_text),
]
Reference = Annotated[
    str,
    StringConstraints(min_length=1, max_length=REFERENCE_MAX_CHARS, pattern=ONE_LINE_TEXT),
    AfterValidator(check_display_text),
]
ReasonText = Annotated[
    str, StringConstraints(min_length=1, max_length=REASON_TEXT_MAX_CHARS, pattern=ONE_LINE_TEXT)
]
ReasonCode = Annotated[
    str,
    StringConstraints(max_length=REASON_CODE_MAX_CHARS, pattern=r"^[a-z][a-z0-9_]*$"),
    AfterValidator(_registered_reason),
]
Kid = Annotated[
    str, StringConstraints(min_length=1, max_length=KID_MAX_CHARS, pattern=r"^[A-Za-z0-9._~:-]+$")
]
Url = Annotated[
    str, StringConstraints(max_length=URL_MAX_CHARS, pattern=r"^https?://[^\s/?#]+[^\s]*$")
]
RequestToken = Annotated[
    str, StringConstraints(max_length=REQUEST_TOKEN_MAX_BYTES, pattern=_JWS_COMPACT)
]
SignedToken = Annotated[str, StringConstraints(max_length=MESSAGE_MAX_BYTES, pattern=_JWS_COMPACT)]
SealedPart = Annotated[str, StringConstraints(max_length=SEALED_MAX_BYTES, pattern=_JWE_COMPACT)]


class Message(BaseModel):
    """Base of every SEMOPS message: version, type, strict and immutable."""

    model_config = ConfigDict(
        strict=True,
        frozen=True,
        extra="forbid",
        validate_by_alias=True,
        validate_by_name=True,  # Python code builds by name; parse_claims takes the wire names only
        serialize_by_alias=True,
        hide_input_in_errors=True,
        revalidate_instances="never",
    )

    MESSAGE_TYPE: ClassVar[str]
    # The field naming the party whose key must sign this message; None when the signer
    # is known from context (the router, or a wallet's enrolled device).
    SIGNER_FIELD: ClassVar[str | None] = None
    # The error a receiver answers when the message arrives after its expiry.
    EXPIRED_ERROR: ClassVar[ErrorSpec] = E.MESSAGE_EXPIRED
    # The field that dates the message: a receiver refuses it when dated in the future
    # beyond the clock skew, and (with `expires_at`) after its expiry.
    DATED_FIELD: ClassVar[str | None] = "created_at"
    # The longest validity (expires_at - created_at) a message of this type may claim;
    # None for messages without an expiry of their own.
    VALIDITY_MAX_S: ClassVar[int | None] = None
    # The largest signed token of this type, refused when signing and when opening.
    TOKEN_MAX_BYTES: ClassVar[int] = MESSAGE_MAX_BYTES

    v: Literal[1] = PROTOCOL_VERSION

    @model_validator(mode="after")
    def _validity(self) -> Self:
        window = self.dated_window()
        if self.VALIDITY_MAX_S is not None:
            assert window is not None and window[1] is not None, "a bounded message expires"
            _check_window(window[0], window[1], self.VALIDITY_MAX_S)
        return self

    def to_claims(self) -> dict[str, Any]:
        """The JSON object that is signed or sealed (None-valued optionals omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def digest(self) -> str:
        """SHA-256 of the canonical claims: the content fingerprint for idempotency."""
        return digest_of(self.to_claims())

    def dated_window(self) -> tuple[int, int | None] | None:
        """(dated at, expires at or None) for the freshness check, or None if undated."""
        if self.DATED_FIELD is None:
            return None
        dated_at = getattr(self, self.DATED_FIELD)
        assert isinstance(dated_at, int)
        expires_at = getattr(self, "expires_at", None)
        return dated_at, expires_at if isinstance(expires_at, int) else None

    def signer_party(self) -> str | None:
        if self.SIGNER_FIELD is None:
            return None
        value = getattr(self, self.SIGNER_FIELD)
        assert isinstance(value, str)
        return value

    @classmethod
    def type_key(cls) -> str:
        field = cls.model_fields["type"]
        return field.alias or "type"


def _check_window(created_at: int, expires_at: int, max_ttl_s: int) -> None:
    if expires_at <= created_at:
        raise ValueError("expires_at must be after created_at")
    if expires_at - created_at > max_ttl_s:
        raise ValueError("the validity period is too long")


class PaymentRequest(Message):
    """Signed by the payee processor; shown by the payee as QR, link or code.

    Carries nothing about the payer. `payee_id` is the payee's public identity at its
    processor (never its account), `condition` is SHA-256 of the fulfilment only the payee
    processor knows.
    """

    MESSAGE_TYPE: ClassVar[str] = "PaymentRequest"
    VALIDITY_MAX_S: ClassVar[int | None] = REQUEST_TTL_MAX_S
    SIGNER_FIELD: ClassVar[str | None] = "payee_processor"
    EXPIRED_ERROR: ClassVar[ErrorSpec] = E.REQUEST_EXPIRED
    # It must fit a QR code a phone camera reads at a normal size. The field limits alone
    # would admit a longer token (a 40-character name in a non-Latin script, a full
    # reference and a basket digest), so signing refuses an over-long one and the payee
    # shortens its name or reference.
    TOKEN_MAX_BYTES: ClassVar[int] = REQUEST_TOKEN_MAX_BYTES

    type: Literal["PaymentRequest"] = Field(default="PaymentRequest", alias="t")
    request_id: Id = Field(alias="rid")
    payee_processor: PartyId = Field(alias="pp")
    payee_id: PartyId = Field(alias="pid")
    payee_name: DisplayName = Field(alias="pn")
    amount_minor: AmountMinor = Field(alias="amt")
    currency: Currency = Field(alias="cur")
    reference: Reference | None = Field(default=None, alias="ref")
    created_at: Timestamp = Field(alias="iat")
    expires_at: Timestamp = Field(alias="exp")
    condition: Digest = Field(alias="cnd")
    basket_digest: Digest | None = Field(default=None, alias="bd")

    @model_validator(mode="after")
    def _long_enough(self) -> Self:
        if self.expires_at - self.created_at < REQUEST_TTL_MIN_S:
            raise ValueError("a request must stay payable long enough to be paid")
        return self


class PaymentOrder(Message):
    """The customer's approval, signed by the enrolled device, sent to its own processor.

    `pin_block` is a JWE to the payer processor of {PIN, order_digest()}: the digest covers
    every other field, so the PIN authorises exactly this order and nothing else.
    """

    MESSAGE_TYPE: ClassVar[str] = "PaymentOrder"
    VALIDITY_MAX_S: ClassVar[int | None] = ORDER_TTL_S

    type: Literal["PaymentOrder"] = "PaymentOrder"
    order_id: Id
    payer_processor: PartyId
    payer_account: AccountId
    request: RequestToken
    amount_minor: AmountMinor
    currency: Currency
    created_at: Timestamp
    expires_at: Timestamp
    pin_block: SealedPart

    def order_digest(self) -> str:
        return order_digest_of(self.to_claims())


def order_digest_of(order_claims: dict[str, Any]) -> str:
    """The digest a PIN block is bound to: every order claim except the PIN block itself.

    The wallet computes it before it has a PIN block, the processor after receiving one.
    """
    return digest_of({key: value for key, value in order_claims.items() if key != "pin_block"})


class TransferPrepare(Message):
    """Payer processor -> router: the routing header in clear, the rest sealed.

    No payer name, account, phone, PIN or device key: the router sees ids, processors,
    amount, currency, condition and expiry only. `sealed` is a JWE to the payee processor
    holding a `TransferDetails`.
    """

    MESSAGE_TYPE: ClassVar[str] = "TransferPrepare"
    VALIDITY_MAX_S: ClassVar[int | None] = TRANSFER_TTL_MAX_S
    SIGNER_FIELD: ClassVar[str | None] = "payer_processor"
    EXPIRED_ERROR: ClassVar[ErrorSpec] = E.TRANSFER_EXPIRED

    type: Literal["TransferPrepare"] = "TransferPrepare"
    transfer_id: Id
    payer_processor: PartyId
    payee_processor: PartyId
    amount_minor: AmountMinor
    currency: Currency
    condition: Digest
    created_at: Timestamp
    expires_at: Timestamp
    sealed: SealedPart

    @model_validator(mode="after")
    def _routed(self) -> Self:
        if self.payer_processor == self.payee_processor:
            raise ValueError("an on-us payment is not routed")
        return self


class TransferDetails(Message):
    """Sealed to the payee processor inside a prepare: what only it may read.

    `transfer_id` binds the sealed part to its prepare, so it cannot be lifted into another
    transfer. `payer_ref` is a one-time pseudonym made by the payer processor (a keyed hash
    of the transfer id): it lets a refund find its way back without naming the payer.
    """

    MESSAGE_TYPE: ClassVar[str] = "TransferDetails"
    DATED_FIELD: ClassVar[str | None] = None

    type: Literal["TransferDetails"] = "TransferDetails"
    transfer_id: Id
    request_id: Id
    payee_id: PartyId
    payer_ref: Digest


class RoutedPrepare(Message):
    """Router -> payee processor: the prepare re-signed by the router without the payer
    processor, so the payee side never learns which processor paid (DESIGN.md §5).
    Its expiry is earlier than the prepare's (TRANSFER_HOP_MARGIN_S per hop).
    """

    MESSAGE_TYPE: ClassVar[str] = "RoutedPrepare"
    VALIDITY_MAX_S: ClassVar[int | None] = TRANSFER_TTL_MAX_S
    EXPIRED_ERROR: ClassVar[ErrorSpec] = E.TRANSFER_EXPIRED

    type: Literal["RoutedPrepare"] = "RoutedPrepare"
    transfer_id: Id
    payee_processor: PartyId
    amount_minor: AmountMinor
    currency: Currency
    condition: Digest
    created_at: Timestamp
    expires_at: Timestamp
    sealed: SealedPart


class TransferFulfil(Message):
    """Payee processor -> router: the preimage of the condition; the payee side accepts."""

    MESSAGE_TYPE: ClassVar[str] = "TransferFulfil"
    DATED_FIELD: ClassVar[str | None] = "fulfilled_at"
    SIGNER_FIELD: ClassVar[str | None] = "payee_processor"

    type: Literal["TransferFulfil"] = "TransferFulfil"
    transfer_id: Id
    payee_processor: PartyId
    fulfilment: Digest
    fulfilled_at: Timestamp


class TransferReject(Message):
    """Payee processor -> router: the payee side refuses, with a registry reason code."""

    MESSAGE_TYPE: ClassVar[str] = "TransferReject"
    DATED_FIELD: ClassVar[str | None] = "rejected_at"
    SIGNER_FIELD: ClassVar[str | None] = "payee_processor"

    type: Literal["TransferReject"] = "TransferReject"
    transfer_id: Id
    payee_processor: PartyId
    reason_code: ReasonCode
    rejected_at: Timestamp


TransferState = Literal["reserved", "committed", "aborted"]


class TransferStatus(Message):
    """Router -> a processor: the router's word on a transfer (it is the commit point).

    Sent to both sides when a transfer is decided, and the answer to "what is the state of
    transfer X" during recovery. A committed payment carries the fulfilment; an aborted
    transfer carries the reason. Refunds are transfers of kind "refund" whose id is the
    refund id and which name the original transfer.
    """

    MESSAGE_TYPE: ClassVar[str] = "TransferStatus"
    DATED_FIELD: ClassVar[str | None] = "decided_at"

    type: Literal["TransferStatus"] = "TransferStatus"
    transfer_id: Id
    kind: Literal["payment", "refund"]
    state: TransferState
    amount_minor: AmountMinor
    currency: Currency
    decided_at: Timestamp
    fulfilment: Digest | None = None
    reason_code: ReasonCode | None = None
    original_transfer_id: Id | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind == "payment" and (self.state == "committed") != (self.fulfilment is not None):
            raise ValueError("a committed payment, and only it, carries the fulfilment")
        if self.kind == "refund" and self.fulfilment is not None:
            raise ValueError("a refund has no hash lock, so no fulfilment")
        if (self.state == "aborted") != (self.reason_code is not None):
            raise ValueError("an aborted transfer, and only it, carries a reason code")
        if (self.kind == "refund") != (self.original_transfer_id is not None):
            raise ValueError("a refund, and only it, names the original transfer")
        return self


class PaymentNotice(Message):
    """Payee processor -> merchant: the signed guarantee that the request is paid.

    Nothing about the payer or the payer processor. The processor's signature over
    `guarantee: "irrevocable"` is its commitment to credit the merchant.
    """

    MESSAGE_TYPE: ClassVar[str] = "PaymentNotice"
    DATED_FIELD: ClassVar[str | None] = "paid_at"
    SIGNER_FIELD: ClassVar[str | None] = "payee_processor"

    type: Literal["PaymentNotice"] = "PaymentNotice"
    request_id: Id
    transfer_id: Id
    payee_processor: PartyId
    payee_id: PartyId
    amount_minor: AmountMinor
    currency: Currency
    reference: Reference | None = None
    paid_at: Timestamp
    # Required on the wire: a notice whose signed claims do not state the guarantee is not one.
    guarantee: Literal["irrevocable"]


class Receipt(Message):
    """Payer processor -> wallet: proof of payment. The fulfilment hashes to the condition,
    which the payee processor signed in the request: the payee side accepted.
    """

    MESSAGE_TYPE: ClassVar[str] = "Receipt"
    DATED_FIELD: ClassVar[str | None] = "committed_at"
    SIGNER_FIELD: ClassVar[str | None] = "payer_processor"

    type: Literal["Receipt"] = "Receipt"
    order_id: Id
    request_id: Id
    transfer_id: Id
    payer_processor: PartyId
    payee_processor: PartyId
    payee_id: PartyId
    payee_name: DisplayName
    amount_minor: AmountMinor
    currency: Currency
    reference: Reference | None = None
    condition: Digest
    fulfilment: Digest
    committed_at: Timestamp

    @model_validator(mode="after")
    def _proof(self) -> Self:
        check_fulfilment(self.fulfilment, self.condition)
        return self


class RefundTransfer(Message):
    """Payee processor -> router -> payer processor: money back for an earlier transfer.

    Names only the original transfer: the router knows which processor paid it, and that
    processor finds the payer from its own records. No payer identity travels.
    """

    MESSAGE_TYPE: ClassVar[str] = "RefundTransfer"
    VALIDITY_MAX_S: ClassVar[int | None] = MESSAGE_TTL_MAX_S
    SIGNER_FIELD: ClassVar[str | None] = "payee_processor"

    type: Literal["RefundTransfer"] = "RefundTransfer"
    refund_id: Id
    transfer_id: Id
    payee_processor: PartyId
    amount_minor: AmountMinor
    currency: Currency
    reason: ReasonText | None = None
    created_at: Timestamp
    expires_at: Timestamp


class RefundResult(Message):
    """Payer processor -> router: the refund was credited to the original payer, or not."""

    MESSAGE_TYPE: ClassVar[str] = "RefundResult"
    DATED_FIELD: ClassVar[str | None] = "decided_at"
    SIGNER_FIELD: ClassVar[str | None] = "payer_processor"

    type: Literal["RefundResult"] = "RefundResult"
    refund_id: Id
    transfer_id: Id
    payer_processor: PartyId
    outcome: Literal["accepted", "rejected"]
    reason_code: ReasonCode | None = None
    decided_at: Timestamp

    @model_validator(mode="after")
    def _reason(self) -> Self:
        if (self.outcome == "rejected") != (self.reason_code is not None):
            raise ValueError("a rejected refund, and only it, carries a reason code")
        return self


class PublicJwk(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: Digest
    y: Digest

    @model_validator(mode="after")
    def _on_curve(self) -> Self:
        # A point off the curve would otherwise pass here and fail later, outside the
        # recipes' error handling, when a processor seals to it.
        check_public_jwk(self.model_dump())
        return self


class DirectoryKey(BaseModel):
    """One public key of a participant, as published in the directory."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    kid: Kid
    use: Literal["sig", "enc"]
    jwk: PublicJwk
    not_before: Timestamp
    not_after: Timestamp
    status: Literal["active", "revoked"] = "active"

    def to_record(self, owner: str) -> PublicKeyRecord:
        return PublicKeyRecord(
            kid=self.kid,
            owner=owner,
            use=KeyUse(self.use),
            jwk=self.jwk.model_dump(),
            not_before=self.not_before,
            not_after=self.not_after,
            status=KeyStatus(self.status),
        )

    @classmethod
    def from_record(cls, record: PublicKeyRecord) -> DirectoryKey:
        return cls(
            kid=record.kid,
            use=record.use.value,
            jwk=PublicJwk.model_validate(record.jwk),
            not_before=record.not_before,
            not_after=record.not_after,
            status=record.status.value,
        )


class DirectoryEntry(BaseModel):
    """A participant in the scheme: the router, or a processor (bank or MNO)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    participant_id: PartyId
    kind: Literal["bank", "mno", "router"]
    display_name: DisplayName
    endpoint: Url
    status: Literal["active", "suspended"] = "active"
    keys: Annotated[
        tuple[DirectoryKey, ...], Field(min_length=1, max_length=KEYS_PER_PARTY_MAX, strict=False)
    ]

    def key_records(self) -> list[PublicKeyRecord]:
        return [key.to_record(self.participant_id) for key in self.keys]

    def current_key(self, use: KeyUse, now: int) -> PublicKeyRecord:
        """The newest active key for a use at time now (the one to seal to)."""
        usable = [
            record
            for record in self.key_records()
            if record.use is use
            and record.status is KeyStatus.ACTIVE
            and record.not_before <= now < record.not_after
        ]
        if not usable:
            raise SemopsError(E.KEY_EXPIRED, f"{self.participant_id} has no usable {use.value} key")
        return max(usable, key=lambda record: record.not_before)


# A certificate serial in lower-case hex without leading zeros (RFC 5280: at most 20 octets).
CertificateSerial = Annotated[
    str, StringConstraints(min_length=1, max_length=40, pattern=r"^[1-9a-f][0-9a-f]*$")
]


class Directory(Message):
    """The router's signed list of participants, their endpoints, keys and status.

    A revoked key is listed with status "revoked" (a key that is no longer listed at all
    is unknown, which every verifier refuses too). `revoked_serials` names the revoked
    certificates that have not expired yet, so that a scheme port can refuse a revoked
    certificate at TLS; it is left out when there is none (one wire form per directory).
    """

    MESSAGE_TYPE: ClassVar[str] = "Directory"
    DATED_FIELD: ClassVar[str | None] = "issued_at"
    TOKEN_MAX_BYTES: ClassVar[int] = DIRECTORY_MAX_BYTES

    type: Literal["Directory"] = "Directory"
    serial: Annotated[int, Field(ge=1, le=2**53)]
    router_id: PartyId
    issued_at: Timestamp
    expires_at: Timestamp
    entries: Annotated[
        tuple[DirectoryEntry, ...],
        Field(min_length=1, max_length=DIRECTORY_ENTRIES_MAX, strict=False),
    ]
    revoked_serials: (
        Annotated[
            tuple[CertificateSerial, ...],
            Field(min_length=1, max_length=REVOKED_SERIALS_MAX, strict=False),
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        _check_window(self.issued_at, self.expires_at, MESSAGE_TTL_MAX_S * 30)
        ids = [entry.participant_id for entry in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("a participant is listed twice")
        kids = [key.kid for entry in self.entries for key in entry.keys]
        if len(set(kids)) != len(kids):
            raise ValueError("a key id is listed twice")
        if self.router_id not in ids:
            raise ValueError("the router must list itself")
        serials = self.revoked_serials or ()
        if list(serials) != sorted(set(serials), key=lambda text: (len(text), text)):
            raise ValueError("revoked serials are listed once each, in ascending order")
        return self

    def revoked_serial_numbers(self) -> frozenset[int]:
        return frozenset(int(text, 16) for text in self.revoked_serials or ())

    def entry(self, participant_id: str) -> DirectoryEntry:
        for entry in self.entries:
            if entry.participant_id == participant_id:
                return entry
        raise SemopsError(E.PROCESSOR_UNKNOWN, "no such participant in the directory")

    def active_entry(self, participant_id: str) -> DirectoryEntry:
        entry = self.entry(participant_id)
        if entry.status != "active":
            raise SemopsError(E.PROCESSOR_SUSPENDED)
        return entry

    def key_records(self) -> list[PublicKeyRecord]:
        return [record for entry in self.entries for record in entry.key_records()]


PemCertificate = Annotated[
    str,
    StringConstraints(
        min_length=64,
        max_length=CERTIFICATE_PEM_MAX_CHARS,
        pattern=r"^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----\n?$",
    ),
]
ActivationCode = Annotated[
    str,
    StringConstraints(
        min_length=ACTIVATION_CODE_MIN_CHARS,
        max_length=ACTIVATION_CODE_MAX_CHARS,
        pattern=r"^[A-Z0-9-]+$",
    ),
]
RequestPath = Annotated[
    str,
    # An absolute path of this service: no "//" (another host) and no "." or ".." segments.
    StringConstraints(
        min_length=1,
        max_length=URL_MAX_CHARS,
        pattern=r"^(?:/[A-Za-z0-9_~%?=&-][A-Za-z0-9_.~%?=&-]*)+/?$|^/$",
    ),
]


class RegistrationEndorsement(Message):
    """The participant's *currently registered* signing key vouching for a registration
    that replaces it (a key rotation): it signs the digest of every other claim of that
    registration (`registration_digest_of`), which the new key signs in turn. So a rotation
    proves both: possession of the new key, and the consent of the key it replaces.
    """

    MESSAGE_TYPE: ClassVar[str] = "RegistrationEndorsement"
    VALIDITY_MAX_S: ClassVar[int | None] = AUTH_TTL_MAX_S
    SIGNER_FIELD: ClassVar[str | None] = "participant_id"

    type: Literal["RegistrationEndorsement"] = "RegistrationEndorsement"
    participant_id: PartyId
    registration_digest: Digest
    created_at: Timestamp
    expires_at: Timestamp


class ParticipantRegistration(Message):
    """A processor -> router: join the scheme or update its entry.

    Signed with the key of `sign_certificate`, which must chain to the scheme root and name
    `participant_id`; the certificates are the keys the directory will publish. A change to
    a registered participant takes effect only when its currently registered signing key
    signed it: directly (the same key), or through `endorsement`, a RegistrationEndorsement
    (compact JWS) by that key over `registration_digest_of` these claims (a rotation).
    Anything else waits for the scheme operator (router/participants.py).
    """

    MESSAGE_TYPE: ClassVar[str] = "ParticipantRegistration"
    VALIDITY_MAX_S: ClassVar[int | None] = AUTH_TTL_MAX_S
    SIGNER_FIELD: ClassVar[str | None] = "participant_id"

    type: Literal["ParticipantRegistration"] = "ParticipantRegistration"
    participant_id: PartyId
    kind: Literal["bank", "mno"]
    display_name: DisplayName
    endpoint: Url
    sign_certificate: PemCertificate
    enc_certificate: PemCertificate
    created_at: Timestamp
    expires_at: Timestamp
    endorsement: SignedToken | None = None

    def registration_digest(self) -> str:
        return registration_digest_of(self.to_claims())


def registration_digest_of(registration_claims: dict[str, Any]) -> str:
    """What an endorsement is bound to: every registration claim except the endorsement."""
    return digest_of({k: v for k, v in registration_claims.items() if k != "endorsement"})


class DeviceAuth(Message):
    """Wallet -> its processor: a device-signed, short-lived authorisation of one call.

    Binds the account, the HTTP method and path and (for a body) its digest, and lives a
    minute or two, so a captured header cannot be used for another call or for long. Its
    `auth_id` (made by the wallet) makes it single use: the processor keeps the id
    until the authorisation expires, so a captured copy cannot be used again either.
    """

    MESSAGE_TYPE: ClassVar[str] = "DeviceAuth"
    VALIDITY_MAX_S: ClassVar[int | None] = AUTH_TTL_MAX_S

    type: Literal["DeviceAuth"] = "DeviceAuth"
    auth_id: Id
    account_id: AccountId
    method: Literal["GET", "POST", "DELETE"]
    path: RequestPath
    body_digest: Digest | None = None
    created_at: Timestamp
    expires_at: Timestamp


class Enrolment(Message):
    """Wallet -> processor: register a device key with an activation code and set the PIN.

    Signed by the new device key itself (proof of possession). `pin_block` seals the new
    PIN to the processor, bound to the digest of every other claim, like an order's.
    """

    MESSAGE_TYPE: ClassVar[str] = "Enrolment"
    VALIDITY_MAX_S: ClassVar[int | None] = ORDER_TTL_S

    type: Literal["Enrolment"] = "Enrolment"
    activation_code: ActivationCode
    device_jwk: PublicJwk
    device_name: DisplayName
    created_at: Timestamp
    expires_at: Timestamp
    pin_block: SealedPart

    def enrolment_digest(self) -> str:
        return order_digest_of(self.to_claims())


SIGNED_MESSAGES: Final[tuple[type[Message], ...]] = (
    PaymentRequest,
    PaymentOrder,
    TransferPrepare,
    RoutedPrepare,
    TransferFulfil,
    TransferReject,
    TransferStatus,
    PaymentNotice,
    Receipt,
    RefundTransfer,
    RefundResult,
    Directory,
    ParticipantRegistration,
    RegistrationEndorsement,
    DeviceAuth,
    Enrolment,
)
SEALED_MESSAGES: Final[tuple[type[Message], ...]] = (TransferDetails,)
MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    cls.MESSAGE_TYPE: cls for cls in SIGNED_MESSAGES + SEALED_MESSAGES
}

M = TypeVar("M", bound=Message)


def _safe_errors(error: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors without the input values (they may be secrets)."""
    return [
        {
            "field": ".".join(str(part) for part in item["loc"]) or "(message)",
            "problem": item["type"],
            "message": item["msg"],
        }
        for item in error.errors(include_input=False, include_url=False, include_context=False)
    ][:20]


def parse_claims(claims: Any, expected: type[M]) -> M:
    """Claims (a JSON object) -> the expected message, or the first reason it is refused."""
    if not isinstance(claims, dict):
        raise SemopsError(E.MALFORMED, "a message is a JSON object")
    version = claims.get("v")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise SemopsError(E.VERSION_UNSUPPORTED, f"this node speaks version {PROTOCOL_VERSION}")
    if claims.get(expected.type_key()) != expected.MESSAGE_TYPE:
        raise SemopsError(E.MESSAGE_TYPE_UNEXPECTED, f"expected a {expected.MESSAGE_TYPE}")
    # An absent optional is left out, never null: one message has one wire form, so the
    # claims a party re-encodes (to_claims omits None) are the claims that were signed.
    nulls = [str(key) for key, value in claims.items() if value is None]
    if nulls:
        errors = [
            {"field": key, "problem": "null", "message": "null is not a value"} for key in nulls
        ]
        raise SemopsError(
            E.VALIDATION_FAILED, f"{nulls[0]}: null is not a value", errors=errors[:20]
        )
    try:
        return expected.model_validate(claims, by_alias=True, by_name=False)
    except ValidationError as error:
        errors = _safe_errors(error)
        detail = "; ".join(f"{item['field']}: {item['message']}" for item in errors[:3])
        raise SemopsError(E.VALIDATION_FAILED, detail, errors=errors) from None
