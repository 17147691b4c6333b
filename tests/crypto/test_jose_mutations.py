"""Random mutations of valid tokens: only SemopsError, only the one opaque code.

The recipes parse untrusted text with hand-written code on top of `cryptography`, so any
exception they let through (an IndexError, a KeyError from a header member, a TypeError
from a JSON value of the wrong type, OverflowError, cryptography's InvalidTag) would be a
crash and a 500 instead of a refusal, and a type or message that differs by where parsing
failed would be an oracle. Thousands of seeded mutations of valid tokens, both at the
character level and structurally (re-encoded headers with wrong members, values, types and
ephemeral keys; segments of the wrong length), must each raise SemopsError with exactly the
code the recipe promises: `signature_invalid` (or `key_unknown` for a kid that names no
key: the directory is public) and `seal_invalid`.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from typing import Any, Final

import pytest

from semops.core.encoding import b64url_decode, b64url_encode
from semops.core.errors import SemopsError
from semops.crypto import (
    KeyRing,
    KeyUse,
    PrivateKey,
    derive_key,
    open_sealed,
    public_jwk,
    seal_for,
    sign_message,
    verify_message,
)
from semops.crypto.jose import P256_ORDER

NOW: Final = 1_790_000_000
MUTATIONS: Final = 3000
P256_PRIME: Final = 2**256 - 2**224 + 2**192 + 2**96 - 1
B64URL: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Characters a mutation may insert: base64url, the other alphabets, separators, padding,
# white space, control and non-ASCII characters.
NOISE: Final = B64URL + "+/=.. \t\n\x00\x7fé€\U0001f600"


def _key(owner: str, use: KeyUse, label: str) -> PrivateKey:
    return derive_key(owner, use, hashlib.sha384(f"SEMOPS mutation TEST {label}".encode()).digest())


SIGNER: Final = _key("bank-a", KeyUse.SIGN, "sig")
RECIPIENT: Final = _key("bank-b", KeyUse.ENCRYPT, "enc")
OTHER: Final = _key("bank-c", KeyUse.ENCRYPT, "other enc")
RING: Final = KeyRing([SIGNER.public_record(NOW - 60, NOW + 60)])
CLAIMS: Final = {"v": 1, "type": "TransferDetails", "amount_minor": 1250, "note": "Grüße"}
JWS: Final = sign_message(CLAIMS, SIGNER)
JWE: Final = seal_for(CLAIMS, RECIPIENT.public_record(NOW - 60, NOW + 60))


# --- Character-level mutations -------------------------------------------------------------


def _replace(rng: random.Random, token: str) -> str:
    at = rng.randrange(len(token))
    return token[:at] + rng.choice(NOISE) + token[at + 1 :]


def _delete(rng: random.Random, token: str) -> str:
    at = rng.randrange(len(token))
    return token[:at] + token[at + 1 :]


def _insert(rng: random.Random, token: str) -> str:
    at = rng.randrange(len(token) + 1)
    return token[:at] + "".join(rng.choices(NOISE, k=rng.randint(1, 4))) + token[at:]


def _truncate(rng: random.Random, token: str) -> str:
    return token[: rng.randrange(len(token))]


def _decoded(text: str) -> bytes | None:
    try:
        return b64url_decode(text)
    except SemopsError:  # an earlier mutation broke the segment's base64url
        return None


def _flip_bit(rng: random.Random, token: str) -> str:
    """One bit of one decoded segment flipped, re-encoded canonically."""
    parts = token.split(".")
    index = rng.randrange(len(parts))
    decoded = _decoded(parts[index])
    if decoded is None:
        return _replace(rng, token)
    raw = bytearray(decoded)
    if not raw:
        return token + "A"
    at = rng.randrange(len(raw))
    raw[at] ^= 1 << rng.randrange(8)
    parts[index] = b64url_encode(bytes(raw))
    return ".".join(parts)


def _resize_segment(rng: random.Random, token: str) -> str:
    """A segment one or a few bytes longer or shorter (lengths are checked exactly)."""
    parts = token.split(".")
    index = rng.randrange(len(parts))
    raw = _decoded(parts[index])
    if raw is None:
        return _delete(rng, token)
    change = rng.choice([-8, -4, -1, 1, 4, 8])
    raw = raw[:change] if change < 0 else raw + bytes(rng.randrange(256) for _ in range(change))
    parts[index] = b64url_encode(raw)
    return ".".join(parts)


def _shuffle_segments(rng: random.Random, token: str) -> str:
    parts = token.split(".")
    choice = rng.randrange(4)
    if choice == 0:
        rng.shuffle(parts)
    elif choice == 1:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(parts))
    elif choice == 2:
        parts.pop(rng.randrange(len(parts)))
    else:
        parts[rng.randrange(len(parts))] = ""
    return ".".join(parts)


def _random_segment(rng: random.Random, token: str) -> str:
    parts = token.split(".")
    parts[rng.randrange(len(parts))] = b64url_encode(rng.randbytes(rng.randrange(80)))
    return ".".join(parts)


# --- Structural mutations of the protected header -------------------------------------------

_ODD_VALUES: Final = [None, True, 0, -1, 2**64, "", "x" * 300, [], {}, ["ES256"], {"a": 1}]


def _coordinate(value: int, size: int = 32) -> str:
    return b64url_encode(value.to_bytes(size, "big"))


def _epk_variants(epk: dict[str, Any]) -> list[Any]:
    other = public_jwk(OTHER.key)  # a valid point, but not the one the key was agreed with
    return [
        other,
        {**epk, "y": epk["x"]},  # not on the curve
        {**epk, "x": _coordinate(0), "y": _coordinate(0)},
        {**epk, "x": _coordinate(P256_PRIME)},
        {**epk, "x": _coordinate(5), "y": _coordinate(P256_PRIME + 5, 33)[1:]},
        {**epk, "x": epk["x"][:-1]},
        {**epk, "x": epk["x"] + "A"},
        {**epk, "x": b64url_encode(b"\x00" + b64url_decode(epk["x"]))},
        {**epk, "x": epk["x"] + "="},
        {**epk, "crv": "P-384"},
        {**epk, "crv": "secp256k1"},
        {**epk, "crv": "X25519", "kty": "OKP"},
        {**epk, "kty": "RSA"},
        {**epk, "d": _coordinate(1)},
        {**epk, "kid": "x"},
        {key: value for key, value in epk.items() if key != "y"},
        {**epk, "x": int.from_bytes(b64url_decode(epk["x"]), "big")},
        *_ODD_VALUES,
    ]


def _header_variants(header: dict[str, Any]) -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = []
    for member in header:
        variants.append({key: value for key, value in header.items() if key != member})
        variants.extend({**header, member: odd} for odd in _ODD_VALUES)
    for extra in ("crit", "typ", "cty", "zip", "jku", "jwk", "x5u", "x5c", "b64", "apu", "apv"):
        variants.append({**header, extra: "DEF" if extra == "zip" else ["alg"]})
    variants += [
        {**header, "alg": "none"},
        {**header, "alg": "HS256"},
        {**header, "alg": "ES256K"},
        {**header, "alg": "ECDH-ES"},
        {**header, "alg": "ECDH-ES+A128KW"},
        {**header, "enc": "A128GCM"},
        {**header, "enc": "A256CBC-HS512"},
        {**header, "kid": header["kid"] + "x"},
        {**header, "kid": header["kid"].upper()},
    ]
    if "epk" in header:
        variants.extend({**header, "epk": epk} for epk in _epk_variants(header["epk"]))
    return variants


def _raw_header_variants(header: dict[str, Any]) -> list[bytes]:
    text = json.dumps(header, separators=(",", ":"))
    return [
        text.encode() + b" ",
        b" " + text.encode(),
        text.replace('"alg"', '"alg":"none","alg"', 1).encode(),  # a duplicate member
        text.replace(":", ": ").encode(),  # the same header with white space
        b"\xef\xbb\xbf" + text.encode(),
        text.encode("utf-16"),
        text[:-1].encode(),
        b"[" + text.encode() + b"]",
        b"null",
        b"",
        text.encode().replace(b'"', b"'"),
        text.replace("1", "1.0").encode(),
    ]


def _with_header(token: str, header: dict[str, Any] | bytes) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return ".".join([b64url_encode(raw), *token.split(".")[1:]])


def _header_of(token: str) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(token.split(".")[0]))
    return header


MUTATORS: Final[list[Callable[[random.Random, str], str]]] = [
    _replace,
    _delete,
    _insert,
    _truncate,
    _flip_bit,
    _resize_segment,
    _shuffle_segments,
    _random_segment,
]


def _mutations(token: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    mutated: list[str] = []
    while len(mutated) < MUTATIONS:
        candidate = token
        for _ in range(rng.choice([1, 1, 1, 2, 3])):  # mostly one change, sometimes a few
            candidate = rng.choice(MUTATORS)(rng, candidate or token)
        if candidate != token:
            mutated.append(candidate)
    header = _header_of(token)
    structural = [_with_header(token, variant) for variant in _header_variants(header)]
    structural += [_with_header(token, raw) for raw in _raw_header_variants(header)]
    return mutated + [variant for variant in structural if variant != token]


def _code_of(call: Callable[[], Any]) -> str:
    """The code of the SemopsError the call raises; any other exception fails the test."""
    try:
        call()
    except SemopsError as refused:
        return refused.code
    raise AssertionError("a mutated token was accepted")


# --- The verdicts ----------------------------------------------------------------------------


def test_the_unmutated_tokens_are_valid() -> None:
    assert verify_message(JWS, RING, NOW).claims == CLAIMS
    assert open_sealed(JWE, RECIPIENT) == CLAIMS


def test_every_mutation_of_a_signed_message_is_signature_invalid_or_an_unknown_kid() -> None:
    counts: dict[str, int] = {}
    for mutated in _mutations(JWS, seed=7515):
        code = _code_of(lambda mutated=mutated: verify_message(mutated, RING, NOW))
        assert code in ("signature_invalid", "key_unknown"), (mutated, code)
        if code == "key_unknown":  # only ever for a header naming another kid
            assert _header_of(mutated)["kid"] != SIGNER.kid
        counts[code] = counts.get(code, 0) + 1
    assert counts["signature_invalid"] > MUTATIONS // 2


def test_every_mutation_of_a_sealed_part_is_seal_invalid() -> None:
    for mutated in _mutations(JWE, seed=7516):
        code = _code_of(lambda mutated=mutated: open_sealed(mutated, RECIPIENT))
        assert code == "seal_invalid", (mutated, code)


@pytest.mark.parametrize("seed", range(4))
def test_a_valid_epk_with_a_re_encrypted_header_still_fails_only_as_seal_invalid(
    seed: int,
) -> None:
    """A header re-encoded with a valid point of the attacker's choosing reaches the ECDH,
    the key unwrap and the GCM check with real values: each must fail opaquely."""
    rng = random.Random(seed)
    rest = JWE.split(".")[1:]
    header = _header_of(JWE)
    other = public_jwk(_key("bank-x", KeyUse.ENCRYPT, f"epk {seed}").key)
    forged = {**header, "epk": {"crv": "P-256", "x": other["x"], "y": other["y"], "kty": "EC"}}
    for part in range(1, 5):
        raw = bytearray(b64url_decode(rest[part - 1]))
        if raw:
            raw[rng.randrange(len(raw))] ^= 1
        parts = [json.dumps(forged).encode(), *(b64url_decode(segment) for segment in rest)]
        parts[part] = bytes(raw)
        token = ".".join([b64url_encode(parts[0]), *(b64url_encode(p) for p in parts[1:])])
        assert _code_of(lambda token=token: open_sealed(token, RECIPIENT)) == "seal_invalid"
    assert _code_of(lambda: open_sealed(_with_header(JWE, forged), RECIPIENT)) == "seal_invalid"


def test_signatures_with_r_or_s_out_of_range_are_signature_invalid() -> None:
    head, body, signature = JWS.split(".")
    raw = b64url_decode(signature)
    r, s = raw[:32], raw[32:]
    n = P256_ORDER.to_bytes(32, "big")
    for forged in (
        bytes(32) + s,
        r + bytes(32),
        n + s,
        r + n,
        b"\xff" * 32 + s,
        r + (P256_ORDER - int.from_bytes(s, "big")).to_bytes(32, "big"),  # the high twin
        r + s + b"\x00",
        raw[:-1],
    ):
        token = f"{head}.{body}.{b64url_encode(forged)}"
        assert _code_of(lambda token=token: verify_message(token, RING, NOW)) == (
            "signature_invalid"
        )
