"""Who may see what (DESIGN.md §5), as data the exposure check reads.

Theory of operation. Every datum the check looks for has a *category* (a row of §5) and an
*owner* (the customer, payee or participant it is about). Every place the check reads
belongs to an *actor* (the router, a processor, a merchant backend, a wallet). The actor's
*role* towards one datum follows from who owns it: bank-a is the payer processor of its
own customers' data and a payee processor of every other customer's; a wallet is the
wallet of its own account and just another party for anybody else's. The policy cell
(category x role) then says whether the datum may be there:

    ✓  allowed          may see and store it: not searched
    #  digest only      a digest may be stored, the value itself never
    -  forbidden        must never see, store or log it (an en dash in §5)
    key file only       a secret: only in its owner's 0600 key file, never in a DB or log
    never at rest       the PIN: entered or verified in memory, never stored or logged

Every cell but ✓ is searched; a hit anywhere is a finding. The rows mirror §5 one to one,
plus the service secrets of §6. Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final


class Cell(Enum):
    ALLOWED = "✓"
    DIGEST = "#"
    FORBIDDEN = "\u2013"  # the en dash of §5
    KEY_FILE = "key file only"
    NEVER_AT_REST = "never at rest"

    @property
    def searched(self) -> bool:
        return self is not Cell.ALLOWED


class Role(Enum):
    """The columns of §5, plus "other party": a wallet or merchant the datum is not about."""

    WALLET = "wallet"
    MERCHANT = "merchant"
    PAYEE_PROCESSOR = "payee proc"
    ROUTER = "router"
    PAYER_PROCESSOR = "payer proc"
    OTHER_PARTY = "other party"


class Category(Enum):
    PAYER_NAME = "payer name"
    PAYER_PHONE = "payer phone"
    PAYER_ACCOUNT = "payer account"
    PIN = "PIN"
    DEVICE_PRIVATE_KEY = "device private key"
    DEVICE_PUBLIC_KEY = "device public key / kid"
    PAYEE_IDENTITY = "merchant identity & display name"
    PAYEE_ACCOUNT = "merchant account at its processor"
    AMOUNT = "amount, currency"
    BASKET = "basket / order lines"
    PAYER_PROCESSOR = "payer processor identity"
    REQUEST = "request_id / reference"
    TRANSFER_ID = "transfer_id"
    API_KEY = "merchant API key"
    ACTIVATION_CODE = "activation code"
    SERVICE_SECRET = "service keys & operator tokens (§6)"  # noqa: S105 - a label


class OwnerKind(Enum):
    CUSTOMER = "customer"  # a person paying: data about the payer
    PAYEE = "payee"  # a merchant, or a person asking to be paid (P2P)
    PARTICIPANT = "participant"  # the router or a processor
    NOBODY = "nobody"  # a value that belongs to no one here (a wrong PIN, a bad key)


class ActorKind(Enum):
    ROUTER = "router"
    PROCESSOR = "processor"
    MERCHANT = "merchant"
    WALLET = "wallet"


@dataclass(frozen=True, slots=True)
class Owner:
    """Whom a datum is about: enough to tell each actor's role towards it."""

    kind: OwnerKind
    processor_id: str | None = None  # the customer's or payee's processor; the participant
    party_id: str | None = None  # the customer's account id; the payee id; the participant id
    account_id: str | None = None  # a person payee's account (its wallet is the payee's)


NOBODY: Final = Owner(OwnerKind.NOBODY)


@dataclass(frozen=True, slots=True)
class ActorRef:
    """An actor as the policy sees it (the check's Actor carries where its data is)."""

    kind: ActorKind
    party_id: str  # router id, processor id, merchant id, wallet folder name
    processor_id: str | None = None  # a merchant's or wallet's own processor
    account_id: str | None = None  # a wallet's enrolled account


Y, D, N = Cell.ALLOWED, Cell.DIGEST, Cell.FORBIDDEN
K, M = Cell.KEY_FILE, Cell.NEVER_AT_REST

COLUMNS: Final = (
    Role.WALLET,
    Role.MERCHANT,
    Role.PAYEE_PROCESSOR,
    Role.ROUTER,
    Role.PAYER_PROCESSOR,
    Role.OTHER_PARTY,
)

# DESIGN.md §5, row by row, then the secrets of §6. The last column is not in §5: a party
# the datum is not about (another person's wallet, another merchant's backend) may hold
# only what is public anyway: payees' names and request tokens (anyone holding the QR
# code sees them; references are free text that two merchants may well share).
# fmt: off
POLICY: Final[dict[Category, tuple[Cell, ...]]] = {
    #                            wallet merchant payee  router payer  other party
    Category.PAYER_NAME:         (Y,    N,       N,     N,     Y,     N),
    Category.PAYER_PHONE:        (Y,    N,       N,     N,     Y,     N),
    Category.PAYER_ACCOUNT:      (Y,    N,       N,     N,     Y,     N),
    Category.PIN:                (M,    N,       N,     N,     M,     N),
    Category.DEVICE_PRIVATE_KEY: (K,    N,       N,     N,     N,     N),
    Category.DEVICE_PUBLIC_KEY:  (Y,    N,       N,     N,     Y,     N),
    Category.PAYEE_IDENTITY:     (Y,    Y,       Y,     N,     Y,     Y),
    Category.PAYEE_ACCOUNT:      (N,    Y,       Y,     N,     N,     N),
    Category.AMOUNT:             (Y,    Y,       Y,     Y,     Y,     Y),
    Category.BASKET:             (Y,    Y,       D,     N,     D,     N),
    Category.PAYER_PROCESSOR:    (Y,    N,       N,     Y,     Y,     N),
    Category.REQUEST:            (Y,    Y,       Y,     N,     Y,     Y),
    Category.TRANSFER_ID:        (Y,    Y,       Y,     Y,     Y,     Y),
    Category.API_KEY:            (N,    K,       D,     N,     N,     N),
    Category.ACTIVATION_CODE:    (M,    N,       N,     N,     D,     N),
    Category.SERVICE_SECRET:     (K,    K,       K,     K,     K,     K),
}
# fmt: on

# The payee processor knows every processor of the scheme (the directory, its own payer
# side); what it must not know is *which* one paid a given transfer. So the payer
# processor's identity is searched only in what a processor holds about its payee side:
# these tables, and any other row or log line that names one of their ids.
PAYEE_SIDE_TABLES: Final[dict[str, tuple[str, ...]]] = {
    "inbound_transfers": ("transfer_id", "request_id"),
    "requests": ("request_id", "transfer_id"),
    "refunds_out": ("refund_id", "transfer_id", "request_id"),
    "outbox": ("request_id",),
}


def cell(category: Category, role: Role) -> Cell:
    return POLICY[category][COLUMNS.index(role)]


def _processor_role(actor: ActorRef, owner: Owner) -> Role:
    own = actor.party_id == owner.processor_id
    if owner.kind is OwnerKind.PAYEE:
        return Role.PAYEE_PROCESSOR if own else Role.PAYER_PROCESSOR
    # A customer's own processor is its payer processor; so is a participant to itself.
    return Role.PAYER_PROCESSOR if own else Role.PAYEE_PROCESSOR


def role_of(actor: ActorRef, owner: Owner) -> Role | None:
    """The actor's role towards a datum of this owner; None: the datum is the actor's own
    business in a way §5 does not restrict (a merchant knows its own processor)."""
    if actor.kind is ActorKind.ROUTER:
        return Role.ROUTER
    if actor.kind is ActorKind.PROCESSOR:
        return _processor_role(actor, owner)
    if actor.kind is ActorKind.MERCHANT:
        if owner.kind is OwnerKind.PAYEE:
            return Role.MERCHANT if owner.party_id == actor.party_id else Role.OTHER_PARTY
        if owner.kind is OwnerKind.PARTICIPANT and owner.party_id == actor.processor_id:
            return None  # its own processor: the payee processor, not a payer's
        return Role.MERCHANT
    # A wallet.
    if owner.kind is OwnerKind.CUSTOMER:
        mine = owner.party_id is not None and owner.party_id == actor.account_id
        return Role.WALLET if mine else Role.OTHER_PARTY
    person_paid = owner.kind is OwnerKind.PAYEE and owner.account_id is not None
    if person_paid and owner.account_id == actor.account_id:
        return Role.MERCHANT  # a person's wallet is the payee of its own P2P requests
    return Role.WALLET


def scoped_to_payee_side(category: Category, role: Role) -> bool:
    """Whether a search is limited to what a processor holds about its payee side."""
    return category is Category.PAYER_PROCESSOR and role is Role.PAYEE_PROCESSOR


def policy_rows() -> list[tuple[str, list[str]]]:
    """The table as text, for printing next to the design's."""
    return [(category.value, [c.value for c in cells]) for category, cells in POLICY.items()]


__all__ = [
    "COLUMNS",
    "NOBODY",
    "PAYEE_SIDE_TABLES",
    "POLICY",
    "ActorKind",
    "ActorRef",
    "Category",
    "Cell",
    "Owner",
    "OwnerKind",
    "Role",
    "cell",
    "policy_rows",
    "role_of",
    "scoped_to_payee_side",
]
