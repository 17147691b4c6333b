"""Write tests/vectors/vectors.json: golden SEMOPS messages, valid and invalid.

Run from the repository root with either of

    .venv/bin/python -m tests.vectors.generate
    .venv/bin/python tests/vectors/generate.py [--new-certificates]

ECDSA signatures and JWE encryption are randomized, so the file is generated once and
checked in; `test_vectors.py` verifies the stored tokens on every run and only compares the
*structure* of a fresh build (names, types, kids, expected errors, claims with tokens masked)
against the file. Regenerate after adding a message type or a vector, and review the diff.

The test certificates of the registration vectors carry a random ECDSA signature too, and
their PEM text is part of the signed claims, so they are made once as well and kept in
`certificates.json`: made when that file is missing or with `--new-certificates`, read back
on every other run; a certificate added to CERTIFIED_KEYS is made and added on its own, so
the ones already stored (and the vectors over them) stay as they are.

Everything here is TEST material: every key is derived from a 48-byte seed that is the
SHA-384 of a public label, so its private half is public knowledge. Never use them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json, sha256_b64url
from semops.core.ids import IdKind, make_id
from semops.crypto import (
    KeyStatus,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    condition_for,
    derive_key,
    derive_private_key,
    make_fulfilment,
    make_pin_block,
    payer_reference,
    pin_verification_value,
    public_jwk,
    read_unverified_claims,
    sign_message,
)
from semops.crypto.jose import P256_ORDER, low_s
from semops.crypto.pki import (
    certificate_pem,
    issue_encryption_certificate,
    issue_party_certificate,
    load_certificate_pem,
    make_root_ca,
)
from semops.protocol import (
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
    parse_claims,
    seal,
    sign,
    sign_registration,
)

FORMAT: Final = 1
OUTPUT: Final = Path(__file__).with_name("vectors.json")
CERTIFICATES: Final = Path(__file__).with_name("certificates.json")
# 2026-09-21T14:13:20Z: the verification time of every vector unless it says otherwise.
NOW: Final = 1_790_000_000
DAY_S: Final = 86_400
SEED_PREFIX: Final = "SEMOPS TEST KEY - NOT FOR PRODUCTION - "
TEST_PIN: Final = "1234"
PAYER_REFERENCE_KEY: Final = hashlib.sha256(b"SEMOPS TEST payer-reference key").digest()
PIN_KEY: Final = hashlib.sha256(b"SEMOPS TEST PIN verification key").digest()
B64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

_SIG: Final = KeyUse.SIGN
_ENC: Final = KeyUse.ENCRYPT
_ACTIVE: Final = KeyStatus.ACTIVE
_FROM: Final = NOW - 30 * DAY_S
_UNTIL: Final = NOW + 365 * DAY_S
# label -> (owner, use, not_before, not_after, status, in the verifier's key ring)
KEY_SPECS: Final[dict[str, tuple[str, KeyUse, int, int, KeyStatus, bool]]] = {
    "router-sig": ("router", _SIG, _FROM, _UNTIL, _ACTIVE, True),
    "bank-a-sig": ("bank-a", _SIG, _FROM, _UNTIL, _ACTIVE, True),
    "bank-a-enc": ("bank-a", _ENC, _FROM, _UNTIL, _ACTIVE, True),
    "bank-a-sig-revoked": ("bank-a", _SIG, _FROM, _UNTIL, KeyStatus.REVOKED, True),
    # Retired yesterday: every verification at NOW is after its not_after.
    "bank-a-sig-retired": ("bank-a", _SIG, NOW - 400 * DAY_S, NOW - DAY_S, _ACTIVE, True),
    # bank-a's next signing key (a rotation): not published yet, certified by the root.
    "bank-a-sig-next": ("bank-a", _SIG, _FROM, _UNTIL, _ACTIVE, False),
    "bank-b-sig": ("bank-b", _SIG, _FROM, _UNTIL, _ACTIVE, True),
    "bank-b-enc": ("bank-b", _ENC, _FROM, _UNTIL, _ACTIVE, True),
    # A wallet's device key: in the payer processor's device registry, not the directory.
    "wallet-alice-device": ("wallet-alice", _SIG, NOW - 10 * DAY_S, _UNTIL, _ACTIVE, True),
    # An attacker's key: well-formed, never published, so the verifier does not know it.
    "bank-x-sig": ("bank-x", _SIG, _FROM, _UNTIL, _ACTIVE, False),
}


# The scheme root of the test PKI (a CA key: not a JOSE key, so not in KEY_SPECS) and the
# certificates it issues for keys of KEY_SPECS: label -> (serial, party, usage).
ROOT_LABEL: Final = "scheme-root-ca"
ROOT_NAME: Final = "SEMOPS Test Root - NOT FOR PRODUCTION"
CERTIFICATES_ISSUED_AT: Final = _FROM
CERTIFIED_KEYS: Final[dict[str, tuple[int, str, str]]] = {
    "bank-a-sig": (2, "bank-a", "sign"),
    "bank-a-enc": (3, "bank-a", "encrypt"),
    "bank-b-sig": (4, "bank-b", "sign"),
    "bank-a-sig-next": (5, "bank-a", "sign"),
}


def seed_of(label: str) -> bytes:
    """The 48-byte seed of a test key: SHA-384 of a public label (so: not a secret)."""
    return hashlib.sha384((SEED_PREFIX + label).encode("utf-8")).digest()


def key_of(label: str) -> PrivateKey:
    owner, use, *_ = KEY_SPECS[label]
    return derive_key(owner, use, seed_of(label))


def record_of(label: str) -> PublicKeyRecord:
    _, _, not_before, not_after, status, _ = KEY_SPECS[label]
    return key_of(label).public_record(not_before, not_after, status)


def fixed_id(kind: IdKind, label: str) -> str:
    return make_id(kind, hashlib.sha256(label.encode("utf-8")).digest()[:16])


def private_jwk(key: PrivateKey) -> dict[str, str]:
    scalar = key.key.private_numbers().private_value
    return {**public_jwk(key.key), "d": b64url_encode(scalar.to_bytes(32, "big"))}


# --- The test PKI: made once, then read back (certificates carry a random signature) ------


def make_certificates(kept: dict[str, str] | None = None) -> dict[str, str]:
    """A root and the certificates of CERTIFIED_KEYS, as PEM text, issued at a fixed time;
    those in `kept` (root included) are kept as they are."""
    at = datetime.fromtimestamp(CERTIFICATES_ISSUED_AT, UTC)
    root_key = derive_private_key(seed_of(ROOT_LABEL))
    pems = dict(kept or {})
    if "root" not in pems:
        pems = {"root": certificate_pem(make_root_ca(root_key, ROOT_NAME, at, 1)).decode("ascii")}
    root = load_certificate_pem(pems["root"].encode("ascii"))
    for label, (serial, party, usage) in CERTIFIED_KEYS.items():
        if label in pems:
            continue
        public = key_of(label).key.public_key()
        issue = issue_party_certificate if usage == "sign" else issue_encryption_certificate
        cert = issue(root_key, root, public, party, "processor", at, serial)
        pems[label] = certificate_pem(cert).decode("ascii")
    return pems


def load_certificates() -> dict[str, str]:
    if not CERTIFICATES.exists():
        raise SystemExit(f"{CERTIFICATES} is missing: run this script to make it")
    pems: dict[str, str] = json.loads(CERTIFICATES.read_text(encoding="utf-8"))["certificates"]
    if set(pems) != {"root", *CERTIFIED_KEYS}:
        raise SystemExit(f"{CERTIFICATES} is stale: run this script to complete it")
    return pems


def write_certificates(*, renew: bool) -> None:
    kept = None
    if CERTIFICATES.exists() and not renew:
        kept = json.loads(CERTIFICATES.read_text(encoding="utf-8"))["certificates"]
        kept = {label: pem for label, pem in kept.items() if label in {"root", *CERTIFIED_KEYS}}
    data = {
        "warning": "TEST CERTIFICATES ONLY: every private key is derivable from a public label",
        "root_seed_is_sha384_of": SEED_PREFIX + ROOT_LABEL,
        "issued_at": CERTIFICATES_ISSUED_AT,
        "certificates": make_certificates(kept),
    }
    CERTIFICATES.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# --- Crafting tokens the safe recipes refuse to make --------------------------------------


def raw_jws(header: bytes | dict[str, Any], payload: bytes, key: ec.EllipticCurvePrivateKey) -> str:
    """An ES256 compact JWS over arbitrary header and payload bytes (for invalid vectors)."""
    header_bytes = (
        header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    )
    signing_input = b64url_encode(header_bytes) + "." + b64url_encode(payload)
    r, s = decode_dss_signature(key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256())))
    # Low-S like every SEMOPS signer, so the refusal is of the header, not of the signature.
    signature = low_s(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return signing_input + "." + b64url_encode(signature)


def es256_signer(token: str) -> str | None:
    """The kid of the test key whose raw ES256 signature this token carries, if any.

    Invalid vectors record it, so a refusal of "bad content under a good signature" is known
    to be a refusal of the content, not an accident of a broken signature.
    """
    for label in KEY_SPECS:
        if es256_valid(token, public_jwk(key_of(label).key)):
            return key_of(label).kid
    return None


def es256_valid(token: str, jwk: dict[str, str]) -> bool:
    """Raw ES256 check with `cryptography` alone: no header parsing, no policy."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        signature = b64url_decode(parts[2])
        if len(signature) != 64:
            return False
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        public = ec.EllipticCurvePublicNumbers(
            int.from_bytes(b64url_decode(jwk["x"]), "big"),
            int.from_bytes(b64url_decode(jwk["y"]), "big"),
            ec.SECP256R1(),
        ).public_key()
        public.verify(der, (parts[0] + "." + parts[1]).encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


def claims_jws(claims: dict[str, Any], label: str) -> str:
    """Sign claims the message models would refuse to build, with a test key."""
    return sign_message(claims, key_of(label))


def flip(token: str, part: int, position: int) -> str:
    """Replace one base64url character of a compact token's part with the next one."""
    parts = token.split(".")
    text = parts[part]
    index = position % len(text)
    replacement = B64URL[(B64URL.index(text[index]) + 1) % len(B64URL)]
    parts[part] = text[:index] + replacement + text[index + 1 :]
    return ".".join(parts)


def replace_header(token: str, header: dict[str, Any]) -> str:
    parts = token.split(".")
    parts[0] = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    return ".".join(parts)


def header_of(token: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return result


# --- The sample payment --------------------------------------------------------------------


def build_messages() -> dict[str, Any]:
    """Every message of one payment (and its refund), plus the directory, a processor's
    registration, a wallet's enrolment and one device-authorised call, as models."""
    fulfilment = make_fulfilment(hashlib.sha256(b"SEMOPS TEST fulfilment").digest())
    condition = condition_for(fulfilment)
    request_id = fixed_id(IdKind.REQUEST, "request")
    order_id = fixed_id(IdKind.ORDER, "order")
    transfer_id = fixed_id(IdKind.TRANSFER, "transfer")
    rejected_transfer_id = fixed_id(IdKind.TRANSFER, "rejected-transfer")
    refund_id = fixed_id(IdKind.REFUND, "refund")
    common = {"amount_minor": 1250, "currency": "EUR"}

    request = PaymentRequest(
        request_id=request_id,
        payee_processor="bank-b",
        payee_id="shop-42",
        payee_name="Corner Café",
        reference="INV-2026-0042",
        created_at=NOW - 120,
        expires_at=NOW + 480,
        condition=condition,
        basket_digest=sha256_b64url(b"SEMOPS TEST basket: 1 coffee, 1 croissant"),
        **common,
    )
    request_token = sign(request, key_of("bank-b-sig"))
    order_fields: dict[str, Any] = {
        "order_id": order_id,
        "payer_processor": "bank-a",
        "payer_account": "alice-001",
        "request": request_token,
        "created_at": NOW - 30,
        "expires_at": NOW + 270,
        **common,
    }
    digest = order_digest(order_fields)
    pin_block = make_pin_block(TEST_PIN, digest, record_of("bank-a-enc"))
    order = PaymentOrder(**order_fields, pin_block=pin_block)
    assert order.order_digest() == digest

    details = TransferDetails(
        transfer_id=transfer_id,
        request_id=request_id,
        payee_id="shop-42",
        payer_ref=payer_reference(PAYER_REFERENCE_KEY, transfer_id),
    )
    sealed = seal(details, record_of("bank-b-enc"))
    prepare = TransferPrepare(
        transfer_id=transfer_id,
        payer_processor="bank-a",
        payee_processor="bank-b",
        condition=condition,
        created_at=NOW - 5,
        expires_at=NOW + 25,
        sealed=sealed,
        **common,
    )
    routed = RoutedPrepare(
        transfer_id=transfer_id,
        payee_processor="bank-b",
        condition=condition,
        created_at=NOW - 4,
        expires_at=NOW + 20,
        sealed=sealed,
        **common,
    )
    fulfil = TransferFulfil(
        transfer_id=transfer_id,
        payee_processor="bank-b",
        fulfilment=fulfilment,
        fulfilled_at=NOW - 3,
    )
    reject = TransferReject(
        transfer_id=rejected_transfer_id,
        payee_processor="bank-b",
        reason_code="request_expired",
        rejected_at=NOW - 3,
    )
    status = TransferStatus(
        transfer_id=transfer_id,
        kind="payment",
        state="committed",
        decided_at=NOW - 2,
        fulfilment=fulfilment,
        **common,
    )
    notice = PaymentNotice(
        request_id=request_id,
        transfer_id=transfer_id,
        payee_processor="bank-b",
        payee_id="shop-42",
        reference="INV-2026-0042",
        paid_at=NOW - 2,
        guarantee="irrevocable",
        **common,
    )
    receipt = Receipt(
        order_id=order_id,
        request_id=request_id,
        transfer_id=transfer_id,
        payer_processor="bank-a",
        payee_processor="bank-b",
        payee_id="shop-42",
        payee_name="Corner Café",
        reference="INV-2026-0042",
        condition=condition,
        fulfilment=fulfilment,
        committed_at=NOW - 2,
        **common,
    )
    refund = RefundTransfer(
        refund_id=refund_id,
        transfer_id=transfer_id,
        payee_processor="bank-b",
        amount_minor=500,
        currency="EUR",
        reason="Returned one item",
        created_at=NOW - 1,
        expires_at=NOW + 600,
    )
    refund_result = RefundResult(
        refund_id=refund_id,
        transfer_id=transfer_id,
        payer_processor="bank-a",
        outcome="accepted",
        decided_at=NOW,
    )
    directory = Directory(
        serial=7,
        router_id="router",
        issued_at=NOW - 3600,
        expires_at=NOW + 7 * DAY_S,
        entries=(
            _entry("router", "router", "SEMOPS Router (TEST)", ["router-sig"]),
            _entry(
                "bank-a",
                "bank",
                "Bank A (TEST)",
                ["bank-a-sig", "bank-a-enc", "bank-a-sig-revoked", "bank-a-sig-retired"],
            ),
            _entry("bank-b", "mno", "Operator B (TEST)", ["bank-b-sig", "bank-b-enc"]),
        ),
    )
    certificates = load_certificates()
    registration = ParticipantRegistration(
        participant_id="bank-a",
        kind="bank",
        display_name="Bank A (TEST)",
        endpoint="https://bank-a.semops.test:8443/",
        sign_certificate=certificates["bank-a-sig"],
        enc_certificate=certificates["bank-a-enc"],
        created_at=NOW - 10,
        expires_at=NOW + 110,
    )
    endorsement = RegistrationEndorsement(
        participant_id="bank-a",
        registration_digest=registration.registration_digest(),
        created_at=registration.created_at,
        expires_at=registration.expires_at,
    )
    # A key rotation: the next key's certificate, signed by the next key, endorsed by the
    # key registered now (the router's rule for a change, DESIGN.md §6).
    rotation_unsigned = registration.model_copy(
        update={"sign_certificate": certificates["bank-a-sig-next"], "created_at": NOW - 5}
    )
    rotation_token = sign_registration(
        rotation_unsigned, key_of("bank-a-sig-next"), current_key=key_of("bank-a-sig")
    )
    rotation = parse_claims(read_unverified_claims(rotation_token), ParticipantRegistration)
    enrolment_fields: dict[str, Any] = {
        "activation_code": "TEST-4Q7K-9XWM",
        "device_jwk": PublicJwk.model_validate(public_jwk(key_of("wallet-alice-device").key)),
        "device_name": "Alice's phone (TEST)",
        "created_at": NOW - 20,
        "expires_at": NOW + 280,
    }
    enrolment_digest = Enrolment(**enrolment_fields, pin_block="e.e.e.e.e").enrolment_digest()
    enrolment = Enrolment(
        **enrolment_fields,
        pin_block=make_pin_block(TEST_PIN, enrolment_digest, record_of("bank-a-enc")),
    )
    assert enrolment.enrolment_digest() == enrolment_digest
    device_auth = DeviceAuth(
        auth_id="da_" + b64url_encode(bytes(range(16))),
        account_id="alice-001",
        method="POST",
        path="/v1/orders",
        body_digest=sha256_b64url(DEVICE_AUTH_BODY),
        created_at=NOW - 5,
        expires_at=NOW + 55,
    )
    return {
        "registration": registration,
        "endorsement": endorsement,
        "rotation": rotation,
        "rotation_token": rotation_token,
        "certificates": certificates,
        "enrolment": enrolment,
        "device_auth": device_auth,
        "request": request,
        "request_token": request_token,
        "order": order,
        "order_fields": order_fields,
        "details": details,
        "prepare": prepare,
        "routed": routed,
        "fulfil": fulfil,
        "reject": reject,
        "status": status,
        "notice": notice,
        "receipt": receipt,
        "refund": refund,
        "refund_result": refund_result,
        "directory": directory,
        "fulfilment": fulfilment,
    }


# The body of the call the device authorisation vector authorises (its digest is signed).
DEVICE_AUTH_BODY: Final = b'{"order_id":"TEST order id"}'


def order_digest(order_fields: dict[str, Any]) -> str:
    """The digest a PIN block binds to, computed before the PIN block exists."""
    placeholder = "e.e.e.e.e"
    return PaymentOrder(**order_fields, pin_block=placeholder).order_digest()


def _entry(participant: str, kind: str, name: str, labels: list[str]) -> DirectoryEntry:
    return DirectoryEntry(
        participant_id=participant,
        kind=kind,  # type: ignore[arg-type]
        display_name=name,
        endpoint=f"https://{participant}.semops.test:8443/",
        keys=tuple(DirectoryKey.from_record(record_of(label)) for label in labels),
    )


# --- Vectors -------------------------------------------------------------------------------

SIGNERS: Final[dict[str, str]] = {
    "request": "bank-b-sig",
    "order": "wallet-alice-device",
    "prepare": "bank-a-sig",
    "routed": "router-sig",
    "fulfil": "bank-b-sig",
    "reject": "bank-b-sig",
    "status": "router-sig",
    "notice": "bank-b-sig",
    "receipt": "bank-a-sig",
    "refund": "bank-b-sig",
    "refund_result": "bank-a-sig",
    "directory": "router-sig",
    "registration": "bank-a-sig",
    "endorsement": "bank-a-sig",
    "device_auth": "wallet-alice-device",
    "enrolment": "wallet-alice-device",
}


def valid_vectors(m: dict[str, Any], tokens: dict[str, str]) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = []
    for name, label in SIGNERS.items():
        message: Message = m[name]
        vector: dict[str, Any] = {
            "name": f"valid_{message.MESSAGE_TYPE}",
            "operation": "open_signed",
            "message_type": message.MESSAGE_TYPE,
            "token": tokens[name],
            "claims": message.to_claims(),
            "signer_kid": key_of(label).kid,
            "verify_at": NOW,
        }
        if name == "order":
            vector["pin_block"] = {"recipient_kid": key_of("bank-a-enc").kid, "pin": TEST_PIN}
        if name in ("prepare", "routed"):
            vector["sealed_recipient_kid"] = key_of("bank-b-enc").kid
        if name == "directory":
            vector["expected_signer"] = "router"
        if name == "registration":
            vector["root_certificate"] = m["certificates"]["root"]
        if name == "device_auth":
            vector["body"] = DEVICE_AUTH_BODY.decode("ascii")
            vector["expected_signer"] = "wallet-alice"
        if name == "enrolment":
            vector["pin_block"] = {"recipient_kid": key_of("bank-a-enc").kid, "pin": TEST_PIN}
        vectors.append(vector)
    vectors.append(
        {
            "name": "valid_TransferDetails",
            "operation": "unseal",
            "message_type": "TransferDetails",
            "token": m["prepare"].sealed,
            "claims": m["details"].to_claims(),
            "recipient_kid": key_of("bank-b-enc").kid,
        }
    )
    rotation: ParticipantRegistration = m["rotation"]
    vectors.append(
        {
            "name": "valid_ParticipantRegistration_rotation",
            "operation": "open_rotation",
            "message_type": "ParticipantRegistration",
            "token": tokens["rotation"],
            "claims": rotation.to_claims(),
            "signer_kid": key_of("bank-a-sig-next").kid,
            "endorsed_by_kid": key_of("bank-a-sig").kid,
            "root_certificate": m["certificates"]["root"],
            "verify_at": NOW,
            "why": "bank-a's next key signs the registration carrying its certificate (proof "
            "of possession); the registered key endorses the digest of every other claim",
        }
    )
    receipt = next(v for v in vectors if v["message_type"] == "Receipt")
    vectors.append(
        receipt
        | {
            "name": "valid_Receipt_reread_months_later",
            "verify_at": NOW + 300 * DAY_S,
            "why": "a reply has no expiry: a receipt re-read from storage 300 days later opens",
        }
    )
    order: PaymentOrder = m["order"]
    vectors.append(
        {
            "name": "valid_PinBlock",
            "operation": "open_pin_block",
            "message_type": "PinBlock",
            "token": order.pin_block,
            "claims": {"v": 1, "pin": TEST_PIN, "order_digest": order.order_digest()},
            "recipient_kid": key_of("bank-a-enc").kid,
        }
    )
    return vectors


def invalid_vectors(m: dict[str, Any], tokens: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def jws(name: str, token: str, message_type: str, error: str, why: str, **extra: Any) -> None:
        vector = {"name": name, "operation": "open_signed", "message_type": message_type}
        vector |= {"token": token, "verify_at": NOW, "error": error, "why": why, **extra}
        vector["validly_signed_by"] = es256_signer(token)
        out.append(vector)

    def jwe(
        name: str, token: str, recipient: str, error: str, why: str, operation: str = "unseal"
    ) -> None:
        message_type = "TransferDetails" if operation == "unseal" else "PinBlock"
        vector = {
            "name": name,
            "operation": operation,
            "message_type": message_type,
            "token": token,
        }
        vector |= {"recipient_kid": key_of(recipient).kid, "error": error, "why": why}
        if operation == "open_pin_block":
            vector["expected_order_digest"] = m["order"].order_digest()
        out.append(vector)

    fulfil_token = tokens["fulfil"]
    request_token = tokens["request"]
    bank_b = key_of("bank-b-sig")
    fulfil_claims = m["fulfil"].to_claims()
    request_claims = m["request"].to_claims()
    prepare_claims = m["prepare"].to_claims()
    fulfil_payload = canonical_json(fulfil_claims)
    fulfil_header = header_of(fulfil_token)

    # --- Tampering and JOSE header attacks: one opaque signature_invalid --------------------
    jws(
        "jws_flipped_header_byte",
        flip(fulfil_token, 0, 0),
        "TransferFulfil",
        "signature_invalid",
        "first header character changed: the header no longer decodes to JSON",
    )
    jws(
        "jws_flipped_payload_byte",
        flip(fulfil_token, 1, 40),
        "TransferFulfil",
        "signature_invalid",
        "one payload character changed after signing",
    )
    jws(
        "jws_flipped_signature_byte",
        flip(fulfil_token, 2, 20),
        "TransferFulfil",
        "signature_invalid",
        "one signature character changed",
    )
    last = fulfil_token[-1]
    sibling = B64URL[B64URL.index(last) ^ 1]  # differs only in a padding bit of the last char
    jws(
        "jws_signature_noncanonical_base64",
        fulfil_token[:-1] + sibling,
        "TransferFulfil",
        "signature_invalid",
        "same signature bytes with a non-zero padding bit: not canonical base64url",
    )
    jws(
        "jws_swapped_kid",
        replace_header(fulfil_token, {"alg": "ES256", "kid": key_of("bank-a-sig").kid}),
        "TransferFulfil",
        "signature_invalid",
        "kid of another valid signing key; the signature is bank-b's",
    )
    jws(
        "jws_alg_none",
        b64url_encode(json.dumps({"alg": "none", "kid": bank_b.kid}).encode())
        + "."
        + b64url_encode(fulfil_payload)
        + ".",
        "TransferFulfil",
        "signature_invalid",
        "unsigned token: alg none is never accepted",
    )
    pem = bank_b.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs_input = (
        b64url_encode(json.dumps({"alg": "HS256", "kid": bank_b.kid}).encode())
        + "."
        + b64url_encode(fulfil_payload)
    )
    hs_mac = hmac.new(pem, hs_input.encode(), hashlib.sha256).digest()
    jws(
        "jws_alg_hs256_key_confusion",
        hs_input + "." + b64url_encode(hs_mac),
        "TransferFulfil",
        "signature_invalid",
        "HMAC with the signer's public key (PEM) as the secret",
    )
    attacker = key_of("bank-x-sig")
    jws(
        "jws_header_embedded_jwk",
        raw_jws(
            {"alg": "ES256", "kid": bank_b.kid, "jwk": public_jwk(attacker.key)},
            fulfil_payload,
            attacker.key,
        ),
        "TransferFulfil",
        "signature_invalid",
        "attacker embeds its own public key and signs with it under bank-b's kid",
    )
    jws(
        "jws_header_crit",
        raw_jws({**fulfil_header, "crit": ["exp"], "exp": NOW + 60}, fulfil_payload, bank_b.key),
        "TransferFulfil",
        "signature_invalid",
        "validly signed, but the header has crit: only alg and kid are allowed",
    )
    jws(
        "jws_header_typ",
        raw_jws({**fulfil_header, "typ": "JWT"}, fulfil_payload, bank_b.key),
        "TransferFulfil",
        "signature_invalid",
        "validly signed, but the header has an extra member",
    )
    duplicate_alg = ('{"alg":"none","alg":"ES256","kid":"' + bank_b.kid + '"}').encode()
    jws(
        "jws_header_duplicate_alg",
        raw_jws(duplicate_alg, fulfil_payload, bank_b.key),
        "TransferFulfil",
        "signature_invalid",
        "validly signed header with a duplicate alg member (parser differential)",
    )
    jws(
        "jws_header_kid_not_string",
        raw_jws({"alg": "ES256", "kid": 7}, fulfil_payload, bank_b.key),
        "TransferFulfil",
        "signature_invalid",
        "the kid is a number",
    )
    head, body, signature = fulfil_token.split(".")
    low = b64url_decode(signature)
    high_s = (P256_ORDER - int.from_bytes(low[32:], "big")).to_bytes(32, "big")
    jws(
        "jws_high_s_signature",
        f"{head}.{body}.{b64url_encode(low[:32] + high_s)}",
        "TransferFulfil",
        "signature_invalid",
        "a valid signature with s replaced by n - s (it verifies too): malleable, refused",
    )
    jws(
        "jws_json_serialization",
        json.dumps({"payload": b64url_encode(fulfil_payload)}),
        "TransferFulfil",
        "signature_invalid",
        "not a compact JWS",
    )

    # --- Key lookup: its own codes (the directory is public) ---------------------------------
    altered = bank_b.kid[:-1] + ("A" if bank_b.kid[-1] != "A" else "B")
    jws(
        "jws_header_kid_altered",
        replace_header(fulfil_token, {"alg": "ES256", "kid": altered}),
        "TransferFulfil",
        "key_unknown",
        "the header names a kid that is in no directory",
    )
    jws(
        "jws_unknown_kid",
        sign_message({**fulfil_claims, "payee_processor": "bank-x"}, attacker),
        "TransferFulfil",
        "key_unknown",
        "signed by a well-formed key that is not published",
    )
    jws(
        "jws_kid_not_well_formed",
        raw_jws({"alg": "ES256", "kid": "../../etc/passwd"}, fulfil_payload, bank_b.key),
        "TransferFulfil",
        "key_unknown",
        "a kid outside the kid alphabet is never looked up",
    )
    jws(
        "jws_revoked_key",
        sign_message(m["refund_result"].to_claims(), key_of("bank-a-sig-revoked")),
        "RefundResult",
        "key_revoked",
        "bank-a's revoked key",
    )
    jws(
        "jws_expired_key",
        sign_message(m["refund_result"].to_claims(), key_of("bank-a-sig-retired")),
        "RefundResult",
        "key_expired",
        "bank-a's retired key: the verification time is after its not_after",
    )
    jws(
        "jws_key_not_yet_valid",
        tokens["request"],
        "PaymentRequest",
        "key_expired",
        "bank-b's key is verified before its not_before",
        verify_at=KEY_SPECS["bank-b-sig"][2] - 1,
    )
    enc = key_of("bank-b-enc")
    jws(
        "jws_wrong_use_key",
        raw_jws({"alg": "ES256", "kid": enc.kid}, fulfil_payload, enc.key),
        "TransferFulfil",
        "key_wrong_use",
        "signed with bank-b's encryption key, named by its kid",
    )

    # --- Signer --------------------------------------------------------------------------------
    jws(
        "prepare_signed_by_other_bank",
        sign_message(prepare_claims, key_of("bank-b-sig")),
        "TransferPrepare",
        "signer_mismatch",
        "bank-b signs a prepare naming bank-a as the payer processor",
    )
    jws(
        "directory_signed_by_processor",
        sign_message(m["directory"].to_claims(), key_of("bank-a-sig")),
        "Directory",
        "signer_mismatch",
        "a processor signs a directory; the router must",
        expected_signer="router",
    )
    certificates = m["certificates"]
    registration_claims = m["registration"].to_claims()
    foreign_certificate = {**registration_claims, "sign_certificate": certificates["bank-b-sig"]}
    jws(
        "registration_signed_by_another_party",
        sign_message(foreign_certificate, key_of("bank-b-sig")),
        "ParticipantRegistration",
        "signer_mismatch",
        "bank-b signs, with the key of the certificate it carries (its own), a registration "
        "naming bank-a",
    )
    # The router's way: read the claims, check the certificates against the root for the
    # participant named, then verify with the certified key only (never a directory key).
    borrowed = sign_message(foreign_certificate, key_of("bank-a-sig"))
    out.append(
        {
            "name": "registration_with_another_partys_certificate",
            "operation": "open_registration",
            "message_type": "ParticipantRegistration",
            "token": borrowed,
            "verify_at": NOW,
            "root_certificate": certificates["root"],
            "error": "certificate_invalid",
            "why": "bank-a signs with its own key a registration naming bank-a but carrying "
            "bank-b's signing certificate: the certificate does not name the participant",
            "validly_signed_by": es256_signer(borrowed),
        }
    )
    jws(
        "device_auth_signed_by_a_processor",
        sign_message(m["device_auth"].to_claims(), key_of("bank-a-sig")),
        "DeviceAuth",
        "signer_mismatch",
        "a device authorisation names no signer: the processor pins it to the account's device",
        expected_signer="wallet-alice",
    )

    # --- Freshness -----------------------------------------------------------------------------
    jws(
        "request_expired",
        request_token,
        "PaymentRequest",
        "request_expired",
        "verified at the request's expires_at",
        verify_at=m["request"].expires_at,
    )
    jws(
        "request_not_yet_valid",
        request_token,
        "PaymentRequest",
        "message_not_yet_valid",
        "verified more than the clock skew before created_at",
        verify_at=m["request"].created_at - 31,
    )
    jws(
        "prepare_expired",
        tokens["prepare"],
        "TransferPrepare",
        "transfer_expired",
        "verified at the prepare's expires_at",
        verify_at=m["prepare"].expires_at,
    )
    jws(
        "refund_expired",
        tokens["refund"],
        "RefundTransfer",
        "message_expired",
        "verified at the refund's expires_at",
        verify_at=m["refund"].expires_at,
    )
    jws(
        "device_auth_expired",
        tokens["device_auth"],
        "DeviceAuth",
        "message_expired",
        "a device authorisation verified at its expires_at",
        verify_at=m["device_auth"].expires_at,
    )
    jws(
        "registration_expired",
        tokens["registration"],
        "ParticipantRegistration",
        "message_expired",
        "a registration verified at its expires_at",
        verify_at=m["registration"].expires_at,
    )
    jws(
        "enrolment_not_yet_valid",
        tokens["enrolment"],
        "Enrolment",
        "message_not_yet_valid",
        "an enrolment verified more than the clock skew before its created_at",
        verify_at=m["enrolment"].created_at - 31,
    )
    jws(
        "fulfil_dated_in_the_future",
        claims_jws({**fulfil_claims, "fulfilled_at": NOW + 31}, "bank-b-sig"),
        "TransferFulfil",
        "message_not_yet_valid",
        "a reply has no expiry, but is still refused when dated beyond the clock skew ahead",
    )
    jws(
        "receipt_dated_in_the_future",
        claims_jws({**m["receipt"].to_claims(), "committed_at": NOW + 3600}, "bank-a-sig"),
        "Receipt",
        "message_not_yet_valid",
        "a receipt dated an hour ahead of the verifier's clock",
    )

    # --- Claims the models refuse (validly signed by the named party) ------------------------
    big = {
        **request_claims,
        "pn": "東京中央駅前の角にある小さな喫茶店と本屋さん、二階の画廊と屋上庭園も",
        "ref": "R" * 35,
    }
    jws(
        "request_too_large",
        claims_jws(big, "bank-b-sig"),
        "PaymentRequest",
        "too_large",
        "within every field limit, but the token exceeds the 600-byte QR budget",
    )
    bank_a = key_of("bank-a-sig")
    bank_a_header = {"alg": "ES256", "kid": bank_a.kid}
    without_amount = canonical_json(
        {k: v for k, v in prepare_claims.items() if k != "amount_minor"}
    )
    jws(
        "float_amount",
        raw_jws(bank_a_header, without_amount[:-1] + b',"amount_minor":1250.0}', bank_a.key),
        "TransferPrepare",
        "malformed",
        "validly signed payload with a float amount: the signature holds, so strict JSON "
        "refuses it as malformed (nothing is left to hide once the signer is known)",
    )
    duplicate_amount = canonical_json(prepare_claims)[:-1] + b',"amount_minor":999999}'
    jws(
        "duplicate_claim",
        raw_jws(bank_a_header, duplicate_amount, bank_a.key),
        "TransferPrepare",
        "malformed",
        "validly signed payload with amount_minor twice (parser differential)",
    )
    jws(
        "amount_as_string",
        claims_jws({**prepare_claims, "amount_minor": "1250"}, "bank-a-sig"),
        "TransferPrepare",
        "validation_failed",
        "an amount is an integer, not a string",
    )
    jws(
        "amount_zero",
        claims_jws({**prepare_claims, "amount_minor": 0}, "bank-a-sig"),
        "TransferPrepare",
        "validation_failed",
        "an amount is at least one minor unit",
    )
    jws(
        "currency_unknown",
        claims_jws({**prepare_claims, "currency": "XXX"}, "bank-a-sig"),
        "TransferPrepare",
        "currency_unknown",
        "not a supported ISO 4217 code",
    )
    jws(
        "unknown_field",
        claims_jws({**prepare_claims, "payer_name": "Alice Example"}, "bank-a-sig"),
        "TransferPrepare",
        "validation_failed",
        "a prepare must not carry the payer's name",
    )
    jws(
        "version_2",
        claims_jws({**prepare_claims, "v": 2}, "bank-a-sig"),
        "TransferPrepare",
        "version_unsupported",
        "v is 2",
    )
    jws(
        "version_as_string",
        claims_jws({**prepare_claims, "v": "1"}, "bank-a-sig"),
        "TransferPrepare",
        "version_unsupported",
        'v is the string "1"',
    )
    jws(
        "wrong_message_type",
        fulfil_token,
        "TransferReject",
        "message_type_unexpected",
        "a valid TransferFulfil presented where a TransferReject is expected",
    )
    jws(
        "prepare_on_us",
        claims_jws({**prepare_claims, "payee_processor": "bank-a"}, "bank-a-sig"),
        "TransferPrepare",
        "validation_failed",
        "payer and payee processor are the same",
    )
    jws(
        "device_auth_valid_too_long",
        claims_jws(
            {**m["device_auth"].to_claims(), "expires_at": m["device_auth"].created_at + 121},
            "wallet-alice-device",
        ),
        "DeviceAuth",
        "validation_failed",
        "a device authorisation valid for 121 s: longer than AUTH_TTL_MAX_S (120 s)",
    )
    jws(
        "request_valid_too_briefly",
        claims_jws({**request_claims, "exp": request_claims["iat"] + 29}, "bank-b-sig"),
        "PaymentRequest",
        "validation_failed",
        "a request valid for 29 s: shorter than REQUEST_TTL_MIN_S (30 s)",
        verify_at=request_claims["iat"],
    )
    jws(
        "notice_without_guarantee",
        claims_jws(
            {k: v for k, v in m["notice"].to_claims().items() if k != "guarantee"}, "bank-b-sig"
        ),
        "PaymentNotice",
        "validation_failed",
        "a payment notice whose signed claims do not state the irrevocable guarantee",
    )
    jws(
        "refund_status_with_fulfilment",
        claims_jws(
            {
                **m["status"].to_claims(),
                "transfer_id": m["refund"].refund_id,
                "kind": "refund",
                "amount_minor": m["refund"].amount_minor,
                "original_transfer_id": m["refund"].transfer_id,
            },
            "router-sig",
        ),
        "TransferStatus",
        "validation_failed",
        "a committed refund status carrying a fulfilment: a refund has no hash lock",
    )
    jws(
        "request_payee_name_with_bidi_override",
        claims_jws({**request_claims, "pn": "Corner \u202eéfaC"}, "bank-b-sig"),
        "PaymentRequest",
        "validation_failed",
        "a payee name with RIGHT-TO-LEFT OVERRIDE (U+202E): displayed as another name",
    )
    receipt_claims = {**m["receipt"].to_claims(), "fulfilment": b64url_encode(bytes(32))}
    jws(
        "receipt_fulfilment_invalid",
        claims_jws(receipt_claims, "bank-a-sig"),
        "Receipt",
        "fulfilment_invalid",
        "the receipt's fulfilment does not hash to its condition",
    )

    # --- PIN block bound to another order ------------------------------------------------------
    other_digest = order_digest({**m["order_fields"], "amount_minor": 999_999})
    wrong_block = make_pin_block(TEST_PIN, other_digest, record_of("bank-a-enc"))
    wrong_order = PaymentOrder(**m["order_fields"], pin_block=wrong_block)
    wrong_order_token = sign(wrong_order, key_of("wallet-alice-device"))
    out.append(
        {
            "name": "order_pin_block_for_another_order",
            "operation": "order_pin_block",
            "message_type": "PaymentOrder",
            "token": wrong_order_token,
            "verify_at": NOW,
            "recipient_kid": key_of("bank-a-enc").kid,
            "error": "pin_block_mismatch",
            "why": "a validly signed order carrying a PIN block bound to another order's digest",
            "validly_signed_by": es256_signer(wrong_order_token),
        }
    )

    # --- PIN block bound to another enrolment (another device key) ----------------------------
    enrolment_claims = m["enrolment"].to_claims()
    other_device = {**enrolment_claims, "device_jwk": public_jwk(key_of("bank-x-sig").key)}
    other_enrolment_digest = Enrolment.model_validate(other_device).enrolment_digest()
    lifted_block = make_pin_block(TEST_PIN, other_enrolment_digest, record_of("bank-a-enc"))
    lifted = sign_message(
        {**enrolment_claims, "pin_block": lifted_block}, key_of("wallet-alice-device")
    )
    out.append(
        {
            "name": "enrolment_pin_block_for_another_device",
            "operation": "enrolment_pin_block",
            "message_type": "Enrolment",
            "token": lifted,
            "verify_at": NOW,
            "recipient_kid": key_of("bank-a-enc").kid,
            "error": "pin_block_mismatch",
            "why": "a validly signed enrolment carrying a PIN block bound to the digest of an "
            "enrolment of another device key",
            "validly_signed_by": es256_signer(lifted),
        }
    )

    # --- Sealed parts: one opaque seal_invalid ------------------------------------------------
    details_token: str = m["prepare"].sealed
    jwe(
        "jwe_flipped_header_byte",
        flip(details_token, 0, 30),
        "bank-b-enc",
        "seal_invalid",
        "protected header changed (it is the GCM additional data)",
    )
    jwe(
        "jwe_flipped_encrypted_key",
        flip(details_token, 1, 10),
        "bank-b-enc",
        "seal_invalid",
        "wrapped content key changed",
    )
    jwe("jwe_flipped_iv", flip(details_token, 2, 5), "bank-b-enc", "seal_invalid", "IV changed")
    jwe(
        "jwe_flipped_ciphertext",
        flip(details_token, 3, 10),
        "bank-b-enc",
        "seal_invalid",
        "ciphertext changed",
    )
    jwe(
        "jwe_flipped_tag",
        flip(details_token, 4, 5),
        "bank-b-enc",
        "seal_invalid",
        "authentication tag changed",
    )
    jwe(
        "jwe_for_another_kid",
        details_token,
        "bank-a-enc",
        "seal_invalid",
        "sealed to bank-b, opened by bank-a",
    )
    header = header_of(details_token)
    jwe(
        "jwe_kid_rewritten",
        replace_header(details_token, {**header, "kid": key_of("bank-a-enc").kid}),
        "bank-a-enc",
        "seal_invalid",
        "sealed to bank-b, header kid rewritten to bank-a's",
    )
    jwe(
        "jwe_header_extra_member",
        replace_header(details_token, {**header, "zip": "DEF"}),
        "bank-b-enc",
        "seal_invalid",
        "header member outside alg, enc, kid, epk",
    )
    jwe(
        "jwe_alg_direct",
        replace_header(details_token, {**header, "alg": "ECDH-ES"}),
        "bank-b-enc",
        "seal_invalid",
        "another key agreement algorithm",
    )
    jwe(
        "jwe_epk_unknown_curve",
        replace_header(details_token, {**header, "epk": {**header["epk"], "crv": "Q-256"}}),
        "bank-b-enc",
        "seal_invalid",
        "the ephemeral key names a curve nobody knows",
    )
    jwe(
        "jwe_epk_off_curve",
        replace_header(
            details_token, {**header, "epk": {**header["epk"], "x": b64url_encode(b"\x01" * 32)}}
        ),
        "bank-b-enc",
        "seal_invalid",
        "the ephemeral public key is not a point on P-256 (invalid-curve attack)",
    )
    jwe(
        "pin_block_flipped_tag",
        flip(m["order"].pin_block, 4, 3),
        "bank-a-enc",
        "seal_invalid",
        "PIN block tag changed",
        operation="open_pin_block",
    )
    jwe(
        "pin_block_for_another_order",
        wrong_block,
        "bank-a-enc",
        "pin_block_mismatch",
        "a PIN block bound to another order's digest",
        operation="open_pin_block",
    )
    return out  # fmt: skip


def key_entries() -> list[dict[str, Any]]:
    entries = []
    for label, (owner, use, not_before, not_after, status, in_ring) in KEY_SPECS.items():
        key = key_of(label)
        entry: dict[str, Any] = {
            "label": label,
            "kid": key.kid,
            "owner": owner,
            "use": use.value,
            "not_before": not_before,
            "not_after": not_after,
            "status": status.value,
            "in_ring": in_ring,
            "seed_is_sha384_of": SEED_PREFIX + label,
            "public_jwk": public_jwk(key.key),
        }
        if use is KeyUse.ENCRYPT:
            entry["private_jwk"] = private_jwk(key)
        entries.append(entry)
    return entries


def deterministic(m: dict[str, Any]) -> dict[str, Any]:
    """Values every implementation must compute bit for bit (no randomness involved)."""
    transfer_id = m["prepare"].transfer_id
    return {
        "fulfilment": m["fulfilment"],
        "condition": condition_for(m["fulfilment"]),
        "payer_reference": {
            "key_b64url": b64url_encode(PAYER_REFERENCE_KEY),
            "transfer_id": transfer_id,
            "value": payer_reference(PAYER_REFERENCE_KEY, transfer_id),
        },
        "pin_verification_value": {
            "key_b64url": b64url_encode(PIN_KEY),
            "credential_id": "alice-001",
            "pin": TEST_PIN,
            "value_b64url": b64url_encode(pin_verification_value(PIN_KEY, "alice-001", TEST_PIN)),
        },
        "message_digests": {
            m[name].MESSAGE_TYPE: m[name].digest()
            for name in (
                "fulfil",
                "reject",
                "status",
                "notice",
                "receipt",
                "directory",
                "registration",
                "endorsement",
                "device_auth",
            )
        },
        # What a rotation's endorsement is bound to: every registration claim but itself.
        "rotation_registration_digest": m["rotation"].registration_digest(),
        # What an enrolment's PIN block is bound to: every claim but the PIN block itself.
        "enrolment_digest": m["enrolment"].enrolment_digest(),
        "device_auth_body_digest": sha256_b64url(DEVICE_AUTH_BODY),
    }


def build() -> dict[str, Any]:
    m = build_messages()
    tokens = {name: sign(m[name], key_of(label)) for name, label in SIGNERS.items()}
    tokens["request"] = m["request_token"]  # the one embedded in the order
    tokens["rotation"] = m["rotation_token"]
    return {
        "format": FORMAT,
        "warning": "TEST KEYS AND DATA ONLY: every private key is derivable from a public label",
        "generated_by": "python -m tests.vectors.generate",
        "now": NOW,
        "keys": key_entries(),
        "deterministic": deterministic(m),
        "valid": valid_vectors(m, tokens),
        "invalid": invalid_vectors(m, tokens),
    }


def main(argv: list[str]) -> int:
    renew = "--new-certificates" in argv
    stored = (
        json.loads(CERTIFICATES.read_text(encoding="utf-8"))["certificates"]
        if CERTIFICATES.exists()
        else {}
    )
    if renew or set(stored) != {"root", *CERTIFIED_KEYS}:
        write_certificates(renew=renew)
        print(f"wrote {CERTIFICATES}: new test certificates (review the registration vectors)")
    data = build()
    OUTPUT.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}: {len(data['valid'])} valid, {len(data['invalid'])} invalid vectors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
