"""The crypto recipes: the only package that touches key material.

Callers use these few safe functions; none of them hands out a primitive.
"""

from semops.crypto.hashlock import check_fulfilment, condition_for, make_fulfilment
from semops.crypto.jose import (
    VerifiedMessage,
    open_sealed,
    read_unverified_claims,
    read_unverified_kid,
    seal_for,
    sign_message,
    verify_message,
)
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import (
    KeyStatus,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    check_public_jwk,
    derive_key,
    derive_private_key,
    make_kid,
    private_key_for,
    public_jwk,
    thumbprint,
)
from semops.crypto.pin import (
    PinCheck,
    check_pin,
    check_pin_format,
    make_pin_block,
    open_pin_block,
    pin_verification_value,
)
from semops.crypto.pseudonym import payer_reference

__all__ = [
    "KeyRing",
    "KeyStatus",
    "KeyUse",
    "PinCheck",
    "PrivateKey",
    "PublicKeyRecord",
    "VerifiedMessage",
    "check_fulfilment",
    "check_pin",
    "check_pin_format",
    "check_public_jwk",
    "condition_for",
    "derive_key",
    "derive_private_key",
    "make_fulfilment",
    "make_kid",
    "make_pin_block",
    "open_pin_block",
    "open_sealed",
    "payer_reference",
    "pin_verification_value",
    "private_key_for",
    "public_jwk",
    "read_unverified_claims",
    "read_unverified_kid",
    "seal_for",
    "sign_message",
    "thumbprint",
    "verify_message",
]
