"""Typed messages on the wire: sign and open, seal and unseal, with every check in order.

`open_signed` is what every receiving party calls, and the order of its checks is fixed:

1. size, JOSE structure and header (one opaque `signature_invalid`);
2. key lookup by kid: unknown, revoked, expired or wrong-use keys are refused;
3. the signature itself;
4. version, type and strict field validation of the claims;
5. the signer: the key's owner must be the party the message says signed it (a bank
   cannot sign a prepare in the name of another bank), and the expected one if given;
6. freshness: not dated in the future beyond the clock skew, not expired.

Only a message that passed all six reaches business logic; the idempotency decision
(`replay.decide`) comes next, in the shell, against what the party has stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from semops.core.errors import E, SemopsError
from semops.crypto.jose import open_sealed, seal_for, sign_message, verify_message
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import PrivateKey, PublicKeyRecord
from semops.protocol.messages import Message, parse_claims
from semops.protocol.replay import check_fresh

M = TypeVar("M", bound=Message)
# No age limit for replies without an expiry (their ids and the state machines stop replays).
MAX_AGE_UNBOUNDED_S = 2**40


@dataclass(frozen=True, slots=True)
class Signed(Generic[M]):
    """A message that passed every check, with who signed it and the exact token."""

    message: M
    signer: PublicKeyRecord
    token: str


def sign(message: Message, key: PrivateKey) -> str:
    """The compact JWS of a message; the key must belong to the party the message names."""
    signer = message.signer_party()
    if signer is not None and signer != key.owner:
        raise SemopsError(E.SIGNER_MISMATCH, "the key's owner is not the message's signer")
    return sign_message(message.to_claims(), key, max_bytes=message.TOKEN_MAX_BYTES)


def open_signed(
    token: str,
    expected: type[M],
    ring: KeyRing,
    now: int,
    *,
    expected_signer: str | None = None,
    check_freshness: bool = True,
) -> Signed[M]:
    verified = verify_message(token, ring, now, max_bytes=expected.TOKEN_MAX_BYTES)
    message = parse_claims(verified.claims, expected)
    owner = verified.signer_owner
    named = message.signer_party()
    if named is not None and named != owner:
        raise SemopsError(E.SIGNER_MISMATCH, "signed by a party other than the one named")
    if expected_signer is not None and owner != expected_signer:
        raise SemopsError(E.SIGNER_MISMATCH, "not signed by the expected party")
    window = message.dated_window()
    if check_freshness and window is not None:
        dated_at, expires_at = window
        if expires_at is None:
            # A reply (fulfil, status, notice, receipt) has no expiry of its own: it is
            # re-read from storage long after, so only a date in the future is refused.
            check_fresh(dated_at, None, now, max_age_s=MAX_AGE_UNBOUNDED_S)
        else:
            check_fresh(dated_at, expires_at, now, expired=SemopsError(expected.EXPIRED_ERROR))
    return Signed(message, verified.signer, token)


def seal(message: Message, recipient: PublicKeyRecord) -> str:
    return seal_for(message.to_claims(), recipient)


def unseal(token: str, expected: type[M], key: PrivateKey) -> M:
    claims = open_sealed(token, key)
    return parse_claims(claims, expected)
