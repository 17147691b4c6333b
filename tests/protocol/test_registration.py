"""Who may change a participant's directory entry (protocol/registration.py), pure.

The rule (DESIGN.md §6): a first registration admits; the same entry again changes
nothing; a change takes effect only when the participant's current, unrevoked signing key
vouches for it (signed it, or endorsed a rotation); anything else is held for the operator.
A rotation proves both keys: the new key signs the registration, the current key endorses
the digest of every other claim. A processor compares its own entry with what it sent.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semops.core.errors import E, SemopsError
from semops.crypto import KeyRing, read_unverified_claims
from semops.crypto.keys import KeyStatus, KeyUse, derive_key
from semops.protocol import (
    Directory,
    DirectoryEntry,
    DirectoryKey,
    EntryState,
    ExpectedEntry,
    ParticipantRegistration,
    Registered,
    RegistrationDecision,
    decide_registration,
    endorsement_signer,
    entry_differences,
    open_signed,
    parse_claims,
    registration_id_of,
    require_same_party,
    sign,
    sign_registration,
)
from semops.protocol.registration import ENTRY_FIELDS, OPERATOR_FIELDS

from .helpers import (
    KEY_NOT_AFTER,
    KEY_NOT_BEFORE,
    NOW,
    SEALING_KEYS,
    SIGNING_KEYS,
    party_certificate_pem,
    sample,
    seed,
)

CURRENT = SIGNING_KEYS["bank-a"]
NEXT = derive_key("bank-a", KeyUse.SIGN, seed("bank-a/next signing key"))
STRANGER = derive_key("bank-a", KeyUse.SIGN, seed("bank-a/a second certificate's key"))
OTHER_PARTY = SIGNING_KEYS["mno-b"]


def entry(**changes: str) -> EntryState:
    base = {
        "kind": "bank",
        "display_name": "Bank A",
        "endpoint": "https://bank-a.example:8443",
        "sign_certificate": "SIGN-PEM",
        "enc_certificate": "ENC-PEM",
    }
    return EntryState(**(base | changes))


def registered(*, revoked: bool = False, **changes: str) -> Registered:
    return Registered(entry(**changes), sign_kid=CURRENT.kid, sign_key_revoked=revoked)


# --- the decision ---------------------------------------------------------------------------


def test_an_unknown_participant_is_admitted_by_its_first_registration() -> None:
    assert decide_registration(None, entry(), frozenset({STRANGER.kid})) is (
        RegistrationDecision.ADMIT
    )


def test_the_same_entry_again_changes_nothing_whoever_signs_it() -> None:
    for vouched in (frozenset({CURRENT.kid}), frozenset({STRANGER.kid}), frozenset()):
        assert decide_registration(registered(), entry(), vouched) is (
            RegistrationDecision.UNCHANGED
        )


@pytest.mark.parametrize("field", sorted(set(ENTRY_FIELDS) - OPERATOR_FIELDS))
def test_a_change_signed_by_the_current_key_takes_effect(field: str) -> None:
    proposed = entry(**{field: "changed"})
    assert decide_registration(registered(), proposed, frozenset({CURRENT.kid})) is (
        RegistrationDecision.UPDATE
    )


@pytest.mark.parametrize("field", sorted(OPERATOR_FIELDS))
def test_how_a_participant_is_shown_is_changed_by_the_operator_only(field: str) -> None:
    proposed = entry(**{field: "changed"})
    assert decide_registration(registered(), proposed, frozenset({CURRENT.kid})) is (
        RegistrationDecision.HOLD
    )


@pytest.mark.parametrize("field", ENTRY_FIELDS)
def test_a_change_signed_by_another_key_of_the_same_participant_is_held(field: str) -> None:
    """Issue 11, H1: a second root-issued certificate for bank-a is not bank-a's key."""
    proposed = entry(**{field: "changed"})
    assert decide_registration(registered(), proposed, frozenset({STRANGER.kid})) is (
        RegistrationDecision.HOLD
    )


def test_a_revoked_current_key_vouches_for_nothing() -> None:
    proposed = entry(sign_certificate="NEW-PEM")
    current = registered(revoked=True)
    assert decide_registration(current, proposed, frozenset({CURRENT.kid, NEXT.kid})) is (
        RegistrationDecision.HOLD
    )


@given(
    changed=st.sets(st.sampled_from(ENTRY_FIELDS)),
    current_vouches=st.booleans(),
    others=st.sets(st.sampled_from([NEXT.kid, STRANGER.kid, OTHER_PARTY.kid])),
    revoked=st.booleans(),
)
def test_the_decision_is_exactly_the_rule(
    changed: set[str], current_vouches: bool, others: set[str], revoked: bool
) -> None:
    proposed = entry(**dict.fromkeys(changed, "changed"))
    vouched = frozenset(others | ({CURRENT.kid} if current_vouches else set()))
    decision = decide_registration(registered(revoked=revoked), proposed, vouched)
    if not changed:
        assert decision is RegistrationDecision.UNCHANGED
    elif changed & OPERATOR_FIELDS:
        assert decision is RegistrationDecision.HOLD
    elif current_vouches and not revoked:
        assert decision is RegistrationDecision.UPDATE
    else:
        assert decision is RegistrationDecision.HOLD


def test_changes_are_named_in_a_fixed_order() -> None:
    proposed = entry(display_name="X", sign_certificate="Y", endpoint="Z")
    assert proposed.changes_from(entry()) == ("sign_certificate", "endpoint", "display_name")
    assert entry().changes_from(entry()) == ()


def test_a_held_proposal_has_one_id_per_participant_and_content() -> None:
    first = registration_id_of("bank-a", entry(endpoint="https://evil.example"))
    assert first == registration_id_of("bank-a", entry(endpoint="https://evil.example"))
    assert first.startswith("rg_") and len(first) == 25
    assert first != registration_id_of("bank-a", entry(endpoint="https://other.example"))
    assert first != registration_id_of("mno-b", entry(endpoint="https://evil.example"))


# --- the rotation recipe --------------------------------------------------------------------


def registration(**changes: object) -> ParticipantRegistration:
    base = sample(ParticipantRegistration)
    assert isinstance(base, ParticipantRegistration)
    fields = {"endorsement": None, "created_at": NOW, "expires_at": NOW + 60} | changes
    return base.model_copy(update=fields)


def opened(token: str, key: object) -> ParticipantRegistration:
    record = key.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER)  # type: ignore[attr-defined]
    return open_signed(token, ParticipantRegistration, KeyRing([record]), NOW).message


def current_record(status: KeyStatus = KeyStatus.ACTIVE) -> object:
    return CURRENT.public_record(KEY_NOT_BEFORE, KEY_NOT_AFTER, status)


def test_a_rotation_is_signed_by_the_new_key_and_endorsed_by_the_current_one() -> None:
    rotation = registration(sign_certificate=party_certificate_pem(NEXT, 40))
    token = sign_registration(rotation, NEXT, current_key=CURRENT)
    message = opened(token, NEXT)  # the new key's signature holds: proof of possession
    assert message.endorsement is not None
    assert endorsement_signer(message, current_record(), NOW) == CURRENT.kid  # type: ignore[arg-type]
    # The endorsement signs every other claim, the new certificate included.
    claims = read_unverified_claims(message.endorsement)
    assert claims["registration_digest"] == message.registration_digest()
    assert claims["participant_id"] == "bank-a"


def test_without_a_current_key_or_with_the_same_key_there_is_no_endorsement() -> None:
    plain = registration()
    assert opened(sign_registration(plain, CURRENT), CURRENT).endorsement is None
    same = sign_registration(plain, CURRENT, current_key=CURRENT)
    assert opened(same, CURRENT).endorsement is None


def test_an_endorsement_by_any_other_key_vouches_for_nothing() -> None:
    rotation = registration(sign_certificate=party_certificate_pem(NEXT, 41))
    # The attacker with a second certificate endorses its own rotation with its own key.
    token = sign_registration(rotation, NEXT, current_key=STRANGER)
    assert endorsement_signer(opened(token, NEXT), current_record(), NOW) is None  # type: ignore[arg-type]


def test_an_endorsement_lifted_onto_another_registration_vouches_for_nothing() -> None:
    rotation = registration(sign_certificate=party_certificate_pem(NEXT, 42))
    endorsed = opened(sign_registration(rotation, NEXT, current_key=CURRENT), NEXT)
    moved = endorsed.model_copy(update={"endpoint": "https://attacker.example"})
    token = sign(moved, STRANGER)  # re-signed by whoever holds the other certificate
    assert endorsement_signer(opened(token, STRANGER), current_record(), NOW) is None  # type: ignore[arg-type]


def test_an_expired_or_revoked_endorsement_vouches_for_nothing() -> None:
    rotation = registration(sign_certificate=party_certificate_pem(NEXT, 43))
    message = opened(sign_registration(rotation, NEXT, current_key=CURRENT), NEXT)
    assert endorsement_signer(message, current_record(), NOW + 61) is None  # type: ignore[arg-type]
    revoked = current_record(KeyStatus.REVOKED)
    assert endorsement_signer(message, revoked, NOW) is None  # type: ignore[arg-type]


def test_an_endorsement_that_is_not_a_jws_is_refused_by_the_model() -> None:
    claims = registration().to_claims() | {"endorsement": "not a token"}
    with pytest.raises(SemopsError) as refused:
        parse_claims(claims, ParticipantRegistration)
    assert refused.value.spec is E.VALIDATION_FAILED


def test_the_tls_client_must_be_the_party_a_message_names() -> None:
    require_same_party("bank-a", "bank-a")
    with pytest.raises(SemopsError) as refused:
        require_same_party("mno-b", "bank-a")
    assert refused.value.spec is E.TLS_PEER_MISMATCH


# --- the processor's own entry --------------------------------------------------------------


def own_entry(
    *, sign_status: str = "active", status: str = "active", **changes: object
) -> DirectoryEntry:
    keys = (
        DirectoryKey.from_record(CURRENT.public_record(0, KEY_NOT_AFTER)).model_copy(
            update={"status": sign_status}
        ),
        DirectoryKey.from_record(SEALING_KEYS["bank-a"].public_record(0, KEY_NOT_AFTER)),
    )
    fields = {
        "participant_id": "bank-a",
        "kind": "bank",
        "display_name": "Bank A",
        "endpoint": "https://bank-a.example:8443",
        "status": status,
        "keys": keys,
    } | changes
    return DirectoryEntry(**fields)  # type: ignore[arg-type]


EXPECTED = ExpectedEntry(
    sign_kid=CURRENT.kid,
    enc_kid=SEALING_KEYS["bank-a"].kid,
    endpoint="https://bank-a.example:8443",
    kind="bank",
    display_name="Bank A",
)


def test_an_entry_as_registered_raises_no_alarm() -> None:
    assert entry_differences(own_entry(), EXPECTED) == ()


def test_every_difference_of_our_entry_is_named() -> None:
    rogue_key = DirectoryKey.from_record(STRANGER.public_record(0, KEY_NOT_AFTER))
    enc = DirectoryKey.from_record(SEALING_KEYS["bank-a"].public_record(0, KEY_NOT_AFTER))
    cases = {
        ("sign_key",): own_entry(keys=(rogue_key, enc)),
        ("sign_key_revoked",): own_entry(sign_status="revoked"),
        ("endpoint",): own_entry(endpoint="https://attacker.example"),
        ("kind",): own_entry(kind="mno"),
        ("display_name",): own_entry(display_name="Bank A."),
        ("status",): own_entry(status="suspended"),
    }
    for expected, listed in cases.items():
        assert entry_differences(listed, EXPECTED) == expected
    # A key of ours is missing: our encryption key replaced by the attacker's.
    stranger_enc = derive_key("bank-a", KeyUse.ENCRYPT, seed("bank-a/rogue enc"))
    swapped = own_entry(
        keys=(
            DirectoryKey.from_record(CURRENT.public_record(0, KEY_NOT_AFTER)),
            DirectoryKey.from_record(stranger_enc.public_record(0, KEY_NOT_AFTER)),
        )
    )
    assert entry_differences(swapped, EXPECTED) == ("enc_key",)
    assert entry_differences(None, EXPECTED) == ("absent",)


def test_the_h1_takeover_shows_as_every_difference_at_once() -> None:
    rogue_sign = DirectoryKey.from_record(STRANGER.public_record(0, KEY_NOT_AFTER))
    rogue_enc = derive_key("bank-a", KeyUse.ENCRYPT, seed("bank-a/rogue enc 2"))
    taken = own_entry(
        keys=(rogue_sign, DirectoryKey.from_record(rogue_enc.public_record(0, KEY_NOT_AFTER))),
        endpoint="https://shop.attacker.example",
    )
    assert entry_differences(taken, EXPECTED) == ("sign_key", "enc_key", "endpoint")


# --- revoked serials in the directory -------------------------------------------------------


def directory(**changes: object) -> dict[str, object]:
    base = sample(Directory)
    return base.to_claims() | changes


def test_revoked_serials_are_listed_once_each_in_ascending_order() -> None:
    listed = parse_claims(directory(revoked_serials=["2", "1f", "a0c3"]), Directory)
    assert listed.revoked_serial_numbers() == {2, 0x1F, 0xA0C3}
    for bad in (["1f", "2"], ["2", "2"], ["02"], ["0"], ["XYZ"], [], ["f" * 41]):
        with pytest.raises(SemopsError) as refused:
            parse_claims(directory(revoked_serials=bad), Directory)
        assert refused.value.spec is E.VALIDATION_FAILED, bad


def test_a_directory_without_revocations_has_one_wire_form() -> None:
    claims = directory()
    claims.pop("revoked_serials")
    plain = parse_claims(claims, Directory)
    assert "revoked_serials" not in plain.to_claims()
    assert plain.revoked_serial_numbers() == frozenset()


def test_pairs_of_fields_change_independently() -> None:
    for first, second in itertools.combinations(ENTRY_FIELDS, 2):
        proposed = entry(**{first: "a", second: "b"})
        assert proposed.changes_from(entry()) == (first, second)
