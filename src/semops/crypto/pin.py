"""The PIN: sealed to one order, checked against a keyed value, locked after failures.

Theory of operation (DESIGN.md §6):

- The wallet never sends a PIN in the clear. It seals {PIN, order digest} to the payer
  processor's encryption key (a JWE "PIN block"). The processor opens it and refuses it
  unless the digest equals the digest of the order it arrived with: a PIN block captured
  from one order cannot authorise another amount, payee or account (dynamic linking).
- The processor stores only HMAC-SHA-256(PIN key, credential id ‖ PIN), the PIN
  verification value. The PIN key is held apart from the database (a file or environment
  variable, as a bank's HSM holds it), so a stolen database does not yield PINs by an
  offline search of the small PIN space. A slow hash would not help here (10^6 guesses)
  and would cap throughput; the key held apart and the lockout do the protecting.
- Consecutive wrong PINs lock the credential after PIN_ATTEMPTS_MAX; a right PIN resets
  the count; a locked credential is refused before the PIN is even compared.

Nothing here logs, stores or returns a PIN except `open_pin_block`, whose caller verifies
it in memory and drops it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final

from semops.core.errors import E, SemopsError
from semops.core.limits import PIN_ATTEMPTS_MAX, PIN_MAX_DIGITS, PIN_MIN_DIGITS
from semops.crypto.jose import open_sealed, seal_for
from semops.crypto.keys import PrivateKey, PublicKeyRecord

PIN_BLOCK_VERSION: Final = 1
PIN_KEY_MIN_BYTES: Final = 32
_PIN_RE: Final = re.compile(rf"[0-9]{{{PIN_MIN_DIGITS},{PIN_MAX_DIGITS}}}")
_DOMAIN: Final = b"semops-pin-v1\x00"


def check_pin_format(pin: str) -> str:
    if not isinstance(pin, str) or not _PIN_RE.fullmatch(pin):
        raise SemopsError(E.PIN_FORMAT)
    return pin


def make_pin_block(pin: str, order_digest: str, processor_key: PublicKeyRecord) -> str:
    """Seal the PIN to the payer processor, bound to one order digest."""
    check_pin_format(pin)
    claims = {"v": PIN_BLOCK_VERSION, "pin": pin, "order_digest": order_digest}
    return seal_for(claims, processor_key)


def open_pin_block(pin_block: str, key: PrivateKey, expected_order_digest: str) -> str:
    """The PIN, if the block opens with our key and is bound to this very order."""
    claims = open_sealed(pin_block, key)
    # The version is the int 1, not anything equal to it (`true == 1` in Python).
    version = claims.get("v")
    if (
        set(claims) != {"v", "pin", "order_digest"}
        or type(version) is not int
        or version != PIN_BLOCK_VERSION
    ):
        raise SemopsError(E.SEAL_INVALID)
    digest = claims["order_digest"]
    if not isinstance(digest, str) or not hmac.compare_digest(
        digest.encode("utf-8"), expected_order_digest.encode("utf-8")
    ):
        raise SemopsError(E.PIN_BLOCK_MISMATCH)
    return check_pin_format(claims["pin"])


def pin_verification_value(pin_key: bytes, credential_id: str, pin: str) -> bytes:
    """HMAC-SHA-256 under the PIN key, bound to the credential so equal PINs differ."""
    if len(pin_key) < PIN_KEY_MIN_BYTES:
        raise ValueError(f"the PIN key must be at least {PIN_KEY_MIN_BYTES} bytes")
    check_pin_format(pin)
    message = _DOMAIN + credential_id.encode("utf-8") + b"\x00" + pin.encode("ascii")
    return hmac.new(pin_key, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class PinCheck:
    """The outcome of one PIN attempt: store `failures` and `locked`, then raise `error`."""

    failures: int
    locked: bool
    error: SemopsError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_pin(
    pin_key: bytes,
    credential_id: str,
    pin: str,
    stored_value: bytes,
    failures_before: int,
    locked_before: bool,
    attempts_max: int = PIN_ATTEMPTS_MAX,
) -> PinCheck:
    """Decide one attempt. A locked credential stays locked and is not compared at all."""
    if locked_before:
        return PinCheck(failures_before, True, SemopsError(E.PIN_LOCKED))
    candidate = pin_verification_value(pin_key, credential_id, pin)
    if hmac.compare_digest(candidate, stored_value):
        return PinCheck(0, False, None)
    failures = failures_before + 1
    if failures >= attempts_max:
        return PinCheck(failures, True, SemopsError(E.PIN_LOCKED))
    remaining = attempts_max - failures
    return PinCheck(failures, False, SemopsError(E.PIN_INVALID, attempts_remaining=remaining))
