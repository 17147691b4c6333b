"""Shared test material for the protocol tests: keys, a key ring and one valid sample of
every message type, all deterministic (keys come from fixed seeds, times from NOW).

The samples use syntactically valid stand-ins for sealed parts and nested tokens (the
message models check their shape, not their content); the envelope tests make real ones.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final

from semops.core.errors import SemopsError
from semops.core.limits import TIMESTAMP_MAX_S
from semops.crypto import derive_private_key
from semops.crypto.hashlock import condition_for, make_fulfilment
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import KeyUse, PrivateKey, derive_key, public_jwk
from semops.crypto.pki import (
    certificate_pem,
    issue_encryption_certificate,
    issue_party_certificate,
    make_root_ca,
)
from semops.protocol.messages import (
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
)

NOW: Final = 1_800_000_000
PAYER_PROCESSOR: Final = "bank-a"
PAYEE_PROCESSOR: Final = "mno-b"
ROUTER: Final = "router"
DEVICE: Final = "device-1"


def seed(label: str) -> bytes:
    return hashlib.sha384(f"semops protocol test key {label}".encode()).digest()


def entropy(label: str, size: int) -> bytes:
    return hashlib.sha512(f"semops protocol test entropy {label}".encode()).digest()[:size]


def _key(owner: str, use: KeyUse) -> PrivateKey:
    return derive_key(owner, use, seed(f"{owner}/{use.value}"))


SIGNING_KEYS: Final[dict[str, PrivateKey]] = {
    owner: _key(owner, KeyUse.SIGN) for owner in (PAYER_PROCESSOR, PAYEE_PROCESSOR, ROUTER, DEVICE)
}
SEALING_KEYS: Final[dict[str, PrivateKey]] = {
    owner: _key(owner, KeyUse.ENCRYPT) for owner in (PAYER_PROCESSOR, PAYEE_PROCESSOR)
}
KEY_NOT_BEFORE: Final = 0
KEY_NOT_AFTER: Final = TIMESTAMP_MAX_S


def public_records(keys: dict[str, PrivateKey]) -> list[Any]:
    return [key.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER) for key in keys.values()]


RING: Final = KeyRing(public_records(SIGNING_KEYS) + public_records(SEALING_KEYS))

FULFILMENT: Final = make_fulfilment(entropy("fulfilment", 32))
CONDITION: Final = condition_for(FULFILMENT)
OTHER_FULFILMENT: Final = make_fulfilment(entropy("other fulfilment", 32))
DIGEST: Final = condition_for(make_fulfilment(entropy("basket", 32)))  # any 43-char digest
# Shape-valid stand-ins: a JWS compact (three parts) and a JWE compact (five parts).
FAKE_JWS: Final = "eyJhbGciOiJFUzI1NiJ9.eyJ2IjoxfQ.c2lnbmF0dXJl"
FAKE_JWE: Final = "eyJhbGciOiJFQ0RILUVTIn0.a2V5.aXY.Y2lwaGVy.dGFn"

REQUEST_ID: Final = "rq_" + "R" * 22
ORDER_ID: Final = "or_" + "O" * 22
TRANSFER_ID: Final = "tr_" + "T" * 22
REFUND_ID: Final = "rf_" + "F" * 22
ACTIVATION_CODE: Final = "K7QX-2M9D-WP4T"

# The scheme PKI of the samples: a root from a fixed seed, and the payer processor's two
# certificates for its sample keys, issued at a fixed time. Keys are fixed; the ECDSA
# signatures inside the certificates are not (they differ on every run of the tests).
CERTIFICATES_ISSUED_AT: Final = datetime.fromtimestamp(NOW - 86400, UTC)
ROOT_KEY: Final = derive_private_key(seed("scheme root"))
ROOT_CERTIFICATE: Final = make_root_ca(ROOT_KEY, "SEMOPS Test Root", CERTIFICATES_ISSUED_AT, 1)


def party_certificate_pem(key: PrivateKey, serial: int) -> str:
    """A PEM certificate from the sample root for a sample processor key (by its use)."""
    if key.use is KeyUse.SIGN:
        cert = issue_party_certificate(
            ROOT_KEY,
            ROOT_CERTIFICATE,
            key.key.public_key(),
            key.owner,
            "processor",
            CERTIFICATES_ISSUED_AT,
            serial,
        )
    else:
        cert = issue_encryption_certificate(
            ROOT_KEY,
            ROOT_CERTIFICATE,
            key.key.public_key(),
            key.owner,
            "processor",
            CERTIFICATES_ISSUED_AT,
            serial,
        )
    return certificate_pem(cert).decode("ascii")


def directory_key(key: PrivateKey) -> DirectoryKey:
    return DirectoryKey.from_record(key.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER))


def directory_entry(participant_id: str, kind: str, keys: list[PrivateKey]) -> DirectoryEntry:
    return DirectoryEntry(
        participant_id=participant_id,
        kind=kind,  # type: ignore[arg-type]
        display_name=participant_id.upper(),
        endpoint=f"https://{participant_id}.example:8443",
        keys=tuple(directory_key(key) for key in keys),
    )


def sample_directory() -> Directory:
    return Directory(
        serial=7,
        router_id=ROUTER,
        issued_at=NOW,
        expires_at=NOW + 86400,
        entries=(
            directory_entry(ROUTER, "router", [SIGNING_KEYS[ROUTER]]),
            directory_entry(
                PAYER_PROCESSOR,
                "bank",
                [SIGNING_KEYS[PAYER_PROCESSOR], SEALING_KEYS[PAYER_PROCESSOR]],
            ),
            directory_entry(
                PAYEE_PROCESSOR,
                "mno",
                [SIGNING_KEYS[PAYEE_PROCESSOR], SEALING_KEYS[PAYEE_PROCESSOR]],
            ),
        ),
        revoked_serials=("1f", "a0c3"),
    )


def _samples() -> dict[type[Message], Message]:
    """One valid instance of every message type, with every optional field filled in."""
    messages: list[Message] = [
        PaymentRequest(
            request_id=REQUEST_ID,
            payee_processor=PAYEE_PROCESSOR,
            payee_id="corner-shop",
            payee_name="Corner Shop",
            amount_minor=1250,
            currency="EUR",
            reference="INV-2031",
            created_at=NOW,
            expires_at=NOW + 600,
            condition=CONDITION,
            basket_digest=DIGEST,
        ),
        PaymentOrder(
            order_id=ORDER_ID,
            payer_processor=PAYER_PROCESSOR,
            payer_account="ACC-0001",
            request=FAKE_JWS,
            amount_minor=1250,
            currency="EUR",
            created_at=NOW,
            expires_at=NOW + 300,
            pin_block=FAKE_JWE,
        ),
        TransferPrepare(
            transfer_id=TRANSFER_ID,
            payer_processor=PAYER_PROCESSOR,
            payee_processor=PAYEE_PROCESSOR,
            amount_minor=1250,
            currency="EUR",
            condition=CONDITION,
            created_at=NOW,
            expires_at=NOW + 30,
            sealed=FAKE_JWE,
        ),
        TransferDetails(
            transfer_id=TRANSFER_ID, request_id=REQUEST_ID, payee_id="corner-shop", payer_ref=DIGEST
        ),
        RoutedPrepare(
            transfer_id=TRANSFER_ID,
            payee_processor=PAYEE_PROCESSOR,
            amount_minor=1250,
            currency="EUR",
            condition=CONDITION,
            created_at=NOW,
            expires_at=NOW + 25,
            sealed=FAKE_JWE,
        ),
        TransferFulfil(
            transfer_id=TRANSFER_ID,
            payee_processor=PAYEE_PROCESSOR,
            fulfilment=FULFILMENT,
            fulfilled_at=NOW,
        ),
        TransferReject(
            transfer_id=TRANSFER_ID,
            payee_processor=PAYEE_PROCESSOR,
            reason_code="request_expired",
            rejected_at=NOW,
        ),
        TransferStatus(
            transfer_id=TRANSFER_ID,
            kind="payment",
            state="committed",
            amount_minor=1250,
            currency="EUR",
            decided_at=NOW,
            fulfilment=FULFILMENT,
        ),
        PaymentNotice(
            request_id=REQUEST_ID,
            transfer_id=TRANSFER_ID,
            payee_processor=PAYEE_PROCESSOR,
            payee_id="corner-shop",
            amount_minor=1250,
            currency="EUR",
            reference="INV-2031",
            paid_at=NOW,
            guarantee="irrevocable",
        ),
        Receipt(
            order_id=ORDER_ID,
            request_id=REQUEST_ID,
            transfer_id=TRANSFER_ID,
            payer_processor=PAYER_PROCESSOR,
            payee_processor=PAYEE_PROCESSOR,
            payee_id="corner-shop",
            payee_name="Corner Shop",
            amount_minor=1250,
            currency="EUR",
            reference="INV-2031",
            condition=CONDITION,
            fulfilment=FULFILMENT,
            committed_at=NOW,
        ),
        RefundTransfer(
            refund_id=REFUND_ID,
            transfer_id=TRANSFER_ID,
            payee_processor=PAYEE_PROCESSOR,
            amount_minor=250,
            currency="EUR",
            reason="Returned goods",
            created_at=NOW,
            expires_at=NOW + 3600,
        ),
        RefundResult(
            refund_id=REFUND_ID,
            transfer_id=TRANSFER_ID,
            payer_processor=PAYER_PROCESSOR,
            outcome="rejected",
            reason_code="account_blocked",
            decided_at=NOW,
        ),
        sample_directory(),
        ParticipantRegistration(
            participant_id=PAYER_PROCESSOR,
            kind="bank",
            display_name="Bank A",
            endpoint="https://bank-a.example:8443/semops",
            sign_certificate=party_certificate_pem(SIGNING_KEYS[PAYER_PROCESSOR], 2),
            enc_certificate=party_certificate_pem(SEALING_KEYS[PAYER_PROCESSOR], 3),
            created_at=NOW,
            expires_at=NOW + 60,
            endorsement=FAKE_JWS,
        ),
        RegistrationEndorsement(
            participant_id=PAYER_PROCESSOR,
            registration_digest=DIGEST,
            created_at=NOW,
            expires_at=NOW + 60,
        ),
        DeviceAuth(
            auth_id="da_" + "A" * 22,
            account_id="ACC-0001",
            method="POST",
            path="/v1/orders",
            body_digest=DIGEST,
            created_at=NOW,
            expires_at=NOW + 60,
        ),
        Enrolment(
            activation_code=ACTIVATION_CODE,
            device_jwk=PublicJwk.model_validate(public_jwk(SIGNING_KEYS[DEVICE].key)),
            device_name="Alice's phone",
            created_at=NOW,
            expires_at=NOW + 300,
            pin_block=FAKE_JWE,
        ),
    ]
    return {type(message): message for message in messages}


SAMPLES: Final[dict[type[Message], Message]] = _samples()


def sample(cls: type[Message]) -> Message:
    return SAMPLES[cls]


def claims_of(cls: type[Message], **changes: Any) -> dict[str, Any]:
    """The sample's wire claims with some keys replaced (a value of DROP removes the key)."""
    claims = sample(cls).to_claims()
    for key, value in changes.items():
        if value is DROP:
            claims.pop(key, None)
        else:
            claims[key] = value
    return claims


DROP: Final = object()


# Signed by a wallet's device key: an order and a call authorisation by the enrolled key,
# an enrolment by the new key itself (proof of possession).
DEVICE_SIGNED: Final = (PaymentOrder, DeviceAuth, Enrolment)


def signer_of(cls: type[Message]) -> str:
    """The party that signs a message of this type in the samples."""
    message = sample(cls)
    named = message.signer_party()
    if named is not None:
        return named
    return DEVICE if cls in DEVICE_SIGNED else ROUTER


def leaked_anywhere(error: SemopsError, secret: str) -> bool:
    """Whether a secret appears in anything an error shows: its text, detail, extra,
    problem details or the message of a chained cause."""
    shown = [str(error), repr(error), error.detail, repr(error.extra), repr(error.to_problem())]
    for cause in (error.__cause__, error.__context__):
        if cause is not None:
            shown.append(str(cause))
    return any(secret in text for text in shown)
