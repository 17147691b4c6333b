"""The tamper-evident audit log: entries, their hash chain and signed checkpoints (pure).

Theory of operation (DESIGN.md §8):

- An entry is `{seq, at, kind, actor, data, prev_hash}` plus `hash`, the SHA-256 (base64url)
  of the canonical JSON of everything but `hash`. `seq` counts from 1 without gaps and
  `prev_hash` is the previous entry's `hash` (the first entry's is GENESIS_HASH), so
  changing, removing, inserting or reordering any entry breaks the chain at that point.
- A chain alone can be rebuilt by whoever can write the database. So every
  CHECKPOINT_EVERY-th ordinary entry is followed by a *checkpoint* entry whose data holds
  a JWS, by the service's signing key (the key of its scheme certificate), over
  `{service, seq, hash}` of the entry before it. Rewriting anything up to a checkpoint
  needs that key. Services also checkpoint on demand (window close, shutdown, a quiet
  minute), so the unsigned tail is short in entries and in time.
- What may go into `data` is an allowlist of field names with bounded, typed values: ids,
  codes, amounts, states. There is no field for a name, phone number, PIN, key, token,
  request id or free text, so an audit entry cannot carry what DESIGN.md §5 forbids.

Verification (`verify_chain`) takes the stored rows in `seq` order and the ring of keys
that may sign checkpoints, and names the first entry that does not hold. It never trusts
a stored `hash`: every one is recomputed. What a verifier cannot see is a log cut short
after its last checkpoint; the quiet-minute checkpoint keeps that window small.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from semops.core.encoding import canonical_json, parse_json, sha256_b64url
from semops.core.errors import SemopsError
from semops.crypto import KeyRing, PrivateKey, sign_message, verify_message

# 32 zero bytes in base64url: the `prev_hash` of entry 1.
GENESIS_HASH: Final = "A" * 43
# An ordinary entry whose seq is a multiple of this is followed by a signed checkpoint. 50
# bounds what a database writer could rewrite unsigned to 50 entries, at one ES256
# signature (~0.1 ms) per 50 audited actions.
CHECKPOINT_EVERY: Final = 50
CHECKPOINT_KIND: Final = "checkpoint"
CHECKPOINT_TYPE: Final = "AuditCheckpoint"
# Kinds and actors are short snake/kebab words; data strings are ids and codes.
KIND_MAX_CHARS: Final = 32
ACTOR_MAX_CHARS: Final = 64
DATA_TEXT_MAX_CHARS: Final = 64
DATA_FIELDS_MAX: Final = 16
# A checkpoint's JWS over four short claims is ~300 characters.
SIGNATURE_MAX_CHARS: Final = 1024
# A stored data column longer than this cannot be an entry we wrote.
DATA_JSON_MAX_BYTES: Final = 4096

_WORD: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_ACTOR: Final = re.compile(r"^[a-z0-9][a-z0-9:_-]*$")
# Ids, kids ("owner:thumbprint"), codes, currencies, states: no spaces, so no names.
_TEXT: Final = re.compile(r"^[A-Za-z0-9._:~+-]*$")
_HASH: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
_JWS: Final = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

_TEXT_FIELDS: Final = frozenset(
    {
        "transfer_id", "refund_id", "order_id", "original_transfer_id", "transfer_kind",
        "participant_id", "payer_processor", "payee_processor", "merchant_id", "account_id",
        "kid", "currency", "state", "status", "reason_code", "report_digest",
        # A participant's keys and certificates changing (router/participants.py):
        # `changes` names the changed entry fields joined by "+".
        "enc_kid", "previous_kid", "registration_id", "changes", "serial",
    }
)  # fmt: skip
_INT_FIELDS: Final = frozenset(
    {
        "amount_minor", "cap_minor", "window_id", "next_window_id", "transfers_count",
        "covers_seq", "devices_revoked",
    }
)  # fmt: skip
_BOOL_FIELDS: Final = frozenset({"automatic", "first", "endorsed", "current_key_revoked"})
# Only a checkpoint carries these two.
_CHECKPOINT_FIELDS: Final = frozenset({"covers_seq", "covers_hash", "signature"})
ALLOWED_DATA_FIELDS: Final = _TEXT_FIELDS | _INT_FIELDS | _BOOL_FIELDS | _CHECKPOINT_FIELDS


class AuditDataError(ValueError):
    """Data outside the allowlist: a programming error in the caller, never stored."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: int
    kind: str
    actor: str
    data: Mapping[str, Any]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return entry_body(self.seq, self.at, self.kind, self.actor, self.data, self.prev_hash)

    def data_json(self) -> str:
        return canonical_json(dict(self.data)).decode("utf-8")

    def row(self) -> dict[str, Any]:
        """The columns of the audit_log table."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "actor": self.actor,
            "data": self.data_json(),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def entry_body(
    seq: int, at: int, kind: str, actor: str, data: Mapping[str, Any], prev_hash: str
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": at,
        "kind": kind,
        "actor": actor,
        "data": dict(data),
        "prev_hash": prev_hash,
    }


def entry_hash(body: Mapping[str, Any]) -> str:
    return sha256_b64url(canonical_json(dict(body)))


def _check_value(name: str, value: Any) -> None:
    ok: bool
    if name == "signature":
        ok = (
            isinstance(value, str) and len(value) <= SIGNATURE_MAX_CHARS and bool(_JWS.match(value))
        )
    elif name == "covers_hash":
        ok = isinstance(value, str) and _HASH.match(value) is not None
    elif name in _TEXT_FIELDS:
        ok = (
            isinstance(value, str)
            and len(value) <= DATA_TEXT_MAX_CHARS
            and bool(_TEXT.match(value))
        )
    elif name in _INT_FIELDS:
        ok = type(value) is int and 0 <= value < 2**62
    elif name in _BOOL_FIELDS:
        ok = type(value) is bool
    else:
        raise AuditDataError(f"{name!r} is not an audit field")
    if value is not None and not ok:
        raise AuditDataError(f"{name!r} has a value an audit entry may not hold")


def check_data(kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The data with None values dropped, or AuditDataError if it leaves the allowlist."""
    if len(data) > DATA_FIELDS_MAX:
        raise AuditDataError("too many audit fields")
    checkpoint = kind == CHECKPOINT_KIND
    for name, value in data.items():
        if name in _CHECKPOINT_FIELDS and not checkpoint:
            raise AuditDataError(f"{name!r} belongs to checkpoints only")
        _check_value(name, value)
    return {name: value for name, value in data.items() if value is not None}


def check_kind_actor(kind: str, actor: str) -> None:
    if len(kind) > KIND_MAX_CHARS or not _WORD.match(kind):
        raise AuditDataError("an audit kind is a short snake_case word")
    if len(actor) > ACTOR_MAX_CHARS or not _ACTOR.match(actor):
        raise AuditDataError("an audit actor is a short id")


def next_entry(
    previous: tuple[int, str] | None, *, at: int, kind: str, actor: str, data: Mapping[str, Any]
) -> AuditEntry:
    """The entry after `previous` ((seq, hash) of the last entry, None for an empty log)."""
    check_kind_actor(kind, actor)
    clean = check_data(kind, data)
    seq, prev_hash = (previous[0] + 1, previous[1]) if previous is not None else (1, GENESIS_HASH)
    body = entry_body(seq, at, kind, actor, clean, prev_hash)
    return AuditEntry(seq, at, kind, actor, clean, prev_hash, entry_hash(body))


def checkpoint_due(entry: AuditEntry, every: int = CHECKPOINT_EVERY) -> bool:
    return entry.kind != CHECKPOINT_KIND and entry.seq % every == 0


def checkpoint_claims(service: str, seq: int, hash_: str, at: int) -> dict[str, Any]:
    return {
        "type": CHECKPOINT_TYPE,
        "v": 1,
        "service": service,
        "seq": seq,
        "hash": hash_,
        "at": at,
    }


def make_checkpoint(service: str, covered: AuditEntry, key: PrivateKey, at: int) -> AuditEntry:
    """A checkpoint entry after `covered`, signing its seq and hash with the service key."""
    signature = sign_message(checkpoint_claims(service, covered.seq, covered.hash, at), key)
    return next_entry(
        (covered.seq, covered.hash),
        at=at,
        kind=CHECKPOINT_KIND,
        actor=service,
        data={"covers_seq": covered.seq, "covers_hash": covered.hash, "signature": signature},
    )


# --- verification -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a log does not hold: which entry and what is wrong with it."""

    service: str
    seq: int
    problem: str

    def __str__(self) -> str:
        return f"{self.service}: entry {self.seq}: {self.problem}"


@dataclass(frozen=True, slots=True)
class ChainReport:
    service: str
    entries: int
    checkpoints: int
    last_checkpoint_seq: int
    unsigned_tail: int  # entries after the last checkpoint
    broken: Break | None
    # Entries staged by the service, not chained yet (semops.audit.log): not verified, and
    # protected by nothing until the service chains them (at once if running, on restart).
    staged: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None


class _Broken(Exception):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _stored_data(text: Any) -> dict[str, Any]:
    if not isinstance(text, str):
        raise _Broken("data is not text")
    try:
        data = parse_json(text, max_bytes=DATA_JSON_MAX_BYTES)
    except SemopsError:
        raise _Broken("data is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Broken("data is not a JSON object")
    if canonical_json(data).decode("utf-8") != text:
        raise _Broken("data is not in canonical form (altered)")
    return data


def _check_checkpoint(
    service: str, data: Mapping[str, Any], previous: tuple[int, str], at: int, ring: KeyRing
) -> None:
    token = data.get("signature")
    if data.get("covers_seq") != previous[0] or data.get("covers_hash") != previous[1]:
        raise _Broken("checkpoint does not cover the entry before it")
    if not isinstance(token, str):
        raise _Broken("checkpoint has no signature")
    try:
        claims = verify_message(token, ring, at).claims
    except SemopsError as error:
        raise _Broken(f"checkpoint signature does not verify ({error.code})") from None
    if claims != checkpoint_claims(service, previous[0], previous[1], at):
        raise _Broken("checkpoint signature is over other content")


def _check_row(
    service: str, row: Mapping[str, Any], previous: tuple[int, str], ring: KeyRing
) -> tuple[int, str]:
    seq, at = row.get("seq"), row.get("at")
    if seq != previous[0] + 1:
        raise _Broken(f"expected entry {previous[0] + 1} here (removed or reordered)")
    if type(at) is not int or not isinstance(row.get("kind"), str):
        raise _Broken("malformed columns")
    if not isinstance(row.get("actor"), str) or not isinstance(row.get("prev_hash"), str):
        raise _Broken("malformed columns")
    data = _stored_data(row.get("data"))
    if row["prev_hash"] != previous[1]:
        raise _Broken("prev_hash does not match the previous entry (inserted or reordered)")
    body = entry_body(seq, at, row["kind"], row["actor"], data, row["prev_hash"])
    if entry_hash(body) != row.get("hash"):
        raise _Broken("hash does not match the content (altered)")
    try:
        check_kind_actor(row["kind"], row["actor"])
        check_data(row["kind"], data)
    except AuditDataError as error:
        raise _Broken(f"outside the audit allowlist: {error}") from None
    if row["kind"] == CHECKPOINT_KIND:
        _check_checkpoint(service, data, previous, at, ring)
    return seq, str(row["hash"])


class ChainVerifier:
    """Checks a log entry by entry, in seq order, so a long log is read in pages."""

    def __init__(self, service: str, ring: KeyRing, *, every: int = CHECKPOINT_EVERY) -> None:
        self.service = service
        self.ring = ring
        self.every = every
        self.previous: tuple[int, str] = (0, GENESIS_HASH)
        self.checkpoints = 0
        self.last_checkpoint = 0
        self.due = 0  # seq of an entry whose checkpoint has not come yet
        self.broken: Break | None = None

    def feed(self, row: Mapping[str, Any]) -> bool:
        """Check the next stored row; False once the log is broken (stop feeding)."""
        if self.broken is not None:
            return False
        try:
            if self.due and row.get("kind") != CHECKPOINT_KIND:
                raise _Broken(f"the checkpoint due after entry {self.due} is missing")
            self.previous = _check_row(self.service, row, self.previous, self.ring)
        except _Broken as error:
            seq = row.get("seq")
            at = seq if type(seq) is int else self.previous[0] + 1
            self.broken = Break(self.service, at, error.problem)
            return False
        if row["kind"] == CHECKPOINT_KIND:
            self.checkpoints += 1
            self.last_checkpoint, self.due = self.previous[0], 0
        elif self.previous[0] % self.every == 0:
            self.due = self.previous[0]
        return True

    def finish(self, *, final: bool = True) -> ChainReport:
        """The verdict. `final`: the rows were the whole log, so a checkpoint that is due
        after the last entry must have been there (a log cut short)."""
        broken = self.broken
        if broken is None and self.due and final:
            problem = "the log ends where a signed checkpoint is due (cut short)"
            broken = Break(self.service, self.due, problem)
        return ChainReport(
            service=self.service,
            entries=self.previous[0],
            checkpoints=self.checkpoints,
            last_checkpoint_seq=self.last_checkpoint,
            unsigned_tail=self.previous[0] - self.last_checkpoint,
            broken=broken,
        )


def verify_chain(
    service: str,
    rows: Iterable[Mapping[str, Any]],
    ring: KeyRing,
    *,
    every: int = CHECKPOINT_EVERY,
    final: bool = True,
) -> ChainReport:
    """Check a service's whole log, in seq order; `broken` names the first failure."""
    verifier = ChainVerifier(service, ring, every=every)
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.finish(final=final)
