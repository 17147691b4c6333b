"""The router: the scheme's data center and the commit point of every transfer.

Theory of operation (DESIGN.md §3, §6, §8):

- Participants join with a registration signed by the key of a certificate that chains to
  the scheme root and names them; a later change needs the participant's current key or the
  scheme operator, and keys and certificates can be revoked (semops.router.participants).
  The router publishes a signed directory built from the registered certificates (ids,
  kinds, endpoints, keys with their status, revoked serials), rebuilt on every change and
  re-read from the database every few seconds, so every worker publishes the same.
- Every call on the scheme port comes over mutual TLS from a processor (service/tls.py
  checks the certificate); a message that names its sender (a prepare's payer processor,
  a refund's sender, a registration's participant) must come from that very participant.
- A payment arrives as a TransferPrepare signed by the payer processor. The router checks
  the signature and that both processors are active, checks the payer processor's
  net-debit cap (its position in the open settlement window minus what it has in flight),
  records the transfer RESERVED, and only then asks the payee processor, with a
  RoutedPrepare that it signs itself and that does not name the payer processor. The
  answer is a TransferFulfil (whose fulfilment must hash to the condition, before expiry)
  or a TransferReject. The RoutedPrepare is stored with the transfer: when its answer is
  lost (a dropped connection, a payee restarting, the router itself restarted), the
  identical token is sent again — at once a few times, then every few seconds by `redrive`
  — until the payee answers (from its storage, if it had answered before) or the transfer
  expires. A lost message therefore delays a payment instead of failing it.
- Recording COMMITTED, together with the settlement window that is open
  (semops.router.settlement), the status message for the payee and an audit entry (staged),
  in one database transaction is the commit point: from then on both processors must
  finish the payment. The commit marks the transfer unfolded instead of moving both net
  positions: a background pass folds committed transfers into the position rows, and a
  position is read as booked (row plus unfolded transfers), so no two commits wait on
  the same row. The payer
  processor hears the outcome in the reply to its prepare; the payee processor through the
  durable outbox, re-sent until acknowledged. Anyone may ask for a transfer's state.
- A transfer still RESERVED at its expiry is aborted by a sweeper, and both sides are told.
  A prepare that arrives after its expiry is refused without being recorded, so a payer
  processor that finds no record of its expired transfer knows it can never be committed.
- A refund names an earlier committed payment. The router alone knows who paid it, so it
  forwards the refund to that processor and commits when it accepts, never beyond the
  amount paid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, Final

import structlog
from cryptography import x509
from sqlalchemy.exc import IntegrityError

from semops.audit.log import AuditLog
from semops.audit.report import cap_allows
from semops.core.clock import Clock
from semops.core.errors import E, SemopsError
from semops.core.limits import (
    DIRECTORY_RELOAD_INTERVAL_S,
    REVOKED_SERIALS_MAX,
    TRANSFER_HOP_MARGIN_S,
    TRANSFER_TTL_DEFAULT_S,
)
from semops.crypto import (
    KeyRing,
    KeyStatus,
    KeyUse,
    PrivateKey,
    check_fulfilment,
    read_unverified_claims,
)
from semops.crypto.keys import PublicKeyRecord
from semops.crypto.pki import (
    certificate_key_record,
    certificate_pem,
    load_certificate_pem,
    serial_text,
)
from semops.protocol import (
    ROUTER_TRANSFER,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    RefundResult,
    RefundTransfer,
    RoutedPrepare,
    RouterTransferEvent,
    RouterTransferState,
    TransferFulfil,
    TransferPrepare,
    TransferReject,
    TransferStatus,
    open_signed,
    parse_claims,
    require_same_party,
    sign,
)
from semops.router.participants import Participants, RegistrationAnswer
from semops.service.http import Peer
from semops.service.loops import every, in_batches
from semops.service.outbox import OUTBOX_DELIVERY_TIMEOUT_S, Deliverer
from semops.store import router as store
from semops.store.db import Database

log = structlog.get_logger("semops.router")

# The payee processor must answer a routed prepare within this time (or before expiry).
PAYEE_ANSWER_TIMEOUT_S: Final = 10.0
# A signed directory is valid for a day; it is rebuilt whenever a participant changes.
DIRECTORY_TTL_S: Final = 24 * 60 * 60
SWEEP_BATCH_MAX: Final = 500
# Transfers expire on whole seconds; looking twice a second aborts one within half a second.
SWEEP_INTERVAL_S: Final = 0.5
# A routed prepare whose answer is lost is sent again at once, this many times in all; after
# that `redrive` resends undecided payments every REDRIVE_INTERVAL_S until they expire.
FORWARD_ATTEMPTS_MAX: Final = 3
FORWARD_RETRY_PAUSE_S: Final = 0.2
REDRIVE_INTERVAL_S: Final = 2
REDRIVE_BATCH_MAX: Final = 64
# Resends in flight at once: each may end in a commit, which needs a database connection.
REDRIVE_CONCURRENCY: Final = 8
# Committed transfers are folded into the positions this often, at most this many per
# write transaction: a booked position reads the row and a second's worth of transfers.
POSITIONS_FOLD_INTERVAL_S: Final = 1.0
SCHEME_STATUS_PATH: Final = "/v1/scheme/status"
SCHEME_TRANSFERS_PATH: Final = "/v1/scheme/transfers"
SCHEME_REFUNDS_PATH: Final = "/v1/scheme/refunds"


# Reading the open window again after a concurrent close (PostgreSQL), or opening the first.
_WINDOW_ATTEMPTS_MAX: Final = 3


_CERTIFICATE_COLUMNS: Final = (
    ("sign_certificate", KeyUse.SIGN),
    ("enc_certificate", KeyUse.ENCRYPT),
)


def _certified(
    rows: list[dict[str, Any]],
) -> dict[tuple[str, tuple[str, KeyUse]], tuple[PublicKeyRecord, str]]:
    """Each participant certificate's key record and serial (hex)."""
    found = {}
    for row in rows:
        owner = row["participant_id"]
        for column in _CERTIFICATE_COLUMNS:
            certificate = load_certificate_pem(row[column[0]].encode())
            record = certificate_key_record(owner, certificate, column[1])
            found[(owner, column)] = (record, serial_text(certificate.serial_number))
    return found


def _audited(transfer: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps of a decided transfer: ids, parties, amount, outcome."""
    return {
        "transfer_id": transfer["transfer_id"],
        "transfer_kind": transfer["kind"],
        "payer_processor": transfer["payer_processor"],
        "payee_processor": transfer["payee_processor"],
        "amount_minor": transfer["amount_minor"],
        "currency": transfer["currency"],
        "original_transfer_id": transfer["original_transfer_id"],
        "window_id": transfer["window_id"],
        "reason_code": transfer["reason_code"],
    }


class _StatusOutbox:
    """The router's outbox as a `Deliverer` sees it: TransferStatus messages, each sent to
    the scheme endpoint the current directory lists for its destination."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def due(self, now: int, limit: int) -> list[dict[str, Any]]:
        async with self.router.database.read() as connection:
            return await store.due_messages(connection, now, limit)

    async def send(self, message: dict[str, Any]) -> None:
        entry = self.router.directory.entry(message["destination"])
        await self.router.peer.call_jose(
            "POST",
            entry.endpoint + message["path"],
            jose=message["body"],
            timeout_s=OUTBOX_DELIVERY_TIMEOUT_S,
        )

    async def delivered(self, messages: list[dict[str, Any]], now: int) -> None:
        async with self.router.database.write() as connection:
            await store.mark_delivered(connection, [m["message_id"] for m in messages], now)

    async def retry_later(
        self, message: dict[str, Any], attempts: int, at: int, error: SemopsError | None
    ) -> None:
        async with self.router.database.write() as connection:
            await store.mark_attempt(connection, message["message_id"], attempts, at)
        if error is not None:
            log.info("outbox_retry", destination=message["destination"], code=error.code)


@dataclass(frozen=True, slots=True)
class RouterIdentity:
    router_id: str
    display_name: str
    endpoint: str
    sign_key: PrivateKey
    sign_certificate: x509.Certificate
    enc_certificate: x509.Certificate
    root_certificate: x509.Certificate


@dataclass(frozen=True, slots=True)
class Outcome:
    """A signed TransferStatus and whether the transfer is decided (200) or not yet (202)."""

    token: str
    decided: bool


class Router:
    def __init__(self, identity: RouterIdentity, database: Database, clock: Clock, peer: Peer):
        self.identity = identity
        self.database = database
        self.clock = clock
        self.peer = peer
        self._directory: Directory | None = None
        self._directory_token: str | None = None
        self._directory_source: Any = None
        self._ring = KeyRing()
        self._revoked_serials: frozenset[int] = frozenset()
        self._serial = 0
        self.outbox = Deliverer(_StatusOutbox(self), clock)
        # Payments being forwarded by a request handler now, and when `redrive` last
        # resent each undecided one (in this process only: a restart forgets, and resends).
        self._forwarding: set[str] = set()
        self._redriven: dict[str, int] = {}
        self.audit = AuditLog(
            identity.router_id,
            store.audit_log,
            store.audit_pending,
            database,
            identity.sign_key,
            clock,
        )
        self.participants = Participants(self)

    # --- directory --------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock.now()
        identity = self.identity
        async with self.database.write() as connection:
            await store.save_participant(
                connection,
                {
                    "participant_id": identity.router_id,
                    "kind": "router",
                    "display_name": identity.display_name,
                    "endpoint": identity.endpoint,
                    "status": "active",
                    "sign_certificate": certificate_pem(identity.sign_certificate).decode(),
                    "enc_certificate": certificate_pem(identity.enc_certificate).decode(),
                    "net_debit_cap_minor": None,
                    "registered_at": now,
                    "updated_at": now,
                },
            )
        await self.ensure_open_window()
        await self.audit.seal()  # a tail left unsigned by a crash is signed now
        await self.rebuild_directory()

    async def ensure_open_window(self) -> None:
        """Open the first settlement window if there is none (a new database)."""
        for _ in range(_WINDOW_ATTEMPTS_MAX):
            async with self.database.read() as connection:
                if await store.open_window(connection) is not None:
                    return
            try:
                async with self.database.write() as connection:
                    next_id = await store.last_window_id(connection) + 1
                    await store.create_window(connection, next_id, self.clock.now())
                return
            except IntegrityError:  # another worker opened it first
                continue
        raise SemopsError(E.INTERNAL, "no settlement window could be opened")

    async def rebuild_directory(self, *, only_if_changed: bool = False) -> bool:
        """Build and sign the directory from the participants and revocations; with
        `only_if_changed`, only when they changed since the last build (another worker
        changed them) or the signed directory is half way to its expiry. True if built."""
        now = self.clock.now()
        async with self.database.read() as connection:
            rows = await store.list_participants(connection)
            certified = _certified(rows)
            kids = [record.kid for record, _ in certified.values()]
            revoked_kids = await store.revoked_among(connection, "kid", kids)
            serials = [serial for _, serial in certified.values()]
            revoked = await store.revoked_among(connection, "serial", serials)
            listed = await store.listed_serials(connection, now, REVOKED_SERIALS_MAX)
        source = (
            [{k: v for k, v in row.items() if k != "updated_at"} for row in rows],
            sorted(revoked_kids),
            sorted(revoked),
            listed,
        )
        current = self._directory
        if (
            only_if_changed
            and current is not None
            and source == self._directory_source
            and now < (current.issued_at + current.expires_at) // 2
        ):
            return False
        entries = []
        for row in rows:
            owner = row["participant_id"]
            keys = []
            for column in _CERTIFICATE_COLUMNS:
                record, serial = certified[(owner, column)]
                if record.kid in revoked_kids or serial in revoked:
                    record = dataclasses.replace(record, status=KeyStatus.REVOKED)
                keys.append(DirectoryKey.from_record(record))
            entries.append(
                DirectoryEntry(
                    participant_id=owner,
                    kind=row["kind"],
                    display_name=row["display_name"],
                    endpoint=row["endpoint"],
                    status=row["status"],
                    keys=tuple(keys),
                )
            )
        self._serial = max(self._serial + 1, now)
        ordered = sorted(listed, key=lambda text: (len(text), text))
        directory = Directory(
            serial=self._serial,
            router_id=self.identity.router_id,
            issued_at=now,
            expires_at=now + DIRECTORY_TTL_S,
            entries=tuple(entries),
            revoked_serials=tuple(ordered) or None,
        )
        self._directory = directory
        self._directory_token = sign(directory, self.identity.sign_key)
        self._directory_source = source
        self._ring = KeyRing(directory.key_records())
        self._revoked_serials = directory.revoked_serial_numbers()
        return True

    @property
    def revoked_serials(self) -> frozenset[int]:
        """The revoked certificate serials of the current directory (refused at TLS)."""
        return self._revoked_serials

    def directory_document(self) -> dict[str, str]:
        assert self._directory_token is not None, "start() builds the directory"
        return {
            "directory": self._directory_token,
            "router_certificate": certificate_pem(self.identity.sign_certificate).decode(),
        }

    @property
    def ring(self) -> KeyRing:
        """The keys of the current directory: every registered participant's."""
        return self._ring

    @property
    def directory(self) -> Directory:
        assert self._directory is not None, "start() builds the directory"
        return self._directory

    async def register(self, token: str, *, tls_party: str) -> RegistrationAnswer:
        """Admit or update a processor, or hold the change for the operator."""
        return await self.participants.register(token, tls_party=tls_party)

    # --- participants ---------------------------------------------------------------------

    def _active(self, participant_id: str) -> DirectoryEntry:
        entry = self.directory.active_entry(participant_id)
        try:  # a participant whose signing key is revoked can neither send nor answer
            entry.current_key(KeyUse.SIGN, self.clock.now())
        except SemopsError:
            raise SemopsError(
                E.PROCESSOR_SUSPENDED, "the participant has no usable signing key"
            ) from None
        return entry

    def _verify(self, token: str, expected: type[Any], now: int) -> Any:
        return open_signed(token, expected, self._ring, now)

    def _verify_from(self, token: str, expected: type[Any], now: int, tls_party: str) -> Any:
        """Verify a message that must come from the TLS client it names: every check of
        `open_signed` first (so a changed field is a bad signature, whatever it is), then
        the signer must be the participant at the other end of this connection."""
        signed = self._verify(token, expected, now)
        require_same_party(signed.message.signer_party(), tls_party)
        return signed

    async def set_status(self, participant_id: str, status: str, actor: str = "operator") -> None:
        """Operator action: suspend or resume a processor (audited)."""
        if status not in ("active", "suspended") or participant_id == self.identity.router_id:
            raise SemopsError(E.VALIDATION_FAILED, "status is active or suspended")
        async with self.database.write() as connection:
            if not await store.set_participant_status(
                connection, participant_id, status, self.clock.now()
            ):
                raise SemopsError(E.PROCESSOR_UNKNOWN)
            kind = "participant_resumed" if status == "active" else "participant_suspended"
            await self.audit.append(connection, kind, actor, {"participant_id": participant_id})
        log.info("participant_status_changed", participant=participant_id, status=status)
        await self.rebuild_directory()

    async def set_cap(
        self, participant_id: str, cap_minor: int | None, actor: str = "operator"
    ) -> None:
        """Operator action: set or remove a processor's net-debit cap (audited)."""
        if cap_minor is not None and cap_minor < 0:
            raise SemopsError(E.VALIDATION_FAILED, "a net-debit cap is zero or more")
        async with self.database.write() as connection:
            if not await store.set_net_debit_cap(
                connection, participant_id, cap_minor, self.clock.now()
            ):
                raise SemopsError(E.PROCESSOR_UNKNOWN)
            await self.audit.append(
                connection,
                "cap_changed",
                actor,
                {"participant_id": participant_id, "cap_minor": cap_minor},
            )
        log.info("net_debit_cap_changed", participant=participant_id)

    # --- transfers --------------------------------------------------------------------

    def _status_token(self, row: dict[str, Any]) -> str:
        status = TransferStatus(
            transfer_id=row["transfer_id"],
            kind=row["kind"],
            state=row["state"],
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            decided_at=row["decided_at"] if row["decided_at"] is not None else row["created_at"],
            fulfilment=row["fulfilment"] if row["kind"] == "payment" else None,
            reason_code=row["reason_code"],
            original_transfer_id=row["original_transfer_id"],
        )
        return sign(status, self.identity.sign_key)

    async def transfer_status(self, transfer_id: str, *, tls_party: str) -> Outcome:
        """A transfer's state, for the two processors it concerns (to anyone else it does
        not exist: the amount and fulfilment are theirs to know)."""
        async with self.database.read() as connection:
            row = await store.get_transfer(connection, transfer_id)
        if row is None or tls_party not in (row["payer_processor"], row["payee_processor"]):
            raise SemopsError(E.NOT_FOUND, "the router has no such transfer")
        return Outcome(self._status_token(row), row["state"] != "reserved")

    async def _check_cap(
        self,
        connection: Any,
        participant_id: str,
        currency: str,
        amount_minor: int,
        cap: int | None,
    ) -> None:
        """The cap limits what a processor may owe within the open settlement window: its
        position there (committed) less everything it has in flight, whichever window that
        will commit in, so a transfer that commits after a close is still counted once.
        Called after the new transfer is recorded RESERVED in this transaction (`cap` is
        what that insert read), so its own amount is in flight already and is taken out
        once.

        A capped participant's row is locked first (PostgreSQL; SQLite serialises writers),
        so two prepares from one processor decide one after the other: under READ COMMITTED
        each later statement here sees what the previous holder committed, the cap too. A
        participant without a cap is not locked: its prepares need not wait on each other
        (a cap set while one is on its way applies from the next one)."""
        if cap is None:
            return
        if connection.dialect.name == "postgresql":
            participant = await store.get_participant_for_update(connection, participant_id)
            assert participant is not None, "participants are never deleted"
            cap = participant["net_debit_cap_minor"]
            if cap is None:
                return
        position, in_flight = await store.cap_exposure(connection, participant_id, currency)
        if not cap_allows(position, in_flight - amount_minor, amount_minor, cap):
            raise SemopsError(E.NET_DEBIT_CAP_EXCEEDED)

    async def _existing(
        self, connection: Any, transfer_id: str, digest: str
    ) -> dict[str, Any] | None:
        row = await store.get_transfer(connection, transfer_id, for_update=True)
        if row is not None and row["content_digest"] != digest:
            raise SemopsError(E.IDEMPOTENCY_CONFLICT)
        return row

    async def prepare(self, token: str, *, tls_party: str) -> Outcome:
        now = self.clock.now()
        prepare: TransferPrepare = self._verify_from(token, TransferPrepare, now, tls_party).message
        self._active(prepare.payer_processor)
        payee = self._active(prepare.payee_processor)
        digest = prepare.digest()
        routed = RoutedPrepare(
            transfer_id=prepare.transfer_id,
            payee_processor=prepare.payee_processor,
            amount_minor=prepare.amount_minor,
            currency=prepare.currency,
            condition=prepare.condition,
            created_at=now,
            expires_at=max(prepare.expires_at - TRANSFER_HOP_MARGIN_S, now + 1),
            sealed=prepare.sealed,
        )
        routed_token = sign(routed, self.identity.sign_key)
        self._redriven[prepare.transfer_id] = now  # this request forwards it: redrive waits
        try:
            await self._record_prepare(prepare, digest, routed_token, now)
        except IntegrityError:  # recorded before, or by a copy at this very moment
            async with self.database.write() as connection:
                existing = await self._existing(connection, prepare.transfer_id, digest)
            assert existing is not None
            # A retry: answer what we know, act no further.
            return Outcome(self._status_token(existing), existing["state"] != "reserved")
        answer = await self._forward(payee, routed_token, routed)
        return await self._settle_payment(
            prepare.transfer_id, prepare.condition, prepare.expires_at, answer
        )

    async def _record_prepare(
        self, prepare: TransferPrepare, digest: str, routed_token: str, now: int
    ) -> None:
        """Record a new transfer RESERVED. The transfer id's key is the check for a copy
        recorded before (IntegrityError, and nothing written); the cap is checked after
        the insert, in the same transaction, so a refusal leaves no transfer behind."""
        async with self.database.write() as connection:
            cap = await store.insert_transfer(
                connection,
                {
                    "transfer_id": prepare.transfer_id,
                    "kind": "payment",
                    "payer_processor": prepare.payer_processor,
                    "payee_processor": prepare.payee_processor,
                    "amount_minor": prepare.amount_minor,
                    "currency": prepare.currency,
                    "condition": prepare.condition,
                    "expires_at": prepare.expires_at,
                    "state": RouterTransferState.RESERVED.value,
                    "fulfilment": None,
                    "reason_code": None,
                    "original_transfer_id": None,
                    "content_digest": digest,
                    "created_at": now,
                    "decided_at": None,
                    "routed": routed_token,
                },
            )
            await self._check_cap(
                connection, prepare.payer_processor, prepare.currency, prepare.amount_minor, cap
            )

    async def _forward(
        self, payee: DirectoryEntry, routed_token: str, routed: RoutedPrepare
    ) -> TransferFulfil | TransferReject | None:
        """Ask the payee, again with the identical token if the answer is lost on the way
        (the payee answers a repeat from storage), while the routed prepare is valid."""
        self._forwarding.add(routed.transfer_id)
        try:
            for attempt in range(FORWARD_ATTEMPTS_MAX):
                if attempt:
                    await asyncio.sleep(FORWARD_RETRY_PAUSE_S)
                if self.clock.now() >= routed.expires_at:
                    return None
                answer = await self._ask_payee(payee, routed_token, routed)
                if answer is not None:
                    return answer
            return None
        finally:
            self._forwarding.discard(routed.transfer_id)

    async def redrive(self) -> int:
        """Resend the routed prepare of every payment still RESERVED that no request is
        forwarding now (its answer was lost, or the router restarted meanwhile); returns
        how many were decided by this pass. The sweeper still aborts what expires."""
        now = self.clock.now()
        async with self.database.read() as connection:
            rows = await store.undecided_payments(connection, now, REDRIVE_BATCH_MAX)
        due = [
            row
            for row in rows
            if row["transfer_id"] not in self._forwarding
            and self._redriven.get(row["transfer_id"], 0) <= now - REDRIVE_INTERVAL_S
        ]
        slots = asyncio.Semaphore(REDRIVE_CONCURRENCY)

        async def bounded(row: dict[str, Any]) -> bool:
            async with slots:
                return await self._redrive_one(row, now)

        outcomes = await asyncio.gather(*(bounded(row) for row in due))
        for known in list(self._redriven):
            if known not in {row["transfer_id"] for row in rows}:
                del self._redriven[known]  # decided or expired: forget it
        return sum(outcomes)

    async def _redrive_one(self, row: dict[str, Any], now: int) -> bool:
        self._redriven[row["transfer_id"]] = now
        try:
            payee = self._active(row["payee_processor"])
            routed = parse_claims(read_unverified_claims(row["routed"]), RoutedPrepare)
        except SemopsError as error:  # suspended meanwhile: the sweeper ends it at expiry
            log.info("redrive_skipped", transfer_id=row["transfer_id"], code=error.code)
            return False
        answer = await self._forward(payee, row["routed"], routed)
        if answer is None:
            return False
        outcome = await self._settle_payment(
            row["transfer_id"], row["condition"], row["expires_at"], answer
        )
        log.info("transfer_redriven", transfer_id=row["transfer_id"], decided=outcome.decided)
        return outcome.decided

    async def _ask_payee(
        self, payee: DirectoryEntry, routed_token: str, routed: RoutedPrepare
    ) -> TransferFulfil | TransferReject | None:
        timeout_s = max(0.5, min(PAYEE_ANSWER_TIMEOUT_S, routed.expires_at - self.clock.now()))
        try:
            answer = await self.peer.call_jose(
                "POST",
                payee.endpoint + SCHEME_TRANSFERS_PATH,
                jose=routed_token,
                timeout_s=timeout_s,
            )
        except SemopsError as error:
            log.warning("payee_unreachable", transfer_id=routed.transfer_id, code=error.code)
            return None
        try:
            message = self._open_answer(answer, payee.participant_id)
        except SemopsError as error:
            log.warning("payee_answer_refused", transfer_id=routed.transfer_id, code=error.code)
            return None
        if message.transfer_id != routed.transfer_id:
            log.warning("payee_answer_for_other_transfer", transfer_id=routed.transfer_id)
            return None
        return message

    def _open_answer(self, token: str, payee_id: str) -> TransferFulfil | TransferReject:
        now = self.clock.now()
        kind = read_unverified_claims(token).get("type")
        if kind == TransferReject.MESSAGE_TYPE:
            return open_signed(
                token, TransferReject, self._ring, now, expected_signer=payee_id
            ).message
        return open_signed(token, TransferFulfil, self._ring, now, expected_signer=payee_id).message

    async def _settle_payment(
        self,
        transfer_id: str,
        condition: str | None,
        expires_at: int,
        answer: TransferFulfil | TransferReject | None,
    ) -> Outcome:
        now = self.clock.now()
        if answer is None:
            # Undecided: resent by `redrive` and aborted by the sweeper at expiry unless an
            # answer comes first. The payer processor keeps asking; it never voids alone.
            async with self.database.read() as connection:
                row = await store.get_transfer(connection, transfer_id)
            assert row is not None
            return Outcome(self._status_token(row), row["state"] != "reserved")
        if isinstance(answer, TransferFulfil):
            try:
                check_fulfilment(answer.fulfilment, condition or "")
                if now >= expires_at:
                    raise SemopsError(E.TRANSFER_EXPIRED)
                event, reason, fulfilment = RouterTransferEvent.FULFILLED, None, answer.fulfilment
            except SemopsError as error:
                event, reason, fulfilment = RouterTransferEvent.EXPIRED, error.code, None
        else:
            event, reason, fulfilment = RouterTransferEvent.REJECTED, answer.reason_code, None
        return await self._decide(transfer_id, event, reason, fulfilment)

    async def _decide(
        self,
        transfer_id: str,
        event: RouterTransferEvent,
        reason_code: str | None,
        fulfilment: str | None,
    ) -> Outcome:
        """Record the outcome (the commit point) with its window and notifications, once."""
        now = self.clock.now()
        # The status is signed once per decision: the same token goes to the outbox and into
        # the reply (one ECDSA signature, not two, for every payment).
        status_token: str | None = None
        queued: list[dict[str, Any]] = []
        target = ROUTER_TRANSFER.next(RouterTransferState.RESERVED, event)
        committed = target is RouterTransferState.COMMITTED
        async with self.database.write() as connection:
            # One statement decides, if the transfer is still RESERVED: a concurrent answer
            # or the sweeper cannot decide it a second time.
            decided = await store.decide_transfer(
                connection,
                transfer_id,
                state=target.value,
                decided_at=now,
                fulfilment=fulfilment if committed else None,
                reason_code=None if committed else (reason_code or E.TRANSFER_REJECTED.code),
                in_window=committed,
            )
            if decided is None:  # decided before: the event must still fit what it became
                row = await store.get_transfer(connection, transfer_id)
                assert row is not None
                ROUTER_TRANSFER.next(RouterTransferState(row["state"]), event)
            else:
                if committed and decided["window_id"] is None:
                    decided["window_id"] = await self._stamp_open_window(connection, transfer_id)
                status_token = self._status_token(decided)
                # The receiving side learns the outcome through the outbox; the sending side
                # hears it in the reply, and on an abort through the outbox too, since an
                # abort may come from the sweeper long after its call ended.
                queued.append(
                    await store.enqueue(
                        connection,
                        decided["payee_processor"],
                        SCHEME_STATUS_PATH,
                        status_token,
                        now,
                    )
                )
                if not committed:
                    queued.append(
                        await store.enqueue(
                            connection,
                            decided["payer_processor"],
                            SCHEME_STATUS_PATH,
                            status_token,
                            now,
                        )
                    )
                # No row another commit touches: the positions are folded in later
                # (`fold_positions`), the audit entry is staged.
                await self.audit.stage(
                    connection,
                    f"transfer_{target.value}",
                    self.identity.router_id,
                    _audited(decided),
                )
                row = decided
        self.outbox.offer(queued)  # committed: on their way without a look at the outbox
        log.info("transfer_decided", transfer_id=transfer_id, state=row["state"])
        if status_token is None:  # decided before (a concurrent answer, the sweeper)
            status_token = self._status_token(row)
        return Outcome(status_token, row["state"] != "reserved")

    @staticmethod
    async def _stamp_open_window(connection: Any, transfer_id: str) -> int:
        """The open window for a commit whose deciding statement found none: on PostgreSQL a
        close that committed while that statement waited for the window's share lock
        leaves no open row visible to it; a later statement sees the window the close
        opened. Share-locked until this commit ends, so the next close waits for it."""
        for _ in range(_WINDOW_ATTEMPTS_MAX):
            window = await store.open_window(connection, lock="share")
            if window is not None:
                window_id = int(window["window_id"])
                await store.stamp_window(connection, transfer_id, window_id)
                return window_id
        raise SemopsError(E.UNAVAILABLE, "no open settlement window")

    async def fold_positions(self) -> int:
        """The transfers committed since the last pass into the positions and window
        positions, a batch per short write transaction, until none is left; how many."""
        batch_max = store.FOLD_BATCH_MAX
        return await in_batches(
            self.database, lambda connection: store.fold_positions(connection, batch_max), batch_max
        )

    async def sweep_expired(self) -> int:
        """Abort every transfer still RESERVED after its expiry; returns how many."""
        now = self.clock.now()
        async with self.database.read() as connection:
            expired = await store.expired_reserved(connection, now, SWEEP_BATCH_MAX)
        for transfer_id in expired:
            await self._decide(
                transfer_id, RouterTransferEvent.EXPIRED, E.TRANSFER_EXPIRED.code, None
            )
        return len(expired)

    # --- refunds ----------------------------------------------------------------------

    async def refund(self, token: str, *, tls_party: str) -> Outcome:
        now = self.clock.now()
        refund: RefundTransfer = self._verify_from(token, RefundTransfer, now, tls_party).message
        self._active(refund.payee_processor)
        digest = refund.digest()
        async with self.database.write() as connection:
            existing = await self._existing(connection, refund.refund_id, digest)
            if existing is None:
                original = await store.get_transfer(connection, refund.transfer_id)
                if (
                    original is None
                    or original["kind"] != "payment"
                    or original["payee_processor"] != refund.payee_processor
                ):
                    raise SemopsError(E.REFUND_NOT_ALLOWED, "no such payment to this processor")
                if original["state"] != RouterTransferState.COMMITTED.value:
                    raise SemopsError(E.REFUND_NOT_ALLOWED, "the payment was not completed")
                if original["currency"] != refund.currency:
                    raise SemopsError(E.CURRENCY_MISMATCH)
                refunded = await store.refunds_total(connection, refund.transfer_id)
                if refunded + refund.amount_minor > original["amount_minor"]:
                    raise SemopsError(E.REFUND_EXCEEDS_PAID)
                receiver = original["payer_processor"]
                self._deliverable_refund(receiver)
                cap = await store.insert_transfer(
                    connection,
                    {
                        "transfer_id": refund.refund_id,
                        "kind": "refund",
                        "payer_processor": refund.payee_processor,  # the refund's sender
                        "payee_processor": receiver,  # the original payer's processor
                        "amount_minor": refund.amount_minor,
                        "currency": refund.currency,
                        "condition": None,
                        "expires_at": min(refund.expires_at, now + TRANSFER_TTL_DEFAULT_S),
                        "state": RouterTransferState.RESERVED.value,
                        "fulfilment": None,
                        "reason_code": None,
                        "original_transfer_id": refund.transfer_id,
                        "content_digest": digest,
                        "created_at": now,
                        "decided_at": None,
                    },
                )
                # After the insert, as for a payment: the cap check counts the refund in
                # flight already; a refusal rolls the insert back with the transaction.
                await self._check_cap(
                    connection,
                    refund.payee_processor,
                    refund.currency,
                    refund.amount_minor,
                    cap,
                )
        if existing is not None:
            return Outcome(self._status_token(existing), existing["state"] != "reserved")
        try:
            receiver_entry = self._active(receiver)
        except SemopsError:  # suspended since: undecided, and aborted at expiry by the sweeper
            receiver_entry = None
        result = (
            await self._ask_refund_receiver(receiver_entry, token, refund)
            if receiver_entry is not None
            else None
        )
        if result is None:
            async with self.database.read() as connection:
                row = await store.get_transfer(connection, refund.refund_id)
            assert row is not None
            return Outcome(self._status_token(row), row["state"] != "reserved")
        if result.outcome == "accepted":
            return await self._decide(refund.refund_id, RouterTransferEvent.FULFILLED, None, None)
        return await self._decide(
            refund.refund_id, RouterTransferEvent.REJECTED, result.reason_code, None
        )

    def _deliverable_refund(self, receiver: str) -> None:
        """Refuse, before anything is recorded, a refund whose receiver (the original payer's
        processor) cannot take it now, and without saying why: the refund's sender is the
        payee side, which must learn neither that processor's identity nor its state
        (DESIGN.md §5; a "suspended" answer, with the public directory, would name it). The
        sender tries again with the same message while it is valid."""
        try:
            self._active(receiver)
        except SemopsError:
            raise SemopsError(
                E.UNAVAILABLE, "the refund cannot be delivered now; try again"
            ) from None

    async def _ask_refund_receiver(
        self, receiver: DirectoryEntry, token: str, refund: RefundTransfer
    ) -> RefundResult | None:
        try:
            answer = await self.peer.call_jose(
                "POST",
                receiver.endpoint + SCHEME_REFUNDS_PATH,
                jose=token,
                timeout_s=PAYEE_ANSWER_TIMEOUT_S,
            )
            result = open_signed(
                answer,
                RefundResult,
                self._ring,
                self.clock.now(),
                expected_signer=receiver.participant_id,
            ).message
        except SemopsError as error:
            log.warning("refund_receiver_failed", refund_id=refund.refund_id, code=error.code)
            return None
        if result.refund_id != refund.refund_id:
            return None
        return result

    # --- outbox -----------------------------------------------------------------------

    async def deliver_outbox(self) -> int:
        """One delivery pass (concurrent, bounded); returns how many were delivered."""
        return await self.outbox.deliver_due()

    async def run_background(self, stop: asyncio.Event) -> None:
        """Deliver the outbox, sweep expired transfers and resend undecided ones until
        `stop` is set, each in its own loop: a payee that does not answer must not hold up
        the outbox, and a delivery must not wait for a sweep."""
        loops = [
            asyncio.create_task(self._redrive_loop(stop)),
            asyncio.create_task(self.outbox.run(stop)),
            asyncio.create_task(self.audit.run(stop)),
            asyncio.create_task(every(stop, POSITIONS_FOLD_INTERVAL_S, self.fold_positions)),
        ]
        try:
            await self._sweep_loop(stop)
        finally:
            for task in loops:
                task.cancel()
            for task in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _redrive_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.redrive()
            except Exception as error:  # keep the loop alive; the error is logged
                log.error("redrive_failed", error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REDRIVE_INTERVAL_S / 2)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        reloaded_at = self.clock.now()
        while not stop.is_set():
            try:
                await self.sweep_expired()
                if self.clock.now() - reloaded_at >= DIRECTORY_RELOAD_INTERVAL_S:
                    reloaded_at = self.clock.now()
                    await self.rebuild_directory(only_if_changed=True)
            except Exception as error:  # keep the loop alive; the error is logged
                log.error("background_failed", error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_INTERVAL_S)

    async def positions(self) -> list[dict[str, Any]]:
        async with self.database.read() as connection:
            return await store.list_positions(connection)


__all__ = ["Outcome", "Router", "RouterIdentity", "certificate_key_record"]
