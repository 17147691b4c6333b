"""Interoperability with an independent JOSE implementation (jwcrypto).

SEMOPS signs and seals with its own recipes on `cryptography`. A processor built by another
vendor will not: these tests hold our tokens to jwcrypto's reading of RFC 7515/7516/7518,
and jwcrypto's tokens to ours, in both directions, for signatures (ES256) and sealed parts
(ECDH-ES+A256KW, A256GCM). test_interop_joserfc.py does the same against joserfc.
jwcrypto is restricted to exactly the SEMOPS algorithms, as a careful verifier would be.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from semops.core.encoding import b64url_decode, b64url_encode, canonical_json
from semops.core.errors import SemopsError
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    derive_key,
    make_pin_block,
    open_pin_block,
    open_sealed,
    public_jwk,
    seal_for,
    sign_message,
    thumbprint,
    verify_message,
)
from semops.crypto.jose import P256_ORDER
from semops.protocol import TransferDetails, TransferFulfil, open_signed, unseal

NOW = 1_790_000_000
SIGN_ALGS = ["ES256"]
SEAL_ALGS = ["ECDH-ES+A256KW", "A256GCM"]
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "vectors.json").read_text(encoding="utf-8")
)
KEYS_BY_KID = {entry["kid"]: entry for entry in VECTORS["keys"]}


def _key(owner: str, use: KeyUse, label: str) -> PrivateKey:
    return derive_key(
        owner, use, hashlib.sha384(f"SEMOPS interop TEST key {label}".encode()).digest()
    )


SIGNER = _key("bank-b", KeyUse.SIGN, "bank-b sig")
OTHER_SIGNER = _key("bank-x", KeyUse.SIGN, "bank-x sig")
RECIPIENT = _key("bank-a", KeyUse.ENCRYPT, "bank-a enc")
RING = KeyRing(
    [
        SIGNER.public_record(NOW - 3600, NOW + 3600),
        RECIPIENT.public_record(NOW - 3600, NOW + 3600),
    ]
)
CLAIMS = {
    "v": 1,
    "type": "TransferFulfil",
    "transfer_id": "tr_interop-0000000000000",
    "payee_processor": "bank-b",
    "fulfilment": "A" * 43,
    "fulfilled_at": NOW,
}


def _public(key: PrivateKey) -> jwcrypto_jwk.JWK:
    return jwcrypto_jwk.JWK(**public_jwk(key.key))


def _private(key: PrivateKey) -> jwcrypto_jwk.JWK:
    return jwcrypto_jwk.JWK.from_pyca(key.key)


def _jwcrypto_verify(token: str, key: jwcrypto_jwk.JWK) -> tuple[dict[str, Any], bytes]:
    verifier = jwcrypto_jws.JWS()
    verifier.allowed_algs = SIGN_ALGS
    verifier.deserialize(token, key=key)  # raises unless the signature verifies
    return verifier.jose_header, verifier.payload


def _jwcrypto_decrypt(token: str, key: jwcrypto_jwk.JWK) -> tuple[dict[str, Any], bytes]:
    opener = jwcrypto_jwe.JWE()
    opener.allowed_algs = SEAL_ALGS
    opener.deserialize(token, key=key)
    return opener.jose_header, opener.payload


def _jwcrypto_sign(
    payload: bytes, key: jwcrypto_jwk.JWK, header: dict[str, Any], *, low: bool = True
) -> str:
    """A jwcrypto JWS; with `low`, its s made low as SEMOPS requires of every signer
    (jwcrypto, like OpenSSL, leaves s as it comes: high half the time)."""
    signer = jwcrypto_jws.JWS(payload)
    signer.allowed_algs = SIGN_ALGS
    signer.add_signature(key, alg=None, protected=json.dumps(header))
    token = str(signer.serialize(compact=True))
    head, body, signature = token.split(".")
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    if low != (s <= P256_ORDER // 2):
        s = P256_ORDER - s
    return f"{head}.{body}.{b64url_encode(raw[:32] + s.to_bytes(32, 'big'))}"


def _jwcrypto_seal(payload: bytes, recipient: jwcrypto_jwk.JWK, kid: str) -> str:
    sealer = jwcrypto_jwe.JWE(
        payload, protected=json.dumps({"alg": SEAL_ALGS[0], "enc": SEAL_ALGS[1], "kid": kid})
    )
    sealer.allowed_algs = SEAL_ALGS
    sealer.add_recipient(recipient)
    return str(sealer.serialize(compact=True))


def _protected_header(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


# --- Ours -> jwcrypto ------------------------------------------------------------------------


def test_jwcrypto_verifies_our_signature() -> None:
    token = sign_message(CLAIMS, SIGNER)
    header, payload = _jwcrypto_verify(token, _public(SIGNER))
    assert header == {"alg": "ES256", "kid": SIGNER.kid}
    assert payload == canonical_json(CLAIMS)


def test_jwcrypto_refuses_our_signature_under_another_key() -> None:
    token = sign_message(CLAIMS, SIGNER)
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        _jwcrypto_verify(token, _public(OTHER_SIGNER))


@pytest.mark.parametrize(
    "vector",
    [vector for vector in VECTORS["valid"] if vector["operation"] == "open_signed"],
    ids=lambda vector: vector["name"],
)
def test_jwcrypto_verifies_every_signed_vector(vector: dict[str, Any]) -> None:
    key = jwcrypto_jwk.JWK(**KEYS_BY_KID[vector["signer_kid"]]["public_jwk"])
    header, payload = _jwcrypto_verify(vector["token"], key)
    assert header == {"alg": "ES256", "kid": vector["signer_kid"]}
    assert json.loads(payload) == vector["claims"]


def test_jwcrypto_decrypts_our_sealed_part() -> None:
    token = seal_for(CLAIMS, RECIPIENT.public_record(NOW - 3600, NOW + 3600))
    header, payload = _jwcrypto_decrypt(token, _private(RECIPIENT))
    assert set(header) == {"alg", "enc", "kid", "epk"}
    assert (header["alg"], header["enc"], header["kid"]) == (*SEAL_ALGS, RECIPIENT.kid)
    assert json.loads(payload) == CLAIMS


def test_jwcrypto_decrypts_our_pin_block() -> None:
    token = make_pin_block("4321", "D" * 43, RECIPIENT.public_record(NOW - 3600, NOW + 3600))
    _, payload = _jwcrypto_decrypt(token, _private(RECIPIENT))
    assert json.loads(payload) == {"v": 1, "pin": "4321", "order_digest": "D" * 43}


@pytest.mark.parametrize(
    "vector",
    [vector for vector in VECTORS["valid"] if vector["operation"] in ("unseal", "open_pin_block")],
    ids=lambda vector: vector["name"],
)
def test_jwcrypto_decrypts_every_sealed_vector(vector: dict[str, Any]) -> None:
    key = jwcrypto_jwk.JWK(**KEYS_BY_KID[vector["recipient_kid"]]["private_jwk"])
    header, payload = _jwcrypto_decrypt(vector["token"], key)
    assert header["kid"] == vector["recipient_kid"]
    assert json.loads(payload) == vector["claims"]


def test_jwcrypto_computes_the_same_thumbprint() -> None:
    """Our kids end in the RFC 7638 thumbprint; jwcrypto must compute the same one."""
    for entry in VECTORS["keys"]:
        theirs = jwcrypto_jwk.JWK(**entry["public_jwk"]).thumbprint()
        assert theirs == thumbprint(entry["public_jwk"])
        assert entry["kid"] == f"{entry['owner']}:{theirs[:16]}"


# --- jwcrypto -> ours ------------------------------------------------------------------------


def test_we_verify_a_jwcrypto_signature() -> None:
    token = _jwcrypto_sign(
        canonical_json(CLAIMS), _private(SIGNER), {"alg": "ES256", "kid": SIGNER.kid}
    )
    verified = verify_message(token, RING, NOW)
    assert verified.claims == CLAIMS
    assert verified.signer.kid == SIGNER.kid
    signed = open_signed(token, TransferFulfil, RING, NOW)
    assert signed.message.to_claims() == CLAIMS


def test_we_refuse_a_jwcrypto_signature_whose_s_is_high() -> None:
    header = {"alg": "ES256", "kid": SIGNER.kid}
    token = _jwcrypto_sign(canonical_json(CLAIMS), _private(SIGNER), header, low=False)
    _jwcrypto_verify(token, _public(SIGNER))  # valid by RFC 7515 (ECDSA accepts both s) ...
    with pytest.raises(SemopsError) as refused:  # ... but malleable: SEMOPS wants low-S
        verify_message(token, RING, NOW)
    assert refused.value.code == "signature_invalid"


def test_jwcrypto_verifies_our_signatures_which_are_always_low_s() -> None:
    for _ in range(16):  # a high s would show up half of the time
        token = sign_message(CLAIMS, SIGNER)
        s = int.from_bytes(b64url_decode(token.split(".")[2])[32:], "big")
        assert 0 < s <= P256_ORDER // 2
        _jwcrypto_verify(token, _public(SIGNER))


def test_we_verify_a_jwcrypto_signature_over_non_canonical_json() -> None:
    """Another implementation need not send canonical JSON; the signature covers its bytes."""
    payload = json.dumps(CLAIMS, indent=1).encode()
    token = _jwcrypto_sign(payload, _private(SIGNER), {"kid": SIGNER.kid, "alg": "ES256"})
    assert verify_message(token, RING, NOW).claims == CLAIMS


def test_we_refuse_a_jwcrypto_signature_made_with_another_key() -> None:
    token = _jwcrypto_sign(
        canonical_json(CLAIMS), _private(OTHER_SIGNER), {"alg": "ES256", "kid": SIGNER.kid}
    )
    with pytest.raises(SemopsError) as refused:
        verify_message(token, RING, NOW)
    assert refused.value.code == "signature_invalid"


@pytest.mark.parametrize(
    "extra", [{"typ": "JWT"}, {"cty": "json"}, {"b64": True, "crit": ["b64"]}], ids=str
)
def test_we_refuse_a_jwcrypto_signature_with_extra_header_members(extra: dict[str, Any]) -> None:
    header = {"alg": "ES256", "kid": SIGNER.kid, **extra}
    token = _jwcrypto_sign(canonical_json(CLAIMS), _private(SIGNER), header)
    _jwcrypto_verify(token, _public(SIGNER))  # a valid signature by RFC 7515's rules ...
    with pytest.raises(SemopsError) as refused:  # ... but the SEMOPS header is exactly {alg, kid}
        verify_message(token, RING, NOW)
    assert refused.value.code == "signature_invalid"


def test_jwcrypto_seal_has_exactly_our_header_members() -> None:
    token = _jwcrypto_seal(canonical_json(CLAIMS), _public(RECIPIENT), RECIPIENT.kid)
    header = _protected_header(token)
    assert set(header) == {"alg", "enc", "kid", "epk"}, "jwcrypto adds members we refuse"
    assert set(header["epk"]) == {"kty", "crv", "x", "y"}


def test_we_open_a_jwcrypto_seal() -> None:
    token = _jwcrypto_seal(canonical_json(CLAIMS), _public(RECIPIENT), RECIPIENT.kid)
    assert open_sealed(token, RECIPIENT) == CLAIMS


def test_we_unseal_jwcrypto_transfer_details_and_pin_block() -> None:
    details = TransferDetails(
        transfer_id="tr_interop-0000000000000",
        request_id="rq_interop-0000000000000",
        payee_id="shop-42",
        payer_ref="R" * 43,
    )
    token = _jwcrypto_seal(canonical_json(details.to_claims()), _public(RECIPIENT), RECIPIENT.kid)
    assert unseal(token, TransferDetails, RECIPIENT) == details
    block = {"v": 1, "pin": "0042", "order_digest": "O" * 43}
    pin_block = _jwcrypto_seal(canonical_json(block), _public(RECIPIENT), RECIPIENT.kid)
    assert open_pin_block(pin_block, RECIPIENT, "O" * 43) == "0042"


def test_we_refuse_a_jwcrypto_seal_with_another_content_algorithm() -> None:
    sealer = jwcrypto_jwe.JWE(
        canonical_json(CLAIMS),
        protected=json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A128GCM", "kid": RECIPIENT.kid}),
    )
    sealer.add_recipient(_public(RECIPIENT))
    with pytest.raises(SemopsError) as refused:
        open_sealed(sealer.serialize(compact=True), RECIPIENT)
    assert refused.value.code == "seal_invalid"


def test_we_refuse_a_jwcrypto_seal_to_another_key_under_our_kid() -> None:
    stranger = _key("bank-z", KeyUse.ENCRYPT, "bank-z enc")
    token = _jwcrypto_seal(canonical_json(CLAIMS), _public(stranger), RECIPIENT.kid)
    with pytest.raises(SemopsError) as refused:
        open_sealed(token, RECIPIENT)
    assert refused.value.code == "seal_invalid"
