"""Settlement windows on paper: the signed report, each processor's statement, headroom.

Theory of operation (DESIGN.md §8). The router assigns every committed transfer (payment or
refund) to the one open settlement window in the transaction that commits it. Closing the
window freezes that set; `build_report` turns it into a `SettlementReport`:

- per processor and currency: `net_minor` (+ owed to it, - it owes), what it sent and
  received (sums and counts), and the list of its transfers with amount and direction;
- the model refuses a report that does not balance: per currency the nets sum to zero,
  every transfer appears exactly twice (sent by one processor, received by another) with
  one amount, and every position equals the sum of its transfer lines.

The router signs the whole report (for the operator and auditors). A processor is given
only its own part, a `SettlementStatement` carrying the digest of the whole report: the
whole report would tell a payee processor who paid each of its transfers, which DESIGN.md
§5 forbids ("payer processor identity" is "-" for the payee processor). Reading a statement or the
headroom takes a `SettlementQuery` signed by the asking processor (the TLS layer does not
tell the application who the client is).

Pure: models and functions of their arguments. Amounts are integer minor units.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from semops.core.encoding import digest_of
from semops.core.errors import E, SemopsError
from semops.core.limits import (
    AUTH_TTL_MAX_S,
    BALANCE_ABS_MAX_MINOR,
    DIRECTORY_ENTRIES_MAX,
    MESSAGE_MAX_BYTES,
)
from semops.crypto import KeyRing, KeyUse, PublicKeyRecord, make_kid, public_jwk
from semops.crypto.pki import load_certificate_pem, validate_chain
from semops.protocol import Message, open_signed
from semops.protocol.messages import AmountMinor, Currency, Digest, Id, PartyId, Timestamp

# The router closes a window by itself once it holds this many transfers, so a report and
# a statement stay a few MiB however busy the scheme is (each transfer line is ~120 bytes
# of JSON, and every transfer is listed twice in the whole report).
WINDOW_TRANSFERS_SOFT_MAX: Final = 10_000
# The hard bound a report's lists are validated against: the soft bound is checked by a
# background pass about once a second, and no scheme commits 40 000 transfers in that time.
REPORT_TRANSFERS_MAX: Final = 50_000
# A signed report (base64url of the JSON above) and a statement, with room to spare.
REPORT_TOKEN_MAX_BYTES: Final = 32 * 1024 * 1024
STATEMENT_TOKEN_MAX_BYTES: Final = 16 * 1024 * 1024
WINDOW_ID_MAX: Final = 2**53
QUERY_PATH_MAX_CHARS: Final = 128

WindowId = Annotated[int, Field(ge=1, le=WINDOW_ID_MAX)]
SignedMinor = Annotated[int, Field(ge=-BALANCE_ABS_MAX_MINOR, le=BALANCE_ABS_MAX_MINOR)]
TotalMinor = Annotated[int, Field(ge=0, le=BALANCE_ABS_MAX_MINOR)]
Count = Annotated[int, Field(ge=0, le=REPORT_TRANSFERS_MAX)]
Direction = Literal["sent", "received"]
TransferKind = Literal["payment", "refund"]


class Part(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", hide_input_in_errors=True)


class SettledTransfer(Part):
    """One transfer as one processor sees it: its direction is from that processor's side."""

    transfer_id: Id
    kind: TransferKind
    direction: Direction
    amount_minor: AmountMinor
    currency: Currency
    committed_at: Timestamp


class CurrencyPosition(Part):
    currency: Currency
    net_minor: SignedMinor  # received - sent: + owed to the processor, - it owes
    sent_minor: TotalMinor
    received_minor: TotalMinor
    sent_count: Count
    received_count: Count


class ParticipantSettlement(Part):
    participant_id: PartyId
    positions: Annotated[tuple[CurrencyPosition, ...], Field(max_length=64, strict=False)]
    transfers: Annotated[
        tuple[SettledTransfer, ...], Field(max_length=REPORT_TRANSFERS_MAX, strict=False)
    ]

    @model_validator(mode="after")
    def _positions_are_the_sum_of_the_lines(self) -> Self:
        if [p.currency for p in self.positions] != sorted({p.currency for p in self.positions}):
            raise ValueError("one position per currency, in currency order")
        if self.positions != _positions(self.transfers):
            raise ValueError("the positions are not the sum of the transfers")
        return self

    def position(self, currency: str) -> CurrencyPosition | None:
        for position in self.positions:
            if position.currency == currency:
                return position
        return None


def _positions(transfers: Iterable[SettledTransfer]) -> tuple[CurrencyPosition, ...]:
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for line in transfers:
        slot = sums[line.currency]
        index = 0 if line.direction == "sent" else 1
        slot[index] += line.amount_minor
        slot[index + 2] += 1
    return tuple(
        CurrencyPosition(
            currency=currency,
            net_minor=received - sent,
            sent_minor=sent,
            received_minor=received,
            sent_count=sent_count,
            received_count=received_count,
        )
        for currency, (sent, received, sent_count, received_count) in sorted(sums.items())
    )


class SettlementReport(Message):
    """The router's signed account of one closed window, for the operator and auditors."""

    MESSAGE_TYPE: ClassVar[str] = "SettlementReport"
    DATED_FIELD: ClassVar[str | None] = "closed_at"
    TOKEN_MAX_BYTES: ClassVar[int] = REPORT_TOKEN_MAX_BYTES

    type: Literal["SettlementReport"] = "SettlementReport"
    router_id: PartyId
    window_id: WindowId
    opened_at: Timestamp
    closed_at: Timestamp
    transfers_count: Annotated[int, Field(ge=0, le=REPORT_TRANSFERS_MAX)]
    participants: Annotated[
        tuple[ParticipantSettlement, ...], Field(max_length=DIRECTORY_ENTRIES_MAX, strict=False)
    ]

    @model_validator(mode="after")
    def _balances(self) -> Self:
        if self.closed_at < self.opened_at:
            raise ValueError("a window closes after it opens")
        ids = [part.participant_id for part in self.participants]
        if ids != sorted(set(ids)):
            raise ValueError("one entry per participant, in id order")
        nets: dict[str, int] = defaultdict(int)
        seen: dict[str, list[SettledTransfer]] = defaultdict(list)
        for part in self.participants:
            for position in part.positions:
                nets[position.currency] += position.net_minor
            for line in part.transfers:
                seen[line.transfer_id].append(line)
        if any(nets.values()):
            raise ValueError("the net positions of a currency do not sum to zero")
        for lines in seen.values():
            if len(lines) != 2 or {line.direction for line in lines} != {"sent", "received"}:
                raise ValueError("a transfer must be sent by one processor and received by one")
            first, second = lines
            if first.model_copy(update={"direction": second.direction}) != second:
                raise ValueError("the two sides of a transfer disagree")
        if len(seen) != self.transfers_count:
            raise ValueError("transfers_count is not the number of transfers")
        return self

    def participant(self, participant_id: str) -> ParticipantSettlement:
        for part in self.participants:
            if part.participant_id == participant_id:
                return part
        return ParticipantSettlement(participant_id=participant_id, positions=(), transfers=())


class SettlementStatement(Message):
    """One processor's part of a closed window's report, signed by the router for it."""

    MESSAGE_TYPE: ClassVar[str] = "SettlementStatement"
    DATED_FIELD: ClassVar[str | None] = "closed_at"
    TOKEN_MAX_BYTES: ClassVar[int] = STATEMENT_TOKEN_MAX_BYTES

    type: Literal["SettlementStatement"] = "SettlementStatement"
    router_id: PartyId
    window_id: WindowId
    opened_at: Timestamp
    closed_at: Timestamp
    report_digest: Digest
    settlement: ParticipantSettlement


QueryPath = Annotated[
    str,
    StringConstraints(max_length=QUERY_PATH_MAX_CHARS, pattern=r"^/v1/settlement/[a-z0-9/]+$"),
]


class SettlementQuery(Message):
    """A processor asking the router for its own settlement data: who asks, for what.

    Sent in `Authorization: SEMOPS-Participant <JWS>`; bound to one path, short-lived.
    A replay within its minute only repeats a read of the asker's own data."""

    MESSAGE_TYPE: ClassVar[str] = "SettlementQuery"
    SIGNER_FIELD: ClassVar[str | None] = "participant_id"
    VALIDITY_MAX_S: ClassVar[int | None] = AUTH_TTL_MAX_S

    type: Literal["SettlementQuery"] = "SettlementQuery"
    participant_id: PartyId
    method: Literal["GET"] = "GET"
    path: QueryPath
    created_at: Timestamp
    expires_at: Timestamp


class HeadroomLine(Part):
    currency: Currency
    position_minor: SignedMinor  # net within the open window, committed transfers only
    in_flight_minor: TotalMinor  # sent but not yet decided: counted as if it commits
    headroom_minor: SignedMinor | None = None  # what may still be sent; None: no cap


class SettlementHeadroom(Message):
    """How much more a processor may send in the open window before its cap refuses it."""

    MESSAGE_TYPE: ClassVar[str] = "SettlementHeadroom"
    DATED_FIELD: ClassVar[str | None] = "issued_at"
    TOKEN_MAX_BYTES: ClassVar[int] = MESSAGE_MAX_BYTES

    type: Literal["SettlementHeadroom"] = "SettlementHeadroom"
    router_id: PartyId
    participant_id: PartyId
    window_id: WindowId
    issued_at: Timestamp
    cap_minor: TotalMinor | None = None  # the same cap applies in every currency
    lines: Annotated[tuple[HeadroomLine, ...], Field(max_length=64, strict=False)]


# --- building -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommittedTransfer:
    """A committed transfer as the router records it: who sent, who received."""

    transfer_id: str
    kind: str
    sender: str
    receiver: str
    amount_minor: int
    currency: str
    committed_at: int


def build_report(
    router_id: str,
    window_id: int,
    opened_at: int,
    closed_at: int,
    transfers: Iterable[CommittedTransfer],
) -> SettlementReport:
    lines: dict[str, list[SettledTransfer]] = defaultdict(list)
    count = 0
    for transfer in sorted(transfers, key=lambda item: (item.committed_at, item.transfer_id)):
        count += 1
        for participant, direction in ((transfer.sender, "sent"), (transfer.receiver, "received")):
            lines[participant].append(
                SettledTransfer(
                    transfer_id=transfer.transfer_id,
                    kind=transfer.kind,  # type: ignore[arg-type]
                    direction=direction,  # type: ignore[arg-type]
                    amount_minor=transfer.amount_minor,
                    currency=transfer.currency,
                    committed_at=transfer.committed_at,
                )
            )
    participants = tuple(
        ParticipantSettlement(
            participant_id=participant,
            positions=_positions(own),
            transfers=tuple(own),
        )
        for participant, own in sorted(lines.items())
    )
    return SettlementReport(
        router_id=router_id,
        window_id=window_id,
        opened_at=opened_at,
        closed_at=closed_at,
        transfers_count=count,
        participants=participants,
    )


def report_digest(report: SettlementReport) -> str:
    return digest_of(report.to_claims())


def statement_for(report: SettlementReport, participant_id: str) -> SettlementStatement:
    return SettlementStatement(
        router_id=report.router_id,
        window_id=report.window_id,
        opened_at=report.opened_at,
        closed_at=report.closed_at,
        report_digest=report_digest(report),
        settlement=report.participant(participant_id),
    )


def cap_allows(position_minor: int, in_flight_minor: int, amount_minor: int, cap: int) -> bool:
    """Whether sending `amount_minor` more keeps what a processor may owe within its cap."""
    return position_minor - in_flight_minor - amount_minor >= -cap


def headroom_line(
    currency: str, position_minor: int, in_flight_minor: int, cap: int | None
) -> HeadroomLine:
    return HeadroomLine(
        currency=currency,
        position_minor=position_minor,
        in_flight_minor=in_flight_minor,
        headroom_minor=None if cap is None else cap + position_minor - in_flight_minor,
    )


def router_key_record(certificate_pem: str, root_pem: bytes, at: datetime) -> PublicKeyRecord:
    """The signing key of a router certificate that chains to the scheme root at `at`."""
    certificate = load_certificate_pem(certificate_pem.encode("ascii"))
    root = load_certificate_pem(root_pem)
    identity = validate_chain(certificate, root, at, expected_usage="sign")
    if identity.role != "router":
        raise SemopsError(E.CERTIFICATE_INVALID, "the report is not signed by a router")
    jwk = public_jwk(certificate.public_key())  # type: ignore[arg-type]
    return PublicKeyRecord(
        kid=make_kid(identity.party_id, jwk),
        owner=identity.party_id,
        use=KeyUse.SIGN,
        jwk=jwk,
        not_before=int(certificate.not_valid_before_utc.timestamp()),
        not_after=int(certificate.not_valid_after_utc.timestamp()),
    )


def open_report(token: str, certificate_pem: str, root_pem: bytes, now: int) -> SettlementReport:
    """A signed report, verified with a router certificate checked against the root."""
    record = router_key_record(certificate_pem, root_pem, datetime.fromtimestamp(now, UTC))
    return open_signed(
        token, SettlementReport, KeyRing([record]), now, expected_signer=record.owner
    ).message


# --- for people ---------------------------------------------------------------------------

SUMMARY_COLUMNS: Final = (
    "window_id",
    "opened_at",
    "closed_at",
    "participant_id",
    "currency",
    "net_minor",
    "sent_minor",
    "received_minor",
    "sent_count",
    "received_count",
)
TRANSFER_COLUMNS: Final = (
    "window_id",
    "participant_id",
    "transfer_id",
    "kind",
    "direction",
    "currency",
    "amount_minor",
    "committed_at",
)


def summary_csv(report: SettlementReport) -> str:
    """One row per processor and currency: what a treasury desk settles."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for part in report.participants:
        for position in part.positions:
            writer.writerow(
                (
                    report.window_id,
                    report.opened_at,
                    report.closed_at,
                    part.participant_id,
                    position.currency,
                    position.net_minor,
                    position.sent_minor,
                    position.received_minor,
                    position.sent_count,
                    position.received_count,
                )
            )
    return buffer.getvalue()


def transfers_csv(report: SettlementReport) -> str:
    """One row per transfer and side: what a reconciliation clerk ticks off."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TRANSFER_COLUMNS)
    for part in report.participants:
        for line in part.transfers:
            writer.writerow(
                (
                    report.window_id,
                    part.participant_id,
                    line.transfer_id,
                    line.kind,
                    line.direction,
                    line.currency,
                    line.amount_minor,
                    line.committed_at,
                )
            )
    return buffer.getvalue()
