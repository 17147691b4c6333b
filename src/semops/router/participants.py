"""Participants at the router: registration, changes held for the operator, revocation.

Theory of operation (DESIGN.md §6 "Keys have a lifecycle at the router"):

- A registration is checked from the root down before anything else: it must come over the
  named participant's own TLS connection, carry two certificates of role *processor* that
  chain to the scheme root and name it, neither revoked (by kid or serial), be signed by
  the signing certificate's key, and name an endpoint the router may call (https, no query,
  fragment or user: `check_endpoint_url`). A refusal stores nothing.
- `protocol.registration.decide_registration` then says what it does: a new participant is
  admitted; the same entry again is a no-op; a change vouched for by the participant's
  current signing key takes effect at once; any other change is *held*: one row in
  `registrations` (the same proposal is held once), an audit entry and a loud log line,
  and nothing in the directory moves. The scheme operator lists held changes and approves
  or rejects each one on the loopback operator port; each decision is audited. An approval
  checks the certificates again (valid now, not revoked since).
- The operator revokes a key by kid or a certificate by serial (audited). The directory
  then lists the key as revoked (so every processor's key ring refuses it) and names the
  revoked serials until the certificates they name expire (so every scheme port refuses
  them at TLS). A revoked key vouches for nothing: its participant comes back only through
  a registration the operator approves.

Every write is one short transaction with its audit entry; the directory is rebuilt after.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import structlog
from cryptography import x509
from sqlalchemy.exc import IntegrityError

from semops.core.errors import E, SemopsError
from semops.core.limits import (
    ADMIN_LIST_MAX,
    CLOCK_SKEW_MAX_S,
    PARTY_CERT_VALIDITY_DAYS,
    PENDING_REGISTRATIONS_MAX,
    PENDING_REGISTRATIONS_PER_PARTY_MAX,
    REVOKED_SERIALS_MAX,
)
from semops.core.urls import check_endpoint_url
from semops.crypto import KeyRing, KeyUse, read_unverified_claims
from semops.crypto.keys import check_kid
from semops.crypto.pki import (
    certificate_key_record,
    load_certificate_pem,
    serial_text,
    validate_chain,
)
from semops.protocol import (
    EntryState,
    ParticipantRegistration,
    Registered,
    RegistrationDecision,
    decide_registration,
    endorsement_signer,
    open_signed,
    parse_claims,
    registration_id_of,
    require_same_party,
)
from semops.protocol.names import name_key
from semops.store import router as store

if TYPE_CHECKING:
    from semops.router.service import Router

log = structlog.get_logger("semops.router")

# A serial revoked without the router knowing its certificate stays listed this long: no
# certificate issued before the revocation can outlive it.
_UNKNOWN_CERTIFICATE_LISTED_S: Final = PARTY_CERT_VALIDITY_DAYS * 24 * 60 * 60 + CLOCK_SKEW_MAX_S


@dataclass(frozen=True, slots=True)
class RegistrationAnswer:
    """The directory after a registration, and the held registration's id if it was held."""

    document: dict[str, str]
    held: str | None = None


@dataclass(frozen=True, slots=True)
class Certified:
    """A registration whose certificates and signature hold, with what they certify."""

    registration: ParticipantRegistration
    sign_certificate: x509.Certificate
    enc_certificate: x509.Certificate

    @property
    def participant_id(self) -> str:
        return self.registration.participant_id

    @property
    def sign_kid(self) -> str:
        return certificate_key_record(self.participant_id, self.sign_certificate, KeyUse.SIGN).kid

    @property
    def enc_kid(self) -> str:
        owner = self.participant_id
        return certificate_key_record(owner, self.enc_certificate, KeyUse.ENCRYPT).kid


def _certificate(pem: str) -> x509.Certificate:
    try:
        return load_certificate_pem(pem.encode("ascii"))
    except ValueError:
        raise SemopsError(E.CERTIFICATE_INVALID, "the certificate cannot be read") from None


def _entry_of(row: dict[str, Any]) -> EntryState:
    return EntryState(
        kind=row["kind"],
        display_name=row["display_name"],
        endpoint=row["endpoint"],
        sign_certificate=row["sign_certificate"],
        enc_certificate=row["enc_certificate"],
    )


def _held_summary(row: dict[str, Any]) -> dict[str, Any]:
    """A held registration as the operator sees it (no certificate PEM)."""
    keys = (
        "registration_id",
        "participant_id",
        "state",
        "changes",
        "kind",
        "display_name",
        "endpoint",
        "sign_kid",
        "enc_kid",
        "created_at",
        "decided_at",
        "decided_by",
    )
    summary = {key: row.get(key) for key in keys}
    summary["changes"] = [name for name in str(row.get("changes") or "").split(",") if name]
    return summary


class Participants:
    """The participant lifecycle of one router (see the module docstring)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    # --- registration -----------------------------------------------------------------

    async def register(self, token: str, *, tls_party: str) -> RegistrationAnswer:
        router = self.router
        now = router.clock.now()
        certified = self._verify(token, now, tls_party)
        owner = certified.participant_id
        try:
            decision, held = await self._register(certified, now)
        except IntegrityError:
            # Two first registrations of one participant at once (PostgreSQL): the one that
            # lost decides again, against the row the other one wrote (held, or unchanged).
            decision, held = await self._register(certified, now)
        if decision in (RegistrationDecision.ADMIT, RegistrationDecision.UPDATE):
            log.info("participant_registered", participant=owner, kid=certified.sign_kid)
            await router.rebuild_directory()
        return RegistrationAnswer(router.directory_document(), held)

    async def _register(
        self, certified: Certified, now: int
    ) -> tuple[RegistrationDecision, str | None]:
        router = self.router
        registration, owner = certified.registration, certified.participant_id
        proposed = EntryState.of(registration)
        held: str | None = None
        async with router.database.write() as connection:
            await self._refuse_revoked(connection, certified)
            row = await store.get_participant_for_update(connection, owner)
            current = await self._registered(connection, row) if row is not None else None
            vouched = {certified.sign_kid}
            if row is not None:
                current_key = certificate_key_record(
                    owner, _certificate(row["sign_certificate"]), KeyUse.SIGN
                )
                endorsed = endorsement_signer(registration, current_key, now)
                if endorsed is not None:
                    vouched.add(endorsed)
            decision = decide_registration(current, proposed, frozenset(vouched))
            if decision is not RegistrationDecision.UNCHANGED:
                await self._refuse_lookalike(connection, owner, registration.display_name)
            if decision is RegistrationDecision.ADMIT:
                await self._admit(connection, certified, now)
            elif decision is RegistrationDecision.UPDATE:
                assert current is not None
                await self._update(connection, certified, current, now, vouched)
                # The same change held earlier (sent before the endorsing key was at hand)
                # is done now: its row says so, and by whom, instead of waiting forever.
                held_before = registration_id_of(owner, proposed)
                await store.decide_registration(connection, held_before, "approved", now, owner)
            elif decision is RegistrationDecision.HOLD:
                assert current is not None
                held = await self._hold(connection, certified, current, now)
        return decision, held

    @staticmethod
    async def _refuse_lookalike(connection: Any, owner: str, display_name: str) -> None:
        """Refuse a display name a payer could take for another participant's: wallets show
        "payee id at <processor name>", so two processors must never look alike there."""
        key = name_key(display_name)
        for row in await store.list_participants(connection):
            if row["participant_id"] != owner and name_key(row["display_name"]) == key:
                raise SemopsError(
                    E.NAME_CONFUSABLE, "another participant has a name that looks the same"
                )

    def _verify(self, token: str, now: int, tls_party: str) -> Certified:
        # The key that signed the registration comes from the certificate inside it, so
        # read the claims first, check the certificates against the root, then verify the
        # signature with the certified key. Nothing is trusted before all of it holds.
        router = self.router
        unverified = parse_claims(read_unverified_claims(token), ParticipantRegistration)
        owner = unverified.participant_id
        require_same_party(owner, tls_party)
        if owner == router.identity.router_id:
            raise SemopsError(E.FORBIDDEN, "the router's own entry is not registered")
        at = datetime.fromtimestamp(now, UTC)
        root = router.identity.root_certificate
        sign_cert = _certificate(unverified.sign_certificate)
        enc_cert = _certificate(unverified.enc_certificate)
        identity = validate_chain(sign_cert, root, at, expected_party=owner, expected_usage="sign")
        validate_chain(enc_cert, root, at, expected_party=owner, expected_usage="encrypt")
        if identity.role != "processor":
            raise SemopsError(E.CERTIFICATE_INVALID, "a participant registers as a processor")
        ring = KeyRing([certificate_key_record(owner, sign_cert, KeyUse.SIGN)])
        registration = open_signed(token, ParticipantRegistration, ring, now).message
        check_endpoint_url(registration.endpoint)
        return Certified(registration, sign_cert, enc_cert)

    @staticmethod
    async def _refuse_revoked(connection: Any, certified: Certified) -> None:
        serials = [
            serial_text(certified.sign_certificate.serial_number),
            serial_text(certified.enc_certificate.serial_number),
        ]
        if await store.revoked_among(connection, "serial", serials):
            raise SemopsError(E.CERTIFICATE_REVOKED)
        if await store.revoked_among(connection, "kid", [certified.sign_kid, certified.enc_kid]):
            raise SemopsError(E.KEY_REVOKED)

    @staticmethod
    async def _registered(connection: Any, row: dict[str, Any]) -> Registered:
        owner = row["participant_id"]
        certificate = _certificate(row["sign_certificate"])
        kid = certificate_key_record(owner, certificate, KeyUse.SIGN).kid
        revoked_kid = await store.revoked_among(connection, "kid", [kid])
        serial = serial_text(certificate.serial_number)
        revoked_serial = await store.revoked_among(connection, "serial", [serial])
        return Registered(_entry_of(row), kid, bool(revoked_kid or revoked_serial))

    async def _admit(self, connection: Any, certified: Certified, now: int) -> None:
        """A participant's first entry: an insert, never an overwrite (a concurrent first
        registration fails on the key and is decided again, see `register`)."""
        registration = certified.registration
        await store.insert_participant(
            connection,
            {
                "participant_id": registration.participant_id,
                "kind": registration.kind,
                "display_name": registration.display_name,
                "endpoint": registration.endpoint,
                "status": "active",
                "sign_certificate": registration.sign_certificate,
                "enc_certificate": registration.enc_certificate,
                "net_debit_cap_minor": None,
                "registered_at": now,
                "updated_at": now,
            },
        )
        await self.router.audit.append(
            connection,
            "participant_registered",
            registration.participant_id,
            {
                "participant_id": registration.participant_id,
                "first": True,
                "kid": certified.sign_kid,
                "enc_kid": certified.enc_kid,
            },
        )

    async def _update(
        self,
        connection: Any,
        certified: Certified,
        current: Registered,
        now: int,
        vouched: set[str],
    ) -> None:
        registration = certified.registration
        changes = EntryState.of(registration).changes_from(current.entry)
        await store.update_participant_entry(
            connection, registration.participant_id, self._entry_values(registration, now)
        )
        await self.router.audit.append(
            connection,
            "participant_registered",
            registration.participant_id,
            {
                "participant_id": registration.participant_id,
                "first": False,
                "kid": certified.sign_kid,
                "enc_kid": certified.enc_kid,
                "previous_kid": current.sign_kid,
                "changes": "+".join(changes),
                # Vouched for by the current key through an endorsement: a key rotation.
                "endorsed": current.sign_kid in vouched and current.sign_kid != certified.sign_kid,
            },
        )

    @staticmethod
    def _entry_values(registration: ParticipantRegistration, now: int) -> dict[str, Any]:
        return {
            "kind": registration.kind,
            "display_name": registration.display_name,
            "endpoint": registration.endpoint,
            "sign_certificate": registration.sign_certificate,
            "enc_certificate": registration.enc_certificate,
            "updated_at": now,
        }

    async def _hold(
        self, connection: Any, certified: Certified, current: Registered, now: int
    ) -> str:
        """Keep the change for the operator (once per proposal); the directory stays."""
        registration = certified.registration
        owner = registration.participant_id
        proposed = EntryState.of(registration)
        registration_id = registration_id_of(owner, proposed)
        existing = await store.get_registration(connection, registration_id, for_update=True)
        if existing is not None and existing["state"] == "pending":
            return registration_id  # held already: a retry adds nothing
        if (
            await store.count_pending_registrations(connection, owner)
            >= PENDING_REGISTRATIONS_PER_PARTY_MAX
            or await store.count_pending_registrations(connection) >= PENDING_REGISTRATIONS_MAX
        ):
            raise SemopsError(E.REGISTRATIONS_PENDING_FULL)
        changes = proposed.changes_from(current.entry)
        row = {
            "registration_id": registration_id,
            "participant_id": owner,
            "kind": registration.kind,
            "display_name": registration.display_name,
            "endpoint": registration.endpoint,
            "sign_certificate": registration.sign_certificate,
            "enc_certificate": registration.enc_certificate,
            "sign_kid": certified.sign_kid,
            "enc_kid": certified.enc_kid,
            "state": "pending",
            "changes": ",".join(changes),
            "created_at": now,
            "decided_at": None,
            "decided_by": None,
        }
        if existing is None:
            await store.insert_registration(connection, row)
        else:  # rejected or approved once, proposed again: the operator decides again
            await store.reopen_registration(connection, registration_id, now)
        await self.router.audit.append(
            connection,
            "registration_held",
            owner,
            {
                "participant_id": owner,
                "registration_id": registration_id,
                "kid": certified.sign_kid,
                "enc_kid": certified.enc_kid,
                "previous_kid": current.sign_kid,
                "current_key_revoked": current.sign_key_revoked,
                "changes": "+".join(changes),
            },
        )
        # Loud: a change to a participant that its current key did not sign is either an
        # operator's job or an attack with a second certificate (issue 11, H1).
        log.error(
            "registration_held", participant=owner, kid=certified.sign_kid, kind=",".join(changes)
        )
        return registration_id

    # --- the operator's decisions -----------------------------------------------------

    async def held(self, state: str | None = "pending") -> list[dict[str, Any]]:
        async with self.router.database.read() as connection:
            rows = await store.list_registrations(connection, state=state, limit=ADMIN_LIST_MAX)
        return [_held_summary(row) for row in rows]

    async def approve(self, registration_id: str, actor: str = "operator") -> dict[str, Any]:
        router = self.router
        now = router.clock.now()
        async with router.database.write() as connection:
            row = await self._pending(connection, registration_id)
            certified = self._recheck(row, now)
            await self._refuse_revoked(connection, certified)
            owner = row["participant_id"]
            existing = await store.get_participant_for_update(connection, owner)
            await self._refuse_lookalike(connection, owner, certified.registration.display_name)
            if existing is None:
                await self._admit(connection, certified, now)
            else:
                values = self._entry_values(certified.registration, now)
                await store.update_participant_entry(connection, owner, values)
            await store.decide_registration(connection, registration_id, "approved", now, actor)
            await router.audit.append(
                connection,
                "registration_approved",
                actor,
                {
                    "participant_id": owner,
                    "registration_id": registration_id,
                    "kid": row["sign_kid"],
                    "enc_kid": row["enc_kid"],
                    "changes": str(row["changes"]).replace(",", "+"),
                },
            )
            decided = await store.get_registration(connection, registration_id)
        assert decided is not None
        log.warning("registration_approved", participant=owner, kid=row["sign_kid"])
        await router.rebuild_directory()
        return _held_summary(decided)

    async def reject(self, registration_id: str, actor: str = "operator") -> dict[str, Any]:
        router = self.router
        now = router.clock.now()
        async with router.database.write() as connection:
            row = await self._pending(connection, registration_id)
            await store.decide_registration(connection, registration_id, "rejected", now, actor)
            await router.audit.append(
                connection,
                "registration_rejected",
                actor,
                {
                    "participant_id": row["participant_id"],
                    "registration_id": registration_id,
                    "kid": row["sign_kid"],
                },
            )
            decided = await store.get_registration(connection, registration_id)
        assert decided is not None
        log.info("registration_rejected", participant=row["participant_id"], kid=row["sign_kid"])
        return _held_summary(decided)

    @staticmethod
    async def _pending(connection: Any, registration_id: str) -> dict[str, Any]:
        row = await store.get_registration(connection, registration_id, for_update=True)
        if row is None:
            raise SemopsError(E.NOT_FOUND, "no such held registration")
        if row["state"] != "pending":
            raise SemopsError(E.REGISTRATION_DECIDED)
        return row

    def _recheck(self, row: dict[str, Any], now: int) -> Certified:
        """The held certificates, valid *now* (they may have expired while waiting)."""
        at = datetime.fromtimestamp(now, UTC)
        root = self.router.identity.root_certificate
        owner = row["participant_id"]
        sign_cert = _certificate(row["sign_certificate"])
        enc_cert = _certificate(row["enc_certificate"])
        validate_chain(sign_cert, root, at, expected_party=owner, expected_usage="sign")
        validate_chain(enc_cert, root, at, expected_party=owner, expected_usage="encrypt")
        registration = ParticipantRegistration(
            participant_id=owner,
            kind=row["kind"],
            display_name=row["display_name"],
            endpoint=row["endpoint"],
            sign_certificate=row["sign_certificate"],
            enc_certificate=row["enc_certificate"],
            created_at=now,
            expires_at=now + 1,
        )
        return Certified(registration, sign_cert, enc_cert)

    # --- revocation -------------------------------------------------------------------

    async def revoke_key(
        self, participant_id: str, kid: str, actor: str = "operator"
    ) -> dict[str, Any]:
        """Revoke one of a participant's keys by kid (audited; published at once)."""
        router = self.router
        try:
            check_kid(kid)
        except SemopsError:
            raise SemopsError(E.VALIDATION_FAILED, "the kid is not well-formed") from None
        if not kid.startswith(participant_id + ":"):
            raise SemopsError(E.VALIDATION_FAILED, "the kid is not one of this participant's")
        if participant_id == router.identity.router_id:
            raise SemopsError(E.FORBIDDEN, "the router's own key is replaced, not revoked")
        now = router.clock.now()
        async with router.database.write() as connection:
            row = await store.get_participant(connection, participant_id)
            if row is None:
                raise SemopsError(E.PROCESSOR_UNKNOWN)
            revoked = await store.insert_revocation(
                connection,
                {
                    "kind": "kid",
                    "value": kid,
                    "participant_id": participant_id,
                    "revoked_at": now,
                    "listed_until": now,
                    "revoked_by": actor,
                },
            )
            # The registered certificate of that key is revoked with it, by serial: a key
            # that is no longer trusted must not open a TLS connection either, and the
            # serial stays listed until the certificate expires, after the key itself has
            # left the directory.
            serial = await self._revoke_certificate_of(connection, row, kid, now, actor)
            if revoked:
                data = {"participant_id": participant_id, "kid": kid}
                if serial is not None:
                    data["serial"] = serial
                await router.audit.append(connection, "key_revoked", actor, data)
        if revoked:
            log.warning("key_revoked", participant=participant_id, kid=kid)
            await router.rebuild_directory()
        return {"participant_id": participant_id, "kid": kid, "newly_revoked": revoked}

    @staticmethod
    async def _revoke_certificate_of(
        connection: Any, row: dict[str, Any], kid: str, now: int, actor: str
    ) -> str | None:
        """Revoke the serial of the participant's registered certificate whose key is `kid`
        (its serial as written, or None when no registered certificate has that key)."""
        owner = row["participant_id"]
        for column, use in (("sign_certificate", KeyUse.SIGN), ("enc_certificate", KeyUse.ENCRYPT)):
            certificate = _certificate(row[column])
            if certificate_key_record(owner, certificate, use).kid != kid:
                continue
            if await store.count_listed_serials(connection, now) >= REVOKED_SERIALS_MAX:
                raise SemopsError(E.REVOCATIONS_FULL)
            text = serial_text(certificate.serial_number)
            await store.insert_revocation(
                connection,
                {
                    "kind": "serial",
                    "value": text,
                    "participant_id": owner,
                    "revoked_at": now,
                    "listed_until": int(certificate.not_valid_after_utc.timestamp()),
                    "revoked_by": actor,
                },
            )
            return text
        return None

    async def revoke_certificate(self, serial: int, actor: str = "operator") -> dict[str, Any]:
        """Revoke a certificate by serial, known to the router or not (audited)."""
        router = self.router
        text = serial_text(serial)
        identity = router.identity
        if serial in (
            identity.sign_certificate.serial_number,
            identity.enc_certificate.serial_number,
        ):
            raise SemopsError(E.FORBIDDEN, "the router's own certificate is replaced, not revoked")
        now = router.clock.now()
        async with router.database.write() as connection:
            owner, not_after = await self._certificate_known(connection, serial)
            if await store.count_listed_serials(connection, now) >= REVOKED_SERIALS_MAX:
                raise SemopsError(E.REVOCATIONS_FULL)
            revoked = await store.insert_revocation(
                connection,
                {
                    "kind": "serial",
                    "value": text,
                    "participant_id": owner,
                    "revoked_at": now,
                    "listed_until": not_after or now + _UNKNOWN_CERTIFICATE_LISTED_S,
                    "revoked_by": actor,
                },
            )
            if revoked:
                await router.audit.append(
                    connection,
                    "certificate_revoked",
                    actor,
                    {"serial": text, "participant_id": owner},
                )
        if revoked:
            log.warning("certificate_revoked", participant=owner, serial=text)
            await router.rebuild_directory()
        return {"serial": text, "participant_id": owner, "newly_revoked": revoked}

    @staticmethod
    async def _certificate_known(connection: Any, serial: int) -> tuple[str | None, int | None]:
        """(owner, expiry) of a registered or held certificate with this serial, if any."""
        for row in await store.list_participants(connection):
            for column in ("sign_certificate", "enc_certificate"):
                certificate = _certificate(row[column])
                if certificate.serial_number == serial:
                    expiry = int(certificate.not_valid_after_utc.timestamp())
                    return row["participant_id"], expiry
        return None, None

    async def revocations(self) -> list[dict[str, Any]]:
        async with self.router.database.read() as connection:
            rows = await store.list_revocations(connection, ADMIN_LIST_MAX)
        return [
            {
                "kind": row["kind"],
                "value": row["value"],
                "participant_id": row["participant_id"],
                "revoked_at": row["revoked_at"],
                "revoked_by": row["revoked_by"],
            }
            for row in rows
        ]
