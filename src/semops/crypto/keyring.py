"""The key ring: `kid` -> public key, refusing unknown, revoked, expired and misused keys.

A verifier never trusts a key carried inside a message; it looks the `kid` up here. The
ring is filled from the router's signed directory (processor keys) or from a processor's
device registry (wallet keys). Each refusal has its own code, because which keys are
revoked or expired is public knowledge and tells an attacker nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import MappingProxyType

from semops.core.errors import E, SemopsError
from semops.crypto.keys import KeyStatus, KeyUse, PublicKeyRecord, check_kid


class KeyRing:
    """An immutable set of public key records, indexed by kid."""

    def __init__(self, records: Iterable[PublicKeyRecord] = ()) -> None:
        by_kid: dict[str, PublicKeyRecord] = {}
        for record in records:
            if record.kid in by_kid and by_kid[record.kid] != record:
                raise SemopsError(E.DIRECTORY_INVALID, "two different keys share one kid")
            by_kid[record.kid] = record
        self._records = MappingProxyType(by_kid)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[PublicKeyRecord]:
        return iter(self._records.values())

    def __contains__(self, kid: object) -> bool:
        return kid in self._records

    def with_records(self, records: Iterable[PublicKeyRecord]) -> KeyRing:
        """A new ring with these records added or replaced (the old ring is unchanged)."""
        merged = dict(self._records)
        for record in records:
            merged[record.kid] = record
        return KeyRing(merged.values())

    def resolve(self, kid: str, use: KeyUse, now: int) -> PublicKeyRecord:
        """The usable record for kid at time now, or the reason it is refused."""
        record = self._records.get(check_kid(kid))
        if record is None:
            raise SemopsError(E.KEY_UNKNOWN)
        if record.status is KeyStatus.REVOKED:
            raise SemopsError(E.KEY_REVOKED)
        if not record.not_before <= now < record.not_after:
            raise SemopsError(E.KEY_EXPIRED)
        if record.use is not use:
            raise SemopsError(E.KEY_WRONG_USE)
        return record
