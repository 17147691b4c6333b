"""The golden vectors: stored tokens that must keep verifying, and keep being refused.

`vectors.json` is generated once by `generate.py` and checked in (signatures and JWE are
randomized, so regenerating changes every token). These tests never regenerate it for the
verdicts: they verify the *stored* tokens with the current code at each vector's
verification time. A change that breaks a stored token breaks interoperability with every
party that still holds one.

A fresh in-memory build is compared with the file only for *structure* (names, types, kids,
times, expected errors, and claims with embedded tokens masked), so a new message type or a
changed field cannot be added without regenerating and reviewing the vectors.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from semops.core.encoding import b64url_decode, b64url_encode, digest_of, sha256_b64url
from semops.core.errors import SemopsError, lookup
from semops.crypto import (
    KeyRing,
    KeyStatus,
    KeyUse,
    PrivateKey,
    PublicKeyRecord,
    condition_for,
    derive_key,
    make_kid,
    open_pin_block,
    open_sealed,
    payer_reference,
    pin_verification_value,
    private_key_for,
    public_jwk,
    read_unverified_claims,
)
from semops.crypto.pki import load_certificate_pem, validate_chain
from semops.protocol import (
    MESSAGE_TYPES,
    SEALED_MESSAGES,
    SIGNED_MESSAGES,
    DeviceAuth,
    Directory,
    Enrolment,
    ParticipantRegistration,
    PaymentOrder,
    PaymentRequest,
    TransferDetails,
    endorsement_signer,
    open_signed,
    order_digest_of,
    parse_claims,
    registration_digest_of,
    unseal,
)

from . import generate

VECTORS_PATH = Path(__file__).with_name("vectors.json")
DATA: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
VALID: list[dict[str, Any]] = DATA["valid"]
INVALID: list[dict[str, Any]] = DATA["invalid"]
_COMPACT_TOKEN = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*){2,4}$")


def _record(entry: dict[str, Any]) -> PublicKeyRecord:
    return PublicKeyRecord(
        kid=entry["kid"],
        owner=entry["owner"],
        use=KeyUse(entry["use"]),
        jwk=entry["public_jwk"],
        not_before=entry["not_before"],
        not_after=entry["not_after"],
        status=KeyStatus(entry["status"]),
    )


def _private(entry: dict[str, Any]) -> PrivateKey:
    scalar = int.from_bytes(b64url_decode(entry["private_jwk"]["d"]), "big")
    key = private_key_for(
        entry["owner"], KeyUse(entry["use"]), ec.derive_private_key(scalar, ec.SECP256R1())
    )
    assert key.kid == entry["kid"]
    return key


RING = KeyRing(_record(entry) for entry in DATA["keys"] if entry["in_ring"])
PRIVATE = {entry["kid"]: _private(entry) for entry in DATA["keys"] if "private_jwk" in entry}
PUBLIC_JWKS = {entry["kid"]: entry["public_jwk"] for entry in DATA["keys"]}


def _open(vector: dict[str, Any]) -> Any:
    """Run the receiving side's check for a vector; returns what it opened."""
    operation = vector["operation"]
    if operation == "open_signed":
        return open_signed(
            vector["token"],
            MESSAGE_TYPES[vector["message_type"]],
            RING,
            vector["verify_at"],
            expected_signer=vector.get("expected_signer"),
        )
    if operation == "unseal":
        return unseal(
            vector["token"], MESSAGE_TYPES[vector["message_type"]], PRIVATE[vector["recipient_kid"]]
        )
    if operation == "open_pin_block":
        digest = vector.get("expected_order_digest") or vector["claims"]["order_digest"]
        return open_pin_block(vector["token"], PRIVATE[vector["recipient_kid"]], digest)
    if operation == "order_pin_block":
        order = open_signed(vector["token"], PaymentOrder, RING, vector["verify_at"]).message
        return open_pin_block(
            order.pin_block, PRIVATE[vector["recipient_kid"]], order.order_digest()
        )
    if operation == "enrolment_pin_block":
        enrolment = open_signed(vector["token"], Enrolment, RING, vector["verify_at"]).message
        return open_pin_block(
            enrolment.pin_block, PRIVATE[vector["recipient_kid"]], enrolment.enrolment_digest()
        )
    if operation == "open_registration":
        return open_registration(vector["token"], vector["root_certificate"], vector["verify_at"])
    if operation == "open_rotation":
        return open_rotation(vector)
    raise AssertionError(f"unknown operation {operation}")


def certified_key(owner: str, pem: str) -> PublicKeyRecord:
    """The signing key a certificate certifies, as a key record of `owner`."""
    cert = load_certificate_pem(pem.encode("ascii"))
    jwk = public_jwk(cert.public_key())  # type: ignore[arg-type]
    return PublicKeyRecord(
        kid=make_kid(owner, jwk),
        owner=owner,
        use=KeyUse.SIGN,
        jwk=jwk,
        not_before=int(cert.not_valid_before_utc.timestamp()),
        not_after=int(cert.not_valid_after_utc.timestamp()),
    )


def open_registration(token: str, root_pem: str, now: int) -> Any:
    """What the router does with a registration: its signing key is not in any directory
    yet, so it reads the claims, checks both certificates against the scheme root for the
    participant named, and verifies the token with the certified key alone."""
    unverified = parse_claims(read_unverified_claims(token), ParticipantRegistration)
    root = load_certificate_pem(root_pem.encode("ascii"))
    at = datetime.fromtimestamp(now, UTC)
    owner = unverified.participant_id
    for pem, usage in (
        (unverified.sign_certificate, "sign"),
        (unverified.enc_certificate, "encrypt"),
    ):
        cert = load_certificate_pem(pem.encode("ascii"))
        validate_chain(cert, root, at, expected_party=owner, expected_usage=usage)  # type: ignore[arg-type]
    ring = KeyRing([certified_key(owner, unverified.sign_certificate)])
    return open_signed(token, ParticipantRegistration, ring, now)


def open_rotation(vector: dict[str, Any]) -> Any:
    """A rotation, as the router checks it: the registration opens with the key of the
    (new) certificate it carries, and its endorsement verifies under the key registered
    now (here: bank-a's key of the vector ring), bound to this very registration."""
    opened = open_registration(vector["token"], vector["root_certificate"], vector["verify_at"])
    current = next(record for record in RING if record.kid == vector["endorsed_by_kid"])
    assert endorsement_signer(opened.message, current, vector["verify_at"]) == current.kid
    return opened


@pytest.mark.parametrize("vector", VALID, ids=[vector["name"] for vector in VALID])
def test_valid_vector_opens_to_its_claims(vector: dict[str, Any]) -> None:
    opened = _open(vector)
    if vector["operation"] in ("open_signed", "open_rotation"):
        assert opened.message.to_claims() == vector["claims"]
        assert opened.signer.kid == vector["signer_kid"]
        assert opened.token == vector["token"]
        assert json.loads(b64url_decode(vector["token"].split(".")[0])) == {
            "alg": "ES256",
            "kid": vector["signer_kid"],
        }
    elif vector["operation"] == "unseal":
        assert opened.to_claims() == vector["claims"]
    else:
        assert opened == vector["claims"]["pin"]
        assert open_sealed(vector["token"], PRIVATE[vector["recipient_kid"]]) == vector["claims"]


def test_order_vector_carries_a_pin_block_bound_to_it() -> None:
    vector = _valid("PaymentOrder")
    order = open_signed(vector["token"], PaymentOrder, RING, vector["verify_at"]).message
    key = PRIVATE[vector["pin_block"]["recipient_kid"]]
    assert open_pin_block(order.pin_block, key, order.order_digest()) == vector["pin_block"]["pin"]
    assert order.pin_block == _valid("PinBlock")["token"]
    # The embedded request is the request vector itself, and still verifies on its own.
    assert order.request == _valid("PaymentRequest")["token"]
    open_signed(order.request, PaymentRequest, RING, vector["verify_at"])


@pytest.mark.parametrize("message_type", ["TransferPrepare", "RoutedPrepare"])
def test_prepare_vectors_carry_the_sealed_details(message_type: str) -> None:
    vector = _valid(message_type)
    prepare = open_signed(
        vector["token"], MESSAGE_TYPES[message_type], RING, vector["verify_at"]
    ).message
    details = unseal(prepare.sealed, TransferDetails, PRIVATE[vector["sealed_recipient_kid"]])  # type: ignore[attr-defined]
    assert details.transfer_id == prepare.transfer_id  # type: ignore[attr-defined]
    assert details.to_claims() == _valid("TransferDetails")["claims"]


@pytest.mark.parametrize("vector", INVALID, ids=[vector["name"] for vector in INVALID])
def test_invalid_vector_is_refused_with_its_code(vector: dict[str, Any]) -> None:
    with pytest.raises(SemopsError) as refused:
        _open(vector)
    assert refused.value.code == vector["error"], vector["why"]


@pytest.mark.parametrize(
    "vector",
    [vector for vector in INVALID if "validly_signed_by" in vector],
    ids=[vector["name"] for vector in INVALID if "validly_signed_by" in vector],
)
def test_invalid_vector_signature_is_as_recorded(vector: dict[str, Any]) -> None:
    """A "good signature over bad content" vector really has a good signature (so it is
    refused for its content), and a tampered one really has none."""
    signer = vector["validly_signed_by"]
    for kid, jwk in PUBLIC_JWKS.items():
        assert generate.es256_valid(vector["token"], jwk) is (kid == signer)


def test_registration_vector_passes_the_routers_checks() -> None:
    vector = _valid("ParticipantRegistration")
    opened = open_registration(vector["token"], vector["root_certificate"], vector["verify_at"])
    assert opened.message.to_claims() == vector["claims"]
    # The certified key is the very key the vector ring knows as bank-a's signing key.
    assert opened.signer.kid == vector["signer_kid"]
    assert opened.signer.jwk == PUBLIC_JWKS[vector["signer_kid"]]


def test_registration_certificates_certify_the_published_keys() -> None:
    vector = _valid("ParticipantRegistration")
    registration = parse_claims(vector["claims"], ParticipantRegistration)
    root = load_certificate_pem(vector["root_certificate"].encode("ascii"))
    at = datetime.fromtimestamp(vector["verify_at"], UTC)
    # The participant's current keys, labelled "<party>-sig" and "<party>-enc".
    by_label = {entry["label"]: entry for entry in DATA["keys"]}
    for pem, usage, use in (
        (registration.sign_certificate, "sign", "sig"),
        (registration.enc_certificate, "encrypt", "enc"),
    ):
        cert = load_certificate_pem(pem.encode("ascii"))
        identity = validate_chain(
            cert,
            root,
            at,
            expected_party=registration.participant_id,
            expected_usage=usage,  # type: ignore[arg-type]
        )
        entry = by_label[f"{identity.party_id}-{use}"]
        assert (entry["owner"], entry["use"], entry["status"]) == (identity.party_id, use, "active")
        assert public_jwk(cert.public_key()) == entry["public_jwk"]  # type: ignore[arg-type]


def test_stored_certificates_are_the_ones_in_the_vectors() -> None:
    stored = json.loads(generate.CERTIFICATES.read_text(encoding="utf-8"))["certificates"]
    vector = _valid("ParticipantRegistration")
    assert vector["root_certificate"] == stored["root"]
    assert vector["claims"]["sign_certificate"] == stored["bank-a-sig"]
    assert vector["claims"]["enc_certificate"] == stored["bank-a-enc"]


def test_enrolment_vector_carries_a_pin_block_bound_to_it() -> None:
    vector = _valid("Enrolment")
    enrolment = open_signed(vector["token"], Enrolment, RING, vector["verify_at"]).message
    key = PRIVATE[vector["pin_block"]["recipient_kid"]]
    digest = enrolment.enrolment_digest()
    assert open_pin_block(enrolment.pin_block, key, digest) == vector["pin_block"]["pin"]
    assert digest == DATA["deterministic"]["enrolment_digest"]
    # Signed by the very key it enrols (proof of possession).
    assert enrolment.device_jwk.model_dump() == PUBLIC_JWKS[vector["signer_kid"]]


def test_device_auth_vector_binds_the_body_of_its_call() -> None:
    vector = _valid("DeviceAuth")
    auth = open_signed(
        vector["token"], DeviceAuth, RING, vector["verify_at"], expected_signer="wallet-alice"
    ).message
    body_digest = sha256_b64url(vector["body"].encode("utf-8"))
    assert auth.body_digest == body_digest == DATA["deterministic"]["device_auth_body_digest"]


def test_rotation_vector_is_endorsed_over_the_digest_of_its_other_claims() -> None:
    vector = next(v for v in VALID if v["operation"] == "open_rotation")
    digest = registration_digest_of(vector["claims"])
    assert digest == DATA["deterministic"]["rotation_registration_digest"]
    # Without its endorsement, the same registration is vouched for by nobody else: a
    # change of the signing key the router then holds for its operator.
    registration = parse_claims(vector["claims"], ParticipantRegistration)
    current = next(record for record in RING if record.kid == vector["endorsed_by_kid"])
    bare = registration.model_copy(update={"endorsement": None})
    assert endorsement_signer(bare, current, vector["verify_at"]) is None
    moved = registration.model_copy(update={"endpoint": "https://elsewhere.test/"})
    assert endorsement_signer(moved, current, vector["verify_at"]) is None


def test_every_signed_message_type_has_a_valid_vector() -> None:
    covered = {vector["message_type"] for vector in VALID if vector["operation"] == "open_signed"}
    missing = {cls.MESSAGE_TYPE for cls in SIGNED_MESSAGES} - covered
    assert not missing, (
        f"add a vector for {sorted(missing)} and run python -m tests.vectors.generate"
    )


def test_every_sealed_message_type_has_a_valid_vector() -> None:
    covered = {vector["message_type"] for vector in VALID if vector["operation"] == "unseal"}
    assert {cls.MESSAGE_TYPE for cls in SEALED_MESSAGES} <= covered
    assert any(vector["operation"] == "open_pin_block" for vector in VALID)


def test_request_vector_fits_a_qr_code() -> None:
    token = _valid("PaymentRequest")["token"]
    assert len(token.encode("ascii")) <= 600  # DESIGN.md §3 "Channels"


def test_vector_names_are_unique_and_codes_registered() -> None:
    names = [vector["name"] for vector in VALID + INVALID]
    assert len(names) == len(set(names))
    for vector in INVALID:
        lookup(vector["error"])


def test_file_is_structurally_current() -> None:
    """A fresh build has the same vectors, claims (tokens masked) and errors as the file."""
    fresh = generate.build()
    assert _skeleton(fresh) == _skeleton(DATA), "run python -m tests.vectors.generate and review"


def test_keys_are_derived_from_their_public_labels() -> None:
    for entry in DATA["keys"]:
        seed = hashlib.sha384(entry["seed_is_sha384_of"].encode("utf-8")).digest()
        key = derive_key(entry["owner"], KeyUse(entry["use"]), seed)
        assert key.kid == entry["kid"] == make_kid(entry["owner"], entry["public_jwk"])
        assert public_jwk(key.key) == entry["public_jwk"]
        assert entry["seed_is_sha384_of"].startswith("SEMOPS TEST KEY")


def test_deterministic_values() -> None:
    values = DATA["deterministic"]
    assert condition_for(values["fulfilment"]) == values["condition"]
    reference = values["payer_reference"]
    key = b64url_decode(reference["key_b64url"])
    assert payer_reference(key, reference["transfer_id"]) == reference["value"]
    pvv = values["pin_verification_value"]
    computed = pin_verification_value(
        b64url_decode(pvv["key_b64url"]), pvv["credential_id"], pvv["pin"]
    )
    assert b64url_encode(computed) == pvv["value_b64url"]
    for message_type, digest in values["message_digests"].items():
        claims = _valid(message_type)["claims"]
        assert digest_of(claims) == digest
        assert parse_claims(claims, MESSAGE_TYPES[message_type]).digest() == digest
    enrolment = _valid("Enrolment")["claims"]
    assert order_digest_of(enrolment) == values["enrolment_digest"]
    assert parse_claims(enrolment, Enrolment).enrolment_digest() == values["enrolment_digest"]


def test_directory_vector_publishes_the_ring_keys() -> None:
    vector = _valid("Directory")
    directory = open_signed(vector["token"], Directory, RING, vector["verify_at"]).message
    ring_records = list(RING)
    for record in directory.key_records():  # the ring holds every published key, unchanged
        assert record in ring_records
    assert {entry.participant_id for entry in directory.entries} == {"router", "bank-a", "bank-b"}


def _valid(message_type: str) -> dict[str, Any]:
    return next(vector for vector in VALID if vector["message_type"] == message_type)


# Digests over an order cover its embedded request token, which a new build re-signs.
_RANDOMIZED_DIGESTS = frozenset({"order_digest", "expected_order_digest"})


def _mask(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "<digest>" if key in _RANDOMIZED_DIGESTS else _mask(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_mask(item) for item in value]
    if isinstance(value, str) and _COMPACT_TOKEN.match(value) and value.count(".") in (2, 4):
        return "<token>"
    return value


def _skeleton(data: dict[str, Any]) -> Any:
    vectors = [
        {key: value for key, value in vector.items() if key != "token"}
        for vector in data["valid"] + data["invalid"]
    ]
    skeleton = {key: data[key] for key in ("format", "now", "keys", "deterministic")}
    return _mask({**skeleton, "vectors": vectors})
