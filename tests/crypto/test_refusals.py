"""Refusals: no tampered, misattributed, stale or replayed message ever gets through.

Property-style: every single character of a signed PaymentRequest, a signed
TransferPrepare, a sealed TransferDetails and a PIN block is replaced by another base64url
character, and the result must be refused with the one code the recipe promises. Then the
explicit list of DESIGN.md §6: swapped kid, revoked and expired keys, a PIN block lifted
from another order, a fulfilment that does not open the hash lock, an expired request, and
an id reused with different content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import SemopsError
from semops.core.ids import IdKind, make_id
from semops.crypto import (
    KeyRing,
    KeyStatus,
    KeyUse,
    PrivateKey,
    check_fulfilment,
    condition_for,
    derive_key,
    make_fulfilment,
    make_pin_block,
    open_pin_block,
    open_sealed,
    payer_reference,
    seal_for,
    sign_message,
)
from semops.protocol import (
    Decision,
    PaymentOrder,
    PaymentRequest,
    Receipt,
    StoredOutcome,
    TransferDetails,
    TransferPrepare,
    check_order_matches_request,
    decide,
    open_signed,
    seal,
    sign,
    unseal,
)

NOW: Final = 1_790_000_000
B64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# secp256r1 group order, to build the other valid form (r, n - s) of an ECDSA signature.
P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _key(owner: str, use: KeyUse, label: str) -> PrivateKey:
    seed = hashlib.sha384(f"SEMOPS refusals TEST key {label}".encode()).digest()
    return derive_key(owner, use, seed)


BANK_A = _key("bank-a", KeyUse.SIGN, "bank-a sig")
BANK_A_ENC = _key("bank-a", KeyUse.ENCRYPT, "bank-a enc")
BANK_A_REVOKED = _key("bank-a", KeyUse.SIGN, "bank-a sig revoked")
BANK_A_RETIRED = _key("bank-a", KeyUse.SIGN, "bank-a sig retired")
BANK_B = _key("bank-b", KeyUse.SIGN, "bank-b sig")
BANK_B_ENC = _key("bank-b", KeyUse.ENCRYPT, "bank-b enc")
DEVICE = _key("wallet-alice", KeyUse.SIGN, "device")
RETIRED_AT: Final = NOW + 600
RING = KeyRing(
    [
        key.public_record(NOW - 86_400, NOW + 86_400)
        for key in (BANK_A, BANK_A_ENC, BANK_B, BANK_B_ENC, DEVICE)
    ]
    + [
        BANK_A_REVOKED.public_record(NOW - 86_400, NOW + 86_400, KeyStatus.REVOKED),
        BANK_A_RETIRED.public_record(NOW - 86_400, RETIRED_AT),
    ]
)
FULFILMENT: Final = make_fulfilment(hashlib.sha256(b"refusals fulfilment").digest())
CONDITION: Final = condition_for(FULFILMENT)


def _id(kind: IdKind, label: str) -> str:
    return make_id(kind, hashlib.sha256(label.encode()).digest()[:16])


REQUEST = PaymentRequest(
    request_id=_id(IdKind.REQUEST, "request"),
    payee_processor="bank-b",
    payee_id="shop-42",
    payee_name="Corner Café",
    amount_minor=1250,
    currency="EUR",
    reference="INV-42",
    created_at=NOW - 60,
    expires_at=NOW + 540,
    condition=CONDITION,
)
TRANSFER_ID: Final = _id(IdKind.TRANSFER, "transfer")
DETAILS = TransferDetails(
    transfer_id=TRANSFER_ID,
    request_id=REQUEST.request_id,
    payee_id="shop-42",
    payer_ref=payer_reference(b"k" * 32, TRANSFER_ID),
)
SEALED_DETAILS: Final = seal(DETAILS, RING.resolve(BANK_B_ENC.kid, KeyUse.ENCRYPT, NOW))
PREPARE = TransferPrepare(
    transfer_id=TRANSFER_ID,
    payer_processor="bank-a",
    payee_processor="bank-b",
    amount_minor=1250,
    currency="EUR",
    condition=CONDITION,
    created_at=NOW - 5,
    expires_at=NOW + 25,
    sealed=SEALED_DETAILS,
)
REQUEST_TOKEN: Final = sign(REQUEST, BANK_B)
PREPARE_TOKEN: Final = sign(PREPARE, BANK_A)


def _order(amount_minor: int = 1250, pin_block: str | None = None) -> PaymentOrder:
    fields: dict[str, Any] = {
        "order_id": _id(IdKind.ORDER, "order"),
        "payer_processor": "bank-a",
        "payer_account": "alice-001",
        "request": REQUEST_TOKEN,
        "amount_minor": amount_minor,
        "currency": "EUR",
        "created_at": NOW - 10,
        "expires_at": NOW + 290,
    }
    unsigned = PaymentOrder(**fields, pin_block="x.x.x.x.x")  # the digest skips the PIN block
    block = pin_block or make_pin_block(
        "1234", unsigned.order_digest(), RING.resolve(BANK_A_ENC.kid, KeyUse.ENCRYPT, NOW)
    )
    return PaymentOrder(**fields, pin_block=block)


ORDER = _order()


def _replace(token: str, position: int, character: str) -> str:
    assert token[position] != "." and character != token[position]
    return token[:position] + character + token[position + 1 :]


def _variants(token: str) -> Iterator[tuple[int, str]]:
    """Every position, each with two replacements: one that changes the lowest bit of the
    6-bit group (at a segment's last character that is a padding bit, so a lenient base64
    decoder would see the same bytes) and one that changes the highest bit; plus every
    possible replacement at each segment's last character."""
    for position, character in enumerate(token):
        if character == ".":
            continue
        index = B64URL.index(character)
        segment_end = position + 1 == len(token) or token[position + 1] == "."
        replacements = (
            [c for c in B64URL if c != character]
            if segment_end
            else [B64URL[index ^ 1], B64URL[index ^ 32]]
        )
        for replacement in replacements:
            yield position, replacement


def _segment(token: str, position: int) -> int:
    return token.count(".", 0, position)


def _code(call: Any) -> str:
    with pytest.raises(SemopsError) as refused:
        call()
    return refused.value.code


# --- Every byte of a signed message -----------------------------------------------------------


def _check_jws_flip(token: str, expected: type[Any], position: int, replacement: str) -> str:
    tampered = _replace(token, position, replacement)
    code = _code(lambda: open_signed(tampered, expected, RING, NOW))
    if _segment(token, position) == 0:
        # The header is parsed, and its kid looked up, *before* the signature is checked
        # (structure -> key -> signature, envelope.py). A flip that breaks the base64, the
        # JSON or the {alg, kid} member set is signature_invalid. A flip inside the kid that
        # still decodes to a JSON string names a kid the ring does not hold (or an ill-formed
        # one, which check_kid also calls unknown): key_unknown. That is no oracle, since the
        # directory is public. It can never name another *known* key (that would take a
        # 16-character thumbprint collision), and if it did, the signature covers the header.
        assert code in ("signature_invalid", "key_unknown")
        if code == "key_unknown":
            header = json.loads(b64url_decode(tampered.split(".")[0]))
            assert header["kid"] != json.loads(b64url_decode(token.split(".")[0]))["kid"]
    else:  # payload or signature: only the signature check can catch it
        assert code == "signature_invalid"
    return code


@pytest.mark.parametrize(
    ("token", "expected"),
    [(REQUEST_TOKEN, PaymentRequest), (PREPARE_TOKEN, TransferPrepare)],
    ids=["PaymentRequest", "TransferPrepare"],
)
def test_every_character_flip_of_a_signed_message_is_refused(
    token: str, expected: type[Any]
) -> None:
    open_signed(token, expected, RING, NOW)  # the untouched token is fine
    codes: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    for position, replacement in _variants(token):
        code = _check_jws_flip(token, expected, position, replacement)
        codes[_segment(token, position)].add(code)
    assert codes[1] == codes[2] == {"signature_invalid"}
    assert "signature_invalid" in codes[0]


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_random_flip_of_a_signed_prepare_is_refused(data: st.DataObject) -> None:
    position = data.draw(st.sampled_from([i for i, c in enumerate(PREPARE_TOKEN) if c != "."]))
    replacement = data.draw(st.sampled_from([c for c in B64URL if c != PREPARE_TOKEN[position]]))
    _check_jws_flip(PREPARE_TOKEN, TransferPrepare, position, replacement)


# --- Every byte of a sealed part --------------------------------------------------------------


def test_every_character_flip_of_sealed_details_is_refused() -> None:
    assert unseal(SEALED_DETAILS, TransferDetails, BANK_B_ENC) == DETAILS
    for position, replacement in _variants(SEALED_DETAILS):
        tampered = _replace(SEALED_DETAILS, position, replacement)
        assert _code(lambda t=tampered: unseal(t, TransferDetails, BANK_B_ENC)) == "seal_invalid"


def test_every_character_flip_of_a_pin_block_is_refused() -> None:
    block, digest = ORDER.pin_block, ORDER.order_digest()
    assert open_pin_block(block, BANK_A_ENC, digest) == "1234"
    for position, replacement in _variants(block):
        tampered = _replace(block, position, replacement)
        # Never pin_block_mismatch: a flip cannot make a block that opens at all.
        assert _code(lambda t=tampered: open_pin_block(t, BANK_A_ENC, digest)) == "seal_invalid"


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_random_flip_of_sealed_details_is_refused(data: st.DataObject) -> None:
    position = data.draw(st.sampled_from([i for i, c in enumerate(SEALED_DETAILS) if c != "."]))
    replacement = data.draw(st.sampled_from([c for c in B64URL if c != SEALED_DETAILS[position]]))
    tampered = _replace(SEALED_DETAILS, position, replacement)
    assert _code(lambda: open_sealed(tampered, BANK_B_ENC)) == "seal_invalid"


def test_sealed_part_with_an_unknown_epk_curve_is_seal_invalid() -> None:
    """Regression: joserfc raised KeyError for an unknown "crv" in the ephemeral key, which
    escaped open_sealed as a crash (a 500) instead of the opaque seal_invalid."""
    header_part, *rest = SEALED_DETAILS.split(".")
    header = json.loads(b64url_decode(header_part))
    for curve in ("Q-256", "Ed25519", "secp256k1", "P-521"):
        forged = {**header, "epk": {**header["epk"], "crv": curve}}
        token = ".".join([b64url_encode(json.dumps(forged).encode()), *rest])
        assert _code(lambda t=token: open_sealed(t, BANK_B_ENC)) == "seal_invalid"


# --- The explicit list ------------------------------------------------------------------------


def test_swapped_kid_is_signature_invalid() -> None:
    """bank-b's signature presented under bank-a's (valid, known) kid."""
    header_part, payload, signature = REQUEST_TOKEN.split(".")
    assert json.loads(b64url_decode(header_part))["kid"] == BANK_B.kid
    swapped = b64url_encode(json.dumps({"alg": "ES256", "kid": BANK_A.kid}).encode())
    token = f"{swapped}.{payload}.{signature}"
    assert _code(lambda: open_signed(token, PaymentRequest, RING, NOW)) == "signature_invalid"


def test_revoked_key_is_refused() -> None:
    token = sign(PREPARE, BANK_A_REVOKED)
    assert _code(lambda: open_signed(token, TransferPrepare, RING, NOW)) == "key_revoked"


def test_expired_key_is_refused_from_its_not_after() -> None:
    token = sign_message(PREPARE.to_claims(), BANK_A_RETIRED)
    # Check the key alone (freshness off): valid up to the last second, refused from not_after.
    open_signed(token, TransferPrepare, RING, RETIRED_AT - 1, check_freshness=False)
    refused = _code(
        lambda: open_signed(token, TransferPrepare, RING, RETIRED_AT, check_freshness=False)
    )
    assert refused == "key_expired"


def test_pin_block_bound_to_another_order_is_refused() -> None:
    other = _order(amount_minor=999_999)  # same order id, another amount
    assert other.order_digest() != ORDER.order_digest()
    lifted = _order(pin_block=other.pin_block)  # its PIN block carried into this order
    token = sign(lifted, DEVICE)
    received = open_signed(token, PaymentOrder, RING, NOW).message
    code = _code(lambda: open_pin_block(received.pin_block, BANK_A_ENC, received.order_digest()))
    assert code == "pin_block_mismatch"
    assert open_pin_block(other.pin_block, BANK_A_ENC, other.order_digest()) == "1234"


def test_fulfilment_that_does_not_hash_to_the_condition_is_refused() -> None:
    wrong = make_fulfilment(bytes(32))
    check_fulfilment(FULFILMENT, CONDITION)
    assert _code(lambda: check_fulfilment(wrong, CONDITION)) == "fulfilment_invalid"
    receipt_claims = {
        "v": 1,
        "type": "Receipt",
        "order_id": ORDER.order_id,
        "request_id": REQUEST.request_id,
        "transfer_id": TRANSFER_ID,
        "payer_processor": "bank-a",
        "payee_processor": "bank-b",
        "payee_id": "shop-42",
        "payee_name": "Corner Café",
        "amount_minor": 1250,
        "currency": "EUR",
        "condition": CONDITION,
        "fulfilment": FULFILMENT,
        "committed_at": NOW,
    }
    open_signed(sign_message(receipt_claims, BANK_A), Receipt, RING, NOW)
    token = sign_message({**receipt_claims, "fulfilment": wrong}, BANK_A)
    assert _code(lambda: open_signed(token, Receipt, RING, NOW)) == "fulfilment_invalid"


def test_expired_request_is_refused() -> None:
    open_signed(REQUEST_TOKEN, PaymentRequest, RING, REQUEST.expires_at - 1)
    at_expiry = REQUEST.expires_at
    assert (
        _code(lambda: open_signed(REQUEST_TOKEN, PaymentRequest, RING, at_expiry))
        == "request_expired"
    )
    # The payer processor checks the embedded request again against the order.
    check_order_matches_request(ORDER, REQUEST, processor_id="bank-a", now=at_expiry - 1)
    code = _code(
        lambda: check_order_matches_request(ORDER, REQUEST, processor_id="bank-a", now=at_expiry)
    )
    assert code == "request_expired"


def test_same_id_with_other_content_is_a_conflict_and_same_content_a_retry() -> None:
    stored = StoredOutcome(REQUEST.digest(), outcome={"status": "paid", "transfer_id": TRANSFER_ID})
    changed = REQUEST.model_copy(update={"amount_minor": 99_999})
    assert changed.request_id == REQUEST.request_id and changed.digest() != REQUEST.digest()
    assert _code(lambda: decide(stored, changed.digest())) == "idempotency_conflict"
    retry = decide(stored, REQUEST.digest())
    assert retry.decision is Decision.RETRY and retry.outcome == stored.outcome
    assert decide(None, REQUEST.digest()).decision is Decision.NEW


@given(stored_digest=st.text(min_size=1, max_size=8), new_digest=st.text(min_size=1, max_size=8))
def test_decide_is_retry_exactly_when_the_digest_matches(
    stored_digest: str, new_digest: str
) -> None:
    stored = StoredOutcome(stored_digest, outcome=("outcome", stored_digest))
    if stored_digest == new_digest:
        verdict = decide(stored, new_digest)
        assert verdict.decision is Decision.RETRY and verdict.outcome == stored.outcome
    else:
        assert _code(lambda: decide(stored, new_digest)) == "idempotency_conflict"


def _twin(token: str) -> str:
    """The token with the other valid form of its ECDSA signature, (r, n - s)."""
    header_part, payload, signature = token.split(".")
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    high = raw[:32] + (P256_ORDER - s).to_bytes(32, "big")
    return f"{header_part}.{payload}.{b64url_encode(high)}"


def test_a_malleated_signature_is_refused() -> None:
    """ECDSA has two valid signatures per message, (r, s) and (r, n - s); OpenSSL and
    jwcrypto accept both, so one message would have two valid token strings. Every SEMOPS
    signer makes the low one and every verifier refuses the high one (signature_invalid):
    one message, one token. (Replay and idempotency are keyed on ids and claim digests
    anyway, never on token bytes.)"""
    twin = _twin(PREPARE_TOKEN)
    assert twin != PREPARE_TOKEN
    assert open_signed(PREPARE_TOKEN, TransferPrepare, RING, NOW).message
    assert _code(lambda: open_signed(twin, TransferPrepare, RING, NOW)) == "signature_invalid"


def test_sealed_to_another_recipient_is_refused() -> None:
    token = seal_for(DETAILS.to_claims(), RING.resolve(BANK_A_ENC.kid, KeyUse.ENCRYPT, NOW))
    assert _code(lambda: unseal(token, TransferDetails, BANK_B_ENC)) == "seal_invalid"
