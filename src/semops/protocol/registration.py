"""Who may change a participant's entry in the directory: the registration decision.

Theory of operation (DESIGN.md §6 "Keys have a lifecycle at the router"). A certificate
from the scheme root says who a key belongs to; it does not say that the key is the one the
participant uses *now*. Any unexpired certificate for bank-a proves "bank-a, once", so a
second certificate (leaked, mis-issued, stolen with an old backup) must not be able to
take bank-a's place in the directory. Hence:

- A participant the router does not know is admitted by its first registration, as before:
  certificates that chain to the root and name it, a signature by the signing key, an
  endpoint the router may call.
- Registering again with nothing changed is a no-op (a processor restarting).
- A change (a signing or encryption certificate, endpoint, kind or display name) takes
  effect at once only if the participant's *currently registered* signing key vouches for
  it, and that key is not revoked: either it signed the registration itself (a new
  endpoint, a new encryption key), or the registration carries an endorsement it signed
  (a new signing key: the new key signs the registration, proving possession; the current
  key signs the digest of the rest, proving consent; `sign_registration`).
- A new kind or display name is held even when the current key vouches for it: wallets
  tell payees apart by "payee id at <processor name>", so what a processor is called is
  the scheme's to approve, not the processor's to change (and a name that looks like
  another participant's is refused outright, by the router, with `name_confusable`).
- Anything else is *held*: stored for the scheme operator, who approves or rejects it on
  the operator port. Nothing in the directory changes until then. In particular a
  participant whose current key is revoked comes back only through the operator.

`decide_registration` is that rule over plain records; `sign_registration` and
`endorsement_signer` are the two halves of the rotation recipe. No I/O, no clock here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError
from semops.crypto.keyring import KeyRing
from semops.crypto.keys import PrivateKey, PublicKeyRecord
from semops.protocol.envelope import open_signed, sign
from semops.protocol.messages import (
    DirectoryEntry,
    ParticipantRegistration,
    RegistrationEndorsement,
)

# The fields of a directory entry a registration sets, in the order they are compared.
ENTRY_FIELDS = ("sign_certificate", "enc_certificate", "endpoint", "kind", "display_name")
# What only the scheme operator changes: how the participant is shown to payers.
OPERATOR_FIELDS = frozenset({"kind", "display_name"})


class RegistrationDecision(StrEnum):
    ADMIT = "admit"  # a participant the router does not know yet
    UNCHANGED = "unchanged"  # the same entry again: nothing to do
    UPDATE = "update"  # a change vouched for by the current key: takes effect now
    HOLD = "hold"  # a change nobody entitled vouched for: waits for the operator


@dataclass(frozen=True, slots=True)
class EntryState:
    """What a registration asks the directory to say about a participant."""

    kind: str
    display_name: str
    endpoint: str
    sign_certificate: str
    enc_certificate: str

    @classmethod
    def of(cls, registration: ParticipantRegistration) -> EntryState:
        return cls(
            kind=registration.kind,
            display_name=registration.display_name,
            endpoint=registration.endpoint,
            sign_certificate=registration.sign_certificate,
            enc_certificate=registration.enc_certificate,
        )

    def changes_from(self, other: EntryState) -> tuple[str, ...]:
        """The names of the fields that differ (ENTRY_FIELDS order)."""
        return tuple(name for name in ENTRY_FIELDS if getattr(self, name) != getattr(other, name))

    def digest(self) -> str:
        """A fingerprint of the proposed entry: the same proposal is stored once."""
        return digest_of({name: getattr(self, name) for name in ENTRY_FIELDS})


@dataclass(frozen=True, slots=True)
class Registered:
    """The participant as the router has it now: its entry and its signing key's kid."""

    entry: EntryState
    sign_kid: str
    sign_key_revoked: bool  # by kid or by its certificate's serial


def decide_registration(
    current: Registered | None, proposed: EntryState, vouched_by: frozenset[str]
) -> RegistrationDecision:
    """ADMIT, UNCHANGED, UPDATE or HOLD (module docstring).

    `vouched_by` holds the kids whose signatures over this registration verified: the key
    of its own signing certificate, and the endorsing key if an endorsement verified.
    """
    if current is None:
        return RegistrationDecision.ADMIT
    changes = proposed.changes_from(current.entry)
    if not changes:
        return RegistrationDecision.UNCHANGED
    if OPERATOR_FIELDS.intersection(changes):
        return RegistrationDecision.HOLD
    if current.sign_kid in vouched_by and not current.sign_key_revoked:
        return RegistrationDecision.UPDATE
    return RegistrationDecision.HOLD


def registration_id_of(participant_id: str, proposed: EntryState) -> str:
    """The operator's handle on a held registration: the same proposal, the same id."""
    return "rg_" + digest_of({"participant_id": participant_id, "entry": proposed.digest()})[:22]


def sign_registration(
    registration: ParticipantRegistration,
    key: PrivateKey,
    *,
    current_key: PrivateKey | None = None,
) -> str:
    """The registration, signed by the key of its signing certificate; with `current_key`
    (the key registered now, when it is another one) also endorsed by that key.

    The endorsement covers every claim but itself, the new certificates included, so it
    cannot be lifted onto another registration; it lives as long as the registration.
    """
    if current_key is not None and current_key.kid != key.kid:
        endorsement = RegistrationEndorsement(
            participant_id=registration.participant_id,
            registration_digest=registration.registration_digest(),
            created_at=registration.created_at,
            expires_at=registration.expires_at,
        )
        registration = registration.model_copy(
            update={"endorsement": sign(endorsement, current_key)}
        )
    return sign(registration, key)


def endorsement_signer(
    registration: ParticipantRegistration, current: PublicKeyRecord, now: int
) -> str | None:
    """The kid of `current` if the registration's endorsement is its valid signature over
    this very registration, else None (no endorsement, another key, a stale or lifted one).
    Never raises: an endorsement that does not hold leaves the change to the operator."""
    if registration.endorsement is None:
        return None
    try:
        endorsement = open_signed(
            registration.endorsement,
            RegistrationEndorsement,
            KeyRing([current]),
            now,
            expected_signer=registration.participant_id,
        ).message
    except SemopsError:
        return None
    if endorsement.registration_digest != registration.registration_digest():
        return None
    return current.kid


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """What a processor registered, as its own directory entry must show it."""

    sign_kid: str
    enc_kid: str
    endpoint: str
    kind: str
    display_name: str


def entry_differences(entry: DirectoryEntry | None, expected: ExpectedEntry) -> tuple[str, ...]:
    """How the directory's entry for a processor differs from what it registered: names
    of the differing parts (`sign_key`, `enc_key`, `sign_key_revoked`, `enc_key_revoked`,
    `endpoint`, `kind`, `display_name`, `status`, or `absent`); empty when it matches.

    A key of ours that is not listed, or a key listed for us that is not ours, means that
    someone else's key now speaks (or is sealed to) in our name.
    """
    if entry is None:
        return ("absent",)
    found: list[str] = []
    for use, kid, name in (("sig", expected.sign_kid, "sign"), ("enc", expected.enc_kid, "enc")):
        listed = {key.kid: key for key in entry.keys if key.use == use}
        if set(listed) != {kid}:
            found.append(f"{name}_key")
        elif listed[kid].status != "active":
            found.append(f"{name}_key_revoked")
    for field in ("endpoint", "kind", "display_name"):
        if getattr(entry, field) != getattr(expected, field):
            found.append(field)
    if entry.status != "active":
        found.append("status")
    return tuple(found)


def require_same_party(named: str, tls_party: str) -> None:
    """A message that names its sender must come over that sender's own TLS connection:
    a certificate of bank-a (even a valid one) cannot be used to speak as mno-b."""
    if named != tls_party:
        raise SemopsError(E.TLS_PEER_MISMATCH)


__all__ = [
    "ENTRY_FIELDS",
    "EntryState",
    "ExpectedEntry",
    "Registered",
    "RegistrationDecision",
    "decide_registration",
    "endorsement_signer",
    "entry_differences",
    "registration_id_of",
    "require_same_party",
    "sign_registration",
]
