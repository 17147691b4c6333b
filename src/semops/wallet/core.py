"""The wallet's protocol logic, pure: no I/O, no clock, no randomness (time and entropy are
arguments).

Theory of operation (DESIGN.md §3, §6):

- Trust. The wallet trusts its own processor only. At enrolment it takes the scheme root
  certificate from the processor's `/v1/wallet/config` and pins it; every later config must
  carry the same root. From the root it checks the router's certificate, with the router's
  key the signed directory, and from the directory it takes every processor's keys: the
  payee processor's key that signed a request, its own processor's key that signs receipts,
  and the encryption key a PIN block is sealed to. A key carried in a message is never used.
- Requests. A token, a `semops:pay?r=<token>` link or the text of a QR code all give the
  same compact JWS; it is verified against the directory (signature, signer, expiry, and the
  payee processor active) before anything is shown to the customer.
- Orders. The order id is made from entropy handed in; the claims are fixed first, their
  digest (`order_digest_of`) is sealed with the PIN to the payer processor, and only then is
  the whole order signed by the device key. The PIN block therefore authorises exactly this
  amount, payee and account, and the shell stores the signed token before it sends it, so a
  retry re-sends the identical order and the processor executes it at most once.
- Answers. A processor answer becomes an ORDER event: a receipt, a definite refusal, or no
  answer (pending: the processor may have executed it, so it is never called failed). A
  receipt is accepted only if the payer processor signed it, it names this order, request,
  amount and payee, and its fulfilment hashes to the condition of the request the customer
  approved: proof that the payee side accepted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from semops.core.encoding import sha256_b64url
from semops.core.errors import E, SemopsError, lookup
from semops.core.ids import IdKind, make_id
from semops.core.limits import (
    CERTIFICATE_PEM_MAX_CHARS,
    CLOCK_SKEW_MAX_S,
    DEVICE_AUTH_TTL_S,
    MESSAGE_MAX_BYTES,
    ORDER_TTL_S,
    REQUEST_TOKEN_MAX_BYTES,
)
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    check_fulfilment,
    derive_key,
    make_pin_block,
    private_key_for,
    public_jwk,
)
from semops.crypto.keys import make_kid
from semops.crypto.pki import load_certificate_pem
from semops.protocol import (
    DeviceAuth,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    Enrolment,
    OrderEvent,
    PaymentOrder,
    PaymentRequest,
    PublicJwk,
    Receipt,
    open_signed,
    sign,
)
from semops.protocol.directory import verify_directory

# The owner part of every device kid: the processor checks kid == make_kid("device", jwk).
DEVICE_KEY_OWNER: Final = "device"
PAY_LINK_PREFIX: Final = "semops:pay?r="
DEVICE_AUTH_SCHEME: Final = "SEMOPS-Device"
_JWS_RE: Final = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# Accepted spellings of the deep link (some QR generators add '//').
_LINK_PREFIXES: Final = ("semops:pay?", "semops://pay?")
_INPUT_MAX_CHARS: Final = REQUEST_TOKEN_MAX_BYTES + 64
# Shape-valid stand-in for the PIN block while the claims are digested; never sent.
_PIN_BLOCK_PLACEHOLDER: Final = "x.x.x.x.x"
_CONFIG_MEMBERS: Final = frozenset(
    {
        "processor_id",
        "display_name",
        "encryption_key",
        "directory",
        "router_certificate",
        "root_certificate",
    }
)


# --- Keys and enrolment -----------------------------------------------------------------


def make_device_key(seed: bytes) -> PrivateKey:
    """The device's signing key from KEY_SEED_BYTES of fresh entropy."""
    key = derive_key(DEVICE_KEY_OWNER, KeyUse.SIGN, seed)
    assert key.kid == make_kid(DEVICE_KEY_OWNER, public_jwk(key.key))
    return key


def device_key_from(key: ec.EllipticCurvePrivateKey) -> PrivateKey:
    """A stored EC private key as the device's named signing key."""
    return private_key_for(DEVICE_KEY_OWNER, KeyUse.SIGN, key)


@dataclass(frozen=True, slots=True)
class SignedEnrolment:
    message: Enrolment
    token: str


def build_enrolment(
    *,
    device_key: PrivateKey,
    activation_code: str,
    device_name: str,
    pin: str,
    processor_enc_key: PublicKeyRecord,
    now: int,
) -> SignedEnrolment:
    """An Enrolment signed by the new device key, the new PIN sealed to its digest."""
    draft = Enrolment(
        activation_code=activation_code,
        device_jwk=PublicJwk.model_validate(public_jwk(device_key.key)),
        device_name=device_name,
        created_at=now,
        expires_at=now + ORDER_TTL_S,
        pin_block=_PIN_BLOCK_PLACEHOLDER,
    )
    digest = draft.enrolment_digest()
    pin_block = make_pin_block(pin, digest, processor_enc_key)
    enrolment = Enrolment.model_validate({**draft.to_claims(), "pin_block": pin_block})
    assert enrolment.enrolment_digest() == digest, "the PIN block must bind these claims"
    return SignedEnrolment(enrolment, sign(enrolment, device_key))


# --- The processor's configuration and the directory -----------------------------------


@dataclass(frozen=True, slots=True)
class TrustedConfig:
    """A processor configuration whose directory chains to the pinned scheme root."""

    processor_id: str
    display_name: str
    directory: Directory
    ring: KeyRing
    encryption_key: PublicKeyRecord
    root_certificate: str
    # Every time-bound check of `verify_config` passed at `checked_at` and passes until
    # `valid_until` (exclusive): the certificates' and the directory's expiry, the
    # encryption key's, and the moment another of our keys would become the one to seal
    # to. Inside that window verifying the same document again gives the same answer.
    checked_at: int
    valid_until: int

    def display_name_of(self, participant_id: str) -> str:
        try:
            return self.directory.entry(participant_id).display_name
        except SemopsError:
            return participant_id

    def still_valid(self, now: int) -> bool:
        """Whether `verify_config` of the same document at `now` would pass unchanged."""
        return self.checked_at <= now < self.valid_until


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _valid_until(
    certificates: tuple[x509.Certificate, ...],
    directory: Directory,
    entry: DirectoryEntry,
    encryption_key: PublicKeyRecord,
    now: int,
) -> int:
    """The first moment a time-bound check of `verify_config` could give another answer.

    Certificates are checked inclusively to the second, keys and the directory exclusively:
    taking the earliest bound of all, exclusive, errs on the side of checking again."""
    bounds = [_seconds(certificate.not_valid_after_utc) for certificate in certificates]
    bounds += [directory.expires_at, encryption_key.not_after]
    # A newer encryption key of ours that starts later would then be the one to seal to.
    bounds += [
        record.not_before
        for record in entry.key_records()
        if record.use is KeyUse.ENCRYPT and record.not_before > now
    ]
    return min(bounds)


def _pem(document: dict[str, Any], member: str) -> x509.Certificate:
    value = document.get(member)
    if not isinstance(value, str) or not 0 < len(value) <= CERTIFICATE_PEM_MAX_CHARS:
        raise SemopsError(E.DIRECTORY_INVALID, f"the configuration's {member} is missing")
    try:
        return load_certificate_pem(value.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise SemopsError(E.DIRECTORY_INVALID, f"the configuration's {member} is not PEM") from None


def verify_config(document: Any, now: int, *, pinned_root_pem: str | None = None) -> TrustedConfig:
    """Check a `/v1/wallet/config` document: root (pinned if given), router certificate,
    signed directory, and that its encryption key is the one the directory publishes."""
    if not isinstance(document, dict) or not set(document) >= _CONFIG_MEMBERS:
        raise SemopsError(E.DIRECTORY_INVALID, "the processor configuration is incomplete")
    root = _pem(document, "root_certificate")
    # Certificates compare by their DER bytes: any change at all is another root.
    if pinned_root_pem is not None and load_certificate_pem(pinned_root_pem.encode()) != root:
        raise SemopsError(E.CERTIFICATE_INVALID, "the processor now names another scheme root")
    router_certificate = _pem(document, "router_certificate")
    token = document["directory"]
    if not isinstance(token, str):
        raise SemopsError(E.DIRECTORY_INVALID, "the directory is missing")
    directory = verify_directory(token, router_certificate, root, now)
    processor_id = document["processor_id"]
    if not isinstance(processor_id, str):
        raise SemopsError(E.DIRECTORY_INVALID, "the processor id is missing")
    entry = directory.active_entry(processor_id)
    encryption_key = entry.current_key(KeyUse.ENCRYPT, now)
    try:
        announced = DirectoryKey.model_validate(document["encryption_key"])
    except ValueError:
        raise SemopsError(E.DIRECTORY_INVALID, "the encryption key is malformed") from None
    if announced.kid != encryption_key.kid or announced.jwk.model_dump() != encryption_key.jwk:
        raise SemopsError(E.DIRECTORY_INVALID, "the encryption key is not the directory's")
    display_name = document["display_name"]
    valid_until = _valid_until((root, router_certificate), directory, entry, encryption_key, now)
    return TrustedConfig(
        processor_id=processor_id,
        display_name=display_name if isinstance(display_name, str) else entry.display_name,
        directory=directory,
        ring=KeyRing(directory.key_records()),
        encryption_key=encryption_key,
        root_certificate=document["root_certificate"],
        checked_at=now,
        valid_until=valid_until,
    )


# --- Payment requests -------------------------------------------------------------------


def parse_payment_input(text: str) -> str:
    """The request token in a token, a `semops:pay?r=` link or a QR code's text."""
    if not isinstance(text, str):
        raise SemopsError(E.TOKEN_INVALID)
    candidate = text.strip()
    if len(candidate) > _INPUT_MAX_CHARS:
        raise SemopsError(E.TOKEN_INVALID, "the payment token is too long")
    for prefix in _LINK_PREFIXES:
        if candidate.startswith(prefix):
            candidate = _token_from_query(candidate[len(prefix) :])
            break
    else:
        if candidate.startswith("semops:"):
            raise SemopsError(E.TOKEN_INVALID, "only semops:pay?r=<token> links are understood")
    if len(candidate) > REQUEST_TOKEN_MAX_BYTES or not _JWS_RE.fullmatch(candidate):
        raise SemopsError(E.TOKEN_INVALID, "this is not a SEMOPS payment token or link")
    return candidate


def _token_from_query(query: str) -> str:
    values = [part[2:] for part in query.split("&") if part.startswith("r=")]
    if len(values) != 1:
        raise SemopsError(E.TOKEN_INVALID, "the link carries no single request token")
    return values[0]


def pay_link(token: str) -> str:
    return PAY_LINK_PREFIX + token


def verify_request(token: str, trusted: TrustedConfig, now: int) -> PaymentRequest:
    """The request, if its payee processor signed it, it is unexpired and payable here."""
    request = open_signed(token, PaymentRequest, trusted.ring, now).message
    trusted.directory.active_entry(request.payee_processor)
    return request


# --- Orders -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order: PaymentOrder
    token: str

    @property
    def order_id(self) -> str:
        return self.order.order_id


def build_order(
    *,
    request_token: str,
    request: PaymentRequest,
    processor_id: str,
    payer_account: str,
    processor_enc_key: PublicKeyRecord,
    device_key: PrivateKey,
    pin: str,
    order_entropy: bytes,
    now: int,
) -> SignedOrder:
    """Claims -> order digest -> PIN block bound to it -> signed by the device key."""
    draft = PaymentOrder(
        order_id=make_id(IdKind.ORDER, order_entropy),
        payer_processor=processor_id,
        payer_account=payer_account,
        request=request_token,
        amount_minor=request.amount_minor,
        currency=request.currency,
        created_at=now,
        expires_at=now + ORDER_TTL_S,
        pin_block=_PIN_BLOCK_PLACEHOLDER,
    )
    digest = draft.order_digest()
    pin_block = make_pin_block(pin, digest, processor_enc_key)
    order = PaymentOrder.model_validate({**draft.to_claims(), "pin_block": pin_block})
    assert order.order_digest() == digest, "the PIN block must bind exactly these claims"
    return SignedOrder(order, sign(order, device_key))


def device_auth_header(
    device_key: PrivateKey,
    *,
    account_id: str,
    method: str,
    path: str,
    now: int,
    auth_entropy: bytes,
    body: bytes | None = None,
) -> str:
    """`SEMOPS-Device <JWS>` authorising one call (method, path, body digest) once, within
    a minute; `auth_entropy` (ID_RANDOM_BYTES fresh random bytes) makes its single-use id."""
    auth = DeviceAuth.model_validate(
        {
            "auth_id": make_id(IdKind.DEVICE_AUTH, auth_entropy),
            "account_id": account_id,
            "method": method,
            "path": path,
            **({"body_digest": sha256_b64url(body)} if body else {}),
            "created_at": now,
            "expires_at": now + DEVICE_AUTH_TTL_S,
        }
    )
    return f"{DEVICE_AUTH_SCHEME} {sign(auth, device_key)}"


def check_receipt(
    token: str, trusted: TrustedConfig, now: int, *, order: PaymentOrder, request: PaymentRequest
) -> Receipt:
    """The receipt, if the payer processor signed it for exactly this order and request and
    its fulfilment hashes to the condition of the request the customer approved."""
    receipt = open_signed(
        token, Receipt, trusted.ring, now, expected_signer=order.payer_processor
    ).message
    # Before anything else: only a preimage of *this* request's condition proves payment.
    check_fulfilment(receipt.fulfilment, request.condition)
    expected = {
        "order_id": order.order_id,
        "request_id": request.request_id,
        "payee_processor": request.payee_processor,
        "payee_id": request.payee_id,
        "amount_minor": order.amount_minor,
        "currency": order.currency,
        "condition": request.condition,
    }
    for field, value in expected.items():
        if getattr(receipt, field) != value:
            raise SemopsError(E.ORDER_MISMATCH, f"the receipt's {field} is not this order's")
    if receipt.amount_minor != request.amount_minor:
        raise SemopsError(E.ORDER_MISMATCH, "the receipt's amount is not the request's")
    return receipt


# --- Answers of the processor as ORDER events -------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderAnswer:
    """What a processor answer means for the order: an event plus what came with it."""

    event: OrderEvent
    receipt: str | None = None
    error_code: str | None = None
    error_detail: str | None = None


def _problem(content_type: str, body: bytes) -> tuple[str, str] | None:
    """(code, detail) of a problem+json answer with a registered code, else None."""
    if content_type != "application/problem+json" or len(body) > MESSAGE_MAX_BYTES:
        return None
    try:
        problem = json.loads(body)
        code = str(problem["code"])
        lookup(code)
    except (ValueError, KeyError, TypeError):
        return None
    detail = problem.get("detail")
    text = detail if isinstance(detail, str) else lookup(code).title
    remaining = problem.get("attempts_remaining")
    if type(remaining) is int:
        text = f"{text} ({remaining} attempts left before the PIN locks)"
    return code, text


def answer_to_order(status: int, content_type: str, body: bytes) -> OrderAnswer:
    """The meaning of the processor's answer to `POST /v1/wallet/orders`.

    200 with a JWS: a receipt (still to be checked). A problem with a registered code and a
    4xx status other than 408/429: a definite refusal. Anything else (202, 408, 429, 5xx,
    an unreadable body) leaves the outcome unknown, so the order is pending.
    """
    if status == 200 and content_type == "application/jose":
        token = body.decode("ascii", errors="replace").strip()
        if _JWS_RE.fullmatch(token):
            return OrderAnswer(OrderEvent.RECEIPT, receipt=token)
    if 400 <= status < 500 and status not in (408, 429):
        problem = _problem(content_type, body)
        if problem is not None:
            return OrderAnswer(OrderEvent.DECLINED, error_code=problem[0], error_detail=problem[1])
    return OrderAnswer(OrderEvent.NO_ANSWER)


def status_to_order(document: Any) -> OrderAnswer:
    """The meaning of `GET /v1/wallet/orders/{id}`: receipt, refusal, or still pending."""
    if not isinstance(document, dict):
        return OrderAnswer(OrderEvent.NO_ANSWER)
    receipt = document.get("receipt")
    if isinstance(receipt, str) and _JWS_RE.fullmatch(receipt):
        return OrderAnswer(OrderEvent.RECEIPT, receipt=receipt)
    error = document.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        try:
            spec = lookup(str(code))
        except KeyError:
            spec = E.TRANSFER_REJECTED
        detail = error.get("detail")
        return OrderAnswer(
            OrderEvent.DECLINED,
            error_code=spec.code,
            error_detail=detail if isinstance(detail, str) else spec.title,
        )
    return OrderAnswer(OrderEvent.NO_ANSWER)


def order_never_executable(expires_at: int, now: int) -> bool:
    """Whether an order the processor does not know can still arrive and be executed.

    The processor refuses an order after its expiry (plus the clock skew it tolerates), so
    an unknown order past that moment can never be executed: it failed, definitely.
    """
    return now >= expires_at + CLOCK_SKEW_MAX_S


def should_resend(expires_at: int, now: int) -> bool:
    """A pending order is re-sent (same id, same content) while the processor would still
    accept it; after that the wallet only asks for its state."""
    return now < expires_at


__all__ = [
    "DEVICE_AUTH_SCHEME",
    "DEVICE_KEY_OWNER",
    "PAY_LINK_PREFIX",
    "OrderAnswer",
    "SignedEnrolment",
    "SignedOrder",
    "TrustedConfig",
    "answer_to_order",
    "build_enrolment",
    "build_order",
    "check_receipt",
    "device_auth_header",
    "device_key_from",
    "make_device_key",
    "order_never_executable",
    "parse_payment_input",
    "pay_link",
    "should_resend",
    "status_to_order",
    "verify_config",
    "verify_request",
]
