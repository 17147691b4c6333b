"""Interoperability with joserfc, the JOSE library the recipes were first written on.

The recipes now call `cryptography` directly. joserfc stays (as a test dependency only) as
an independent reading of RFC 7515/7516/7518: our tokens must verify and open under it, its
tokens under ours, in both directions, for signatures (ES256) and sealed parts
(ECDH-ES+A256KW, A256GCM); and where a token is deterministic (the protected header, the
JWS signing input) ours must be byte for byte what joserfc writes, since every stored and
exchanged token was made that way. jwcrypto is the other independent implementation
(test_interop.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwe as joserfc_jwe
from joserfc import jws as joserfc_jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from joserfc.registry import HeaderParameter
from joserfc.util import json_b64encode

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
    verify_message,
)
from semops.crypto.jose import P256_ORDER, is_low_s

NOW: Final = 1_790_000_000
SIGN_ALGS: Final = ["ES256"]
SEAL_ALGS: Final = ["ECDH-ES+A256KW", "A256GCM"]


def _key(owner: str, use: KeyUse, label: str) -> PrivateKey:
    return derive_key(
        owner, use, hashlib.sha384(f"SEMOPS joserfc interop TEST key {label}".encode()).digest()
    )


SIGNER: Final = _key("bank-b", KeyUse.SIGN, "bank-b sig")
OTHER_SIGNER: Final = _key("bank-x", KeyUse.SIGN, "bank-x sig")
RECIPIENT: Final = _key("bank-a", KeyUse.ENCRYPT, "bank-a enc")
STRANGER: Final = _key("bank-z", KeyUse.ENCRYPT, "bank-z enc")
RECIPIENT_RECORD: Final = RECIPIENT.public_record(NOW - 3600, NOW + 3600)
RING: Final = KeyRing([SIGNER.public_record(NOW - 3600, NOW + 3600), RECIPIENT_RECORD])
CLAIMS: Final = {
    "v": 1,
    "type": "TransferFulfil",
    "transfer_id": "tr_interop-0000000000000",
    "payee_processor": "bank-b",
    "fulfilment": "A" * 43,
    "fulfilled_at": NOW,
    "note": "Grüße \u2028 \U0001f600",
}
# Claims of every shape a message takes: strings of any Unicode, integers, nesting.
_claims = st.dictionaries(
    st.text(max_size=12),
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=10,
    ),
    max_size=6,
)


def _public(key: PrivateKey) -> ECKey:
    return ECKey.import_key(dict(public_jwk(key.key)))


def _private(key: PrivateKey) -> ECKey:
    return ECKey.import_key(key.key)


def _joserfc_verify(token: str, key: PrivateKey) -> tuple[dict[str, Any], bytes]:
    verified = joserfc_jws.deserialize_compact(token, _public(key), algorithms=SIGN_ALGS)
    return verified.protected, verified.payload


def _joserfc_decrypt(token: str, key: PrivateKey) -> tuple[dict[str, Any], bytes]:
    opened = joserfc_jwe.decrypt_compact(token, _private(key), algorithms=SEAL_ALGS)
    assert opened.plaintext is not None
    return opened.protected, opened.plaintext


def _with_s(token: str, *, low: bool) -> str:
    """The token with its signature's s made low (or high): (r, s) and (r, n - s)."""
    head, body, signature = token.split(".")
    raw = b64url_decode(signature)
    s = int.from_bytes(raw[32:], "big")
    if low != (s <= P256_ORDER // 2):
        s = P256_ORDER - s
    return f"{head}.{body}.{b64url_encode(raw[:32] + s.to_bytes(32, 'big'))}"


def _joserfc_sign(payload: bytes, key: PrivateKey, header: dict[str, Any]) -> str:
    """A joserfc JWS, its s as OpenSSL made it (high half of the time)."""
    return joserfc_jws.serialize_compact(header, payload, _private(key), algorithms=SIGN_ALGS)


def _joserfc_seal(payload: bytes, recipient: PrivateKey, header: dict[str, Any]) -> str:
    return joserfc_jwe.encrypt_compact(header, payload, _public(recipient), algorithms=SEAL_ALGS)


def _seal_header(kid: str = RECIPIENT.kid, **extra: Any) -> dict[str, Any]:
    return {"alg": SEAL_ALGS[0], "enc": SEAL_ALGS[1], "kid": kid, **extra}


def _code(call: Any) -> str:
    with pytest.raises(SemopsError) as refused:
        call()
    return refused.value.code


# --- Byte for byte what joserfc writes -------------------------------------------------------


def test_our_signing_input_is_joserfcs_byte_for_byte() -> None:
    ours = sign_message(CLAIMS, SIGNER)
    theirs = _joserfc_sign(canonical_json(CLAIMS), SIGNER, {"alg": "ES256", "kid": SIGNER.kid})
    assert ours.split(".")[:2] == theirs.split(".")[:2]


def test_our_sealed_header_is_serialised_as_joserfc_serialises_it() -> None:
    ours = seal_for(CLAIMS, RECIPIENT_RECORD)
    header_part = ours.split(".")[0]
    header = json.loads(b64url_decode(header_part))
    assert json_b64encode(header).decode("ascii") == header_part  # members, order, separators
    theirs = json.loads(
        b64url_decode(_joserfc_seal(b"{}", RECIPIENT, _seal_header()).split(".")[0])
    )
    assert list(header) == list(theirs) == ["alg", "enc", "kid", "epk"]
    assert list(header["epk"]) == list(theirs["epk"]) == ["crv", "x", "y", "kty"]


def test_our_sealed_parts_have_joserfcs_segment_lengths() -> None:
    for size in (0, 1, 15, 16, 17, 300):
        claims = {"pad": "x" * size}
        ours = [len(part) for part in seal_for(claims, RECIPIENT_RECORD).split(".")]
        theirs = _joserfc_seal(canonical_json(claims), RECIPIENT, _seal_header())
        assert ours == [len(part) for part in theirs.split(".")]
        assert ours[1:3] == [54, 16] and ours[4] == 22  # 40-byte wrapped key, 12 IV, 16 tag


# --- Ours -> joserfc -------------------------------------------------------------------------


def test_joserfc_verifies_our_signature() -> None:
    token = sign_message(CLAIMS, SIGNER)
    header, payload = _joserfc_verify(token, SIGNER)
    assert header == {"alg": "ES256", "kid": SIGNER.kid}
    assert payload == canonical_json(CLAIMS)


def test_joserfc_refuses_our_signature_under_another_key() -> None:
    with pytest.raises(JoseError):
        _joserfc_verify(sign_message(CLAIMS, SIGNER), OTHER_SIGNER)


@settings(max_examples=40, deadline=None)
@given(claims=_claims)
def test_joserfc_verifies_our_signature_over_any_claims(claims: dict[str, Any]) -> None:
    token = sign_message(claims, SIGNER)
    assert is_low_s(b64url_decode(token.split(".")[2]))
    assert _joserfc_verify(token, SIGNER)[1] == canonical_json(claims)


def test_joserfc_decrypts_our_sealed_part() -> None:
    token = seal_for(CLAIMS, RECIPIENT_RECORD)
    header, payload = _joserfc_decrypt(token, RECIPIENT)
    assert set(header) == {"alg", "enc", "kid", "epk"}
    assert (header["alg"], header["enc"], header["kid"]) == (*SEAL_ALGS, RECIPIENT.kid)
    assert set(header["epk"]) == {"kty", "crv", "x", "y"}
    assert json.loads(payload) == CLAIMS


def test_joserfc_cannot_open_our_sealed_part_with_another_key() -> None:
    with pytest.raises(JoseError):
        _joserfc_decrypt(seal_for(CLAIMS, RECIPIENT_RECORD), STRANGER)


@settings(max_examples=40, deadline=None)
@given(claims=_claims)
def test_joserfc_decrypts_our_sealed_part_of_any_claims(claims: dict[str, Any]) -> None:
    token = seal_for(claims, RECIPIENT_RECORD)
    assert _joserfc_decrypt(token, RECIPIENT)[1] == canonical_json(claims)


def test_joserfc_decrypts_our_pin_block() -> None:
    token = make_pin_block("4321", "D" * 43, RECIPIENT_RECORD)
    assert json.loads(_joserfc_decrypt(token, RECIPIENT)[1]) == {
        "v": 1,
        "pin": "4321",
        "order_digest": "D" * 43,
    }


def test_every_seal_has_a_fresh_ephemeral_key_content_key_and_iv() -> None:
    tokens = [seal_for(CLAIMS, RECIPIENT_RECORD).split(".") for _ in range(8)]
    for part in range(5):
        assert len({token[part] for token in tokens}) == len(tokens)


# --- joserfc -> ours -------------------------------------------------------------------------


def test_we_verify_joserfcs_signatures_once_s_is_low_and_refuse_them_while_high() -> None:
    header = {"alg": "ES256", "kid": SIGNER.kid}
    for number in range(16):  # OpenSSL's s is high half of the time
        claims = {**CLAIMS, "n": number}
        token = _joserfc_sign(canonical_json(claims), SIGNER, header)
        low, high = _with_s(token, low=True), _with_s(token, low=False)
        _joserfc_verify(high, SIGNER)  # valid by RFC 7515, which accepts either s ...
        assert verify_message(low, RING, NOW).claims == claims
        # ... but one message must have one token: SEMOPS refuses the high twin.
        assert _code(lambda high=high: verify_message(high, RING, NOW)) == "signature_invalid"


def test_we_verify_a_joserfc_signature_over_non_canonical_json() -> None:
    payload = json.dumps(CLAIMS, indent=2).encode()
    token = _with_s(_joserfc_sign(payload, SIGNER, {"kid": SIGNER.kid, "alg": "ES256"}), low=True)
    assert verify_message(token, RING, NOW).claims == CLAIMS


def test_we_refuse_a_joserfc_signature_made_with_another_key() -> None:
    token = _joserfc_sign(canonical_json(CLAIMS), OTHER_SIGNER, {"alg": "ES256", "kid": SIGNER.kid})
    assert _code(lambda: verify_message(_with_s(token, low=True), RING, NOW)) == (
        "signature_invalid"
    )


@pytest.mark.parametrize(
    "extra",
    [
        {"typ": "JWT"},
        {"cty": "json"},
        {"crit": ["exp"], "exp": NOW},
        {"jwk": public_jwk(SIGNER.key)},  # the signer's own key, embedded: still refused
    ],
    ids=["typ", "cty", "crit", "jwk"],
)
def test_we_refuse_a_joserfc_signature_with_extra_header_members(extra: dict[str, Any]) -> None:
    header = {"alg": "ES256", "kid": SIGNER.kid, **extra}
    registry = joserfc_jws.JWSRegistry(
        header_registry={"exp": HeaderParameter("Expiry", "int")}, strict_check_header=False
    )
    signed = joserfc_jws.serialize_compact(
        header, canonical_json(CLAIMS), _private(SIGNER), algorithms=SIGN_ALGS, registry=registry
    )
    token = _with_s(signed, low=True)
    # A valid signature by RFC 7515's rules (and joserfc's) ...
    joserfc_jws.deserialize_compact(token, _public(SIGNER), algorithms=SIGN_ALGS, registry=registry)
    # ... but the SEMOPS header is exactly {alg, kid}.
    assert _code(lambda: verify_message(token, RING, NOW)) == "signature_invalid"


def test_we_open_a_joserfc_seal() -> None:
    token = _joserfc_seal(canonical_json(CLAIMS), RECIPIENT, _seal_header())
    assert open_sealed(token, RECIPIENT) == CLAIMS


@settings(max_examples=40, deadline=None)
@given(claims=_claims)
def test_we_open_a_joserfc_seal_of_any_claims(claims: dict[str, Any]) -> None:
    token = _joserfc_seal(canonical_json(claims), RECIPIENT, _seal_header())
    assert open_sealed(token, RECIPIENT) == claims


def test_we_open_a_joserfc_pin_block() -> None:
    block = {"v": 1, "pin": "0042", "order_digest": "O" * 43}
    token = _joserfc_seal(canonical_json(block), RECIPIENT, _seal_header())
    assert open_pin_block(token, RECIPIENT, "O" * 43) == "0042"


@pytest.mark.parametrize(
    "header",
    [
        _seal_header(enc="A128GCM"),
        _seal_header(apu="QWxpY2U", apv="Qm9i"),  # a KDF input SEMOPS never uses
        _seal_header(cty="json"),
        _seal_header(kid="bank-a:AAAAAAAAAAAAAAAA"),
    ],
    ids=["A128GCM", "apu-apv", "cty", "another-kid"],
)
def test_we_refuse_a_joserfc_seal_with_another_header(header: dict[str, Any]) -> None:
    registry = joserfc_jwe.JWERegistry(strict_check_header=False)
    token = joserfc_jwe.encrypt_compact(
        header,
        canonical_json(CLAIMS),
        _public(RECIPIENT),
        algorithms=[*SEAL_ALGS, "A128GCM"],
        registry=registry,
    )
    opened = joserfc_jwe.decrypt_compact(  # it opens by RFC 7516's rules (and joserfc's) ...
        token, _private(RECIPIENT), algorithms=[*SEAL_ALGS, "A128GCM"], registry=registry
    )
    assert opened.plaintext == canonical_json(CLAIMS)
    # ... but not under the SEMOPS profile: exactly {alg, enc, kid, epk}, our kid, A256GCM.
    assert _code(lambda: open_sealed(token, RECIPIENT)) == "seal_invalid"


def test_we_refuse_a_joserfc_seal_to_another_key_under_our_kid() -> None:
    token = _joserfc_seal(canonical_json(CLAIMS), STRANGER, _seal_header())
    assert _code(lambda: open_sealed(token, RECIPIENT)) == "seal_invalid"
