"""The state machines of a payment, written as tables.

Theory of operation
-------------------
Every record that moves through a payment -- the merchant's request, the wallet's order, the
transfer as each of the three parties sees it, and a refund -- has exactly one table here:
`{(state, event): next_state}`. A pair that is not in the table is refused with
`state_transition_invalid`; nothing is inferred, defaulted or guessed. The module is pure (no
I/O, clock or randomness): a service reads the stored state, asks `next`, and writes the
answer in the same database transaction, so the table is the whole of the decision.

What each machine guarantees, and why:

* REQUEST (payee processor). A request is paid at most once: only OPEN can be reserved, and
  only a reserved request can become PAID, so one transfer at a time holds it. A request in
  RESERVED cannot expire or be cancelled: the transfer's own expiry decides, and an abort
  hands the request back as OPEN, after which it may expire. Refunds only follow PAID.
* ORDER (wallet). The wallet always ends in a definite state or knows that it does not
  know: an unanswered order is PENDING, never FAILED, because the payer processor may have
  executed it. A PENDING order is retried with the *same* order id (the processor
  deduplicates on it) or settled by asking. Only a never-sent order can be abandoned.
* PAYER_TRANSFER (payer processor). Funds are reserved before routing. The processor never
  voids on its own once the router may have the transfer: from PREPARED or IN_DOUBT the only
  way to ABORTED is the router reporting ABORTED. From RESERVED it may also abort when the
  router refused the prepare synchronously (it was definitely not recorded). A timeout only
  ever leads to IN_DOUBT, where the processor keeps asking the router.
* ROUTER_TRANSFER (router). The router is the commit point: a valid fulfilment before
  expiry commits, a rejection or expiry aborts, and COMMITTED is absorbing -- no event moves
  it anywhere else, so both processors can always finish the same way.
* PAYEE_TRANSFER (payee processor). The payee gave out the fulfilment when it accepted, so
  from ACCEPTED or IN_DOUBT it likewise reaches ABORTED only when the router says so.
* REFUND (payee processor and router). Same shape as a transfer seen from its sender: a
  timeout leads to IN_DOUBT, never to FAILED; only the router's rejection fails a refund.

Duplicates. Messages are re-delivered (outboxes, retries, status queries), so where an
*outcome reported by another party* can legitimately arrive twice, the table lists a
self-loop (for example COMMITTED + committed -> COMMITTED): the service sees "no change" and
answers as before. Each such loop carries a comment. A terminal state never moves to a
different state; `StateMachine` checks this when it is built. Local commands (expire,
cancel, abandon) have no idempotent loops: the service deduplicates those itself.

REQUEST events are derived, not raw messages: a service feeds `transfer_committed` to the
request only when the *transfer* machine actually moved to COMMITTED (and likewise for
abort and for refunds). Transfer-level deduplication therefore keeps the request table
strict, and a repeated request event means a bug, which is refused.

Values of every state and event are stored in databases: they never change once released.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from semops.core.errors import E, SemopsError

__all__ = [
    "MACHINES",
    "ORDER",
    "PAYEE_TRANSFER",
    "PAYER_TRANSFER",
    "REFUND",
    "REQUEST",
    "ROUTER_TRANSFER",
    "OrderEvent",
    "OrderState",
    "PayeeTransferEvent",
    "PayeeTransferState",
    "PayerTransferEvent",
    "PayerTransferState",
    "RefundEvent",
    "RefundState",
    "RequestEvent",
    "RequestState",
    "RouterTransferEvent",
    "RouterTransferState",
    "StateMachine",
]

S = TypeVar("S", bound=StrEnum)
V = TypeVar("V", bound=StrEnum)


class StateMachine(Generic[S, V]):
    """A finite state machine given as a table of allowed transitions.

    `S` is the enum of states and `V` the enum of events. The table is copied and frozen on
    construction, and checked: every terminal state may only loop to itself.
    """

    __slots__ = ("_allowed", "_events", "_states", "_table", "initial", "name", "terminal")

    def __init__(
        self,
        name: str,
        table: Mapping[tuple[S, V], S],
        initial: S,
        terminal: frozenset[S] | set[S],
    ) -> None:
        if not table:
            raise ValueError(f"{name}: a state machine needs at least one transition")
        self.name: Final = name
        self.initial: Final[S] = initial
        self.terminal: Final[frozenset[S]] = frozenset(terminal)
        self._states: type[S] = type(initial)
        first_event = next(iter(table))[1]
        self._events: type[V] = type(first_event)
        self._table: Mapping[tuple[S, V], S] = MappingProxyType(dict(table))
        self._check()
        self._allowed: Mapping[S, tuple[V, ...]] = MappingProxyType(
            {
                state: tuple(event for event in self._events if (state, event) in self._table)
                for state in self._states
            }
        )

    def _check(self) -> None:
        """Refuse a malformed table when the module is imported, not at the first payment."""
        for (state, event), target in self._table.items():
            if not (
                isinstance(state, self._states)
                and isinstance(event, self._events)
                and isinstance(target, self._states)
            ):
                raise ValueError(f"{self.name}: mixed enum types in {state!r} + {event!r}")
            if state in self.terminal and target != state:
                raise ValueError(f"{self.name}: terminal {state} must not move to {target}")
        if not self.terminal or not all(isinstance(t, self._states) for t in self.terminal):
            raise ValueError(f"{self.name}: terminal states must be a non-empty set of states")
        if self.initial in self.terminal:
            raise ValueError(f"{self.name}: the initial state cannot be terminal")

    @property
    def states(self) -> type[S]:
        """The enum of this machine's states."""
        return self._states

    @property
    def events(self) -> type[V]:
        """The enum of this machine's events."""
        return self._events

    @property
    def transitions(self) -> Mapping[tuple[S, V], S]:
        """The table itself, read-only."""
        return self._table

    def next(self, state: S, event: V) -> S:
        """The state after `event` in `state`; `state_transition_invalid` if not allowed.

        Only members of this machine's own enums are accepted: states of different machines
        share strings ("committed"), and a mix-up must fail loudly rather than match.
        """
        if not isinstance(state, self._states) or not isinstance(event, self._events):
            raise TypeError(
                f"{self.name}: expected {self._states.__name__} and {self._events.__name__}, "
                f"got {type(state).__name__} and {type(event).__name__}"
            )
        try:
            return self._table[(state, event)]
        except KeyError:
            raise SemopsError(
                E.STATE_TRANSITION_INVALID,
                f"{self.name}: '{event.value}' is not allowed in state '{state.value}'",
                machine=self.name,
                state=state.value,
                event=event.value,
            ) from None

    def allowed_events(self, state: S) -> tuple[V, ...]:
        """The events allowed in `state`, in the order the event enum declares them."""
        return self._allowed[state]

    def is_terminal(self, state: S) -> bool:
        return state in self.terminal

    def __repr__(self) -> str:
        return f"StateMachine({self.name!r}, {len(self._table)} transitions)"


# --- REQUEST: the payee processor's view of a PaymentRequest -------------------------------


class RequestState(StrEnum):
    OPEN = "open"
    RESERVED = "reserved"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class RequestEvent(StrEnum):
    TRANSFER_RESERVED = "transfer_reserved"  # a TransferPrepare matched this request
    TRANSFER_COMMITTED = "transfer_committed"
    TRANSFER_ABORTED = "transfer_aborted"
    EXPIRE = "expire"
    CANCEL = "cancel"
    REFUND_PARTIAL = "refund_partial"  # a refund completed; paid amount not yet reached
    REFUND_FULL = "refund_full"  # a refund completed; refunds now equal the paid amount


_RQ, _RQE = RequestState, RequestEvent
REQUEST: Final = StateMachine[RequestState, RequestEvent](
    "request",
    {
        (_RQ.OPEN, _RQE.TRANSFER_RESERVED): _RQ.RESERVED,
        (_RQ.OPEN, _RQE.EXPIRE): _RQ.EXPIRED,
        (_RQ.OPEN, _RQE.CANCEL): _RQ.CANCELLED,
        (_RQ.RESERVED, _RQE.TRANSFER_COMMITTED): _RQ.PAID,
        # The transfer failed; the request is payable again until its own expiry.
        (_RQ.RESERVED, _RQE.TRANSFER_ABORTED): _RQ.OPEN,
        (_RQ.PAID, _RQE.REFUND_PARTIAL): _RQ.PARTIALLY_REFUNDED,
        (_RQ.PAID, _RQE.REFUND_FULL): _RQ.REFUNDED,
        # Progress, not a duplicate: each partial refund is a distinct refund id.
        (_RQ.PARTIALLY_REFUNDED, _RQE.REFUND_PARTIAL): _RQ.PARTIALLY_REFUNDED,
        (_RQ.PARTIALLY_REFUNDED, _RQE.REFUND_FULL): _RQ.REFUNDED,
    },
    initial=_RQ.OPEN,
    terminal={_RQ.EXPIRED, _RQ.CANCELLED, _RQ.REFUNDED},
)


# --- ORDER: the wallet's view of its PaymentOrder -------------------------------------------


class OrderState(StrEnum):
    CREATED = "created"  # order id made and stored, nothing sent yet
    SENT = "sent"
    PENDING = "pending"  # sent, outcome unknown: ask or retry with the same order id
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"


class OrderEvent(StrEnum):
    SEND = "send"
    RECEIPT = "receipt"  # a signed Receipt arrived
    DECLINED = "declined"  # the payer processor answered with a definite refusal
    NO_ANSWER = "no_answer"  # timeout or lost connection: the outcome is unknown
    ABANDON = "abandon"


_OS, _OE = OrderState, OrderEvent
ORDER: Final = StateMachine[OrderState, OrderEvent](
    "order",
    {
        (_OS.CREATED, _OE.SEND): _OS.SENT,
        (_OS.CREATED, _OE.ABANDON): _OS.ABANDONED,
        (_OS.SENT, _OE.RECEIPT): _OS.COMPLETED,
        (_OS.SENT, _OE.DECLINED): _OS.FAILED,
        (_OS.SENT, _OE.NO_ANSWER): _OS.PENDING,
        (_OS.PENDING, _OE.RECEIPT): _OS.COMPLETED,
        (_OS.PENDING, _OE.DECLINED): _OS.FAILED,
        # Retry with the same order id; the payer processor executes it at most once.
        (_OS.PENDING, _OE.SEND): _OS.SENT,
        # Asked again and still no answer: keep asking, never assume.
        (_OS.PENDING, _OE.NO_ANSWER): _OS.PENDING,
        # Duplicate: the receipt came both as the answer and from a status query.
        (_OS.COMPLETED, _OE.RECEIPT): _OS.COMPLETED,
        # Duplicate: the refusal came both as the answer and from a status query.
        (_OS.FAILED, _OE.DECLINED): _OS.FAILED,
    },
    initial=_OS.CREATED,
    terminal={_OS.COMPLETED, _OS.FAILED, _OS.ABANDONED},
)


# --- PAYER_TRANSFER: the payer processor's view of a transfer -------------------------------


class PayerTransferState(StrEnum):
    RESERVED = "reserved"  # funds reserved, prepare not yet accepted by the router
    PREPARED = "prepared"  # the router recorded the transfer
    IN_DOUBT = "in_doubt"  # no outcome in time: ask the router, never void alone
    COMMITTED = "committed"
    ABORTED = "aborted"


class PayerTransferEvent(StrEnum):
    ROUTER_ACCEPTED = "router_accepted"
    ROUTER_REFUSED = "router_refused"  # synchronous refusal: definitely not recorded
    COMMITTED = "committed"  # the router reports COMMITTED
    ABORTED = "aborted"  # the router reports ABORTED
    TIMED_OUT = "timed_out"


_PS, _PE = PayerTransferState, PayerTransferEvent
PAYER_TRANSFER: Final = StateMachine[PayerTransferState, PayerTransferEvent](
    "payer_transfer",
    {
        (_PS.RESERVED, _PE.ROUTER_ACCEPTED): _PS.PREPARED,
        (_PS.RESERVED, _PE.ROUTER_REFUSED): _PS.ABORTED,
        # The outcome notice can overtake the synchronous answer to the prepare.
        (_PS.RESERVED, _PE.COMMITTED): _PS.COMMITTED,
        (_PS.RESERVED, _PE.ABORTED): _PS.ABORTED,
        (_PS.RESERVED, _PE.TIMED_OUT): _PS.IN_DOUBT,
        (_PS.PREPARED, _PE.COMMITTED): _PS.COMMITTED,
        (_PS.PREPARED, _PE.ABORTED): _PS.ABORTED,
        (_PS.PREPARED, _PE.TIMED_OUT): _PS.IN_DOUBT,
        (_PS.IN_DOUBT, _PE.COMMITTED): _PS.COMMITTED,
        (_PS.IN_DOUBT, _PE.ABORTED): _PS.ABORTED,
        # Still no answer from the router (or it says "still reserved"): keep asking.
        (_PS.IN_DOUBT, _PE.TIMED_OUT): _PS.IN_DOUBT,
        # Duplicates: the router's outbox re-delivers, and status queries repeat the outcome.
        (_PS.COMMITTED, _PE.COMMITTED): _PS.COMMITTED,
        (_PS.ABORTED, _PE.ABORTED): _PS.ABORTED,
    },
    initial=_PS.RESERVED,
    terminal={_PS.COMMITTED, _PS.ABORTED},
)


# --- ROUTER_TRANSFER: the router's view, the commit point -----------------------------------


class RouterTransferState(StrEnum):
    RESERVED = "reserved"
    COMMITTED = "committed"
    ABORTED = "aborted"


class RouterTransferEvent(StrEnum):
    FULFILLED = "fulfilled"  # a fulfilment matching the condition, before expiry
    REJECTED = "rejected"  # the payee processor rejected the transfer
    EXPIRED = "expired"


_RS, _RE = RouterTransferState, RouterTransferEvent
ROUTER_TRANSFER: Final = StateMachine[RouterTransferState, RouterTransferEvent](
    "router_transfer",
    {
        (_RS.RESERVED, _RE.FULFILLED): _RS.COMMITTED,
        (_RS.RESERVED, _RE.REJECTED): _RS.ABORTED,
        (_RS.RESERVED, _RE.EXPIRED): _RS.ABORTED,
        # Duplicate: the payee re-sends its fulfilment after a lost answer; answer the same.
        (_RS.COMMITTED, _RE.FULFILLED): _RS.COMMITTED,
        # Duplicates: the payee re-sends its rejection, or a rejection and the expiry sweep
        # race; both mean aborted, so either order is harmless.
        (_RS.ABORTED, _RE.REJECTED): _RS.ABORTED,
        (_RS.ABORTED, _RE.EXPIRED): _RS.ABORTED,
        # Deliberately absent: ABORTED + fulfilled (too late, the payee must learn it was
        # aborted) and COMMITTED + rejected/expired (nothing undoes the commit point).
    },
    initial=_RS.RESERVED,
    terminal={_RS.COMMITTED, _RS.ABORTED},
)


# --- PAYEE_TRANSFER: the payee processor's view of a transfer -------------------------------


class PayeeTransferState(StrEnum):
    RECEIVED = "received"  # prepare opened, not yet matched to a request
    ACCEPTED = "accepted"  # matched a request, fulfilment sent
    REJECTED = "rejected"  # no matching payable request; rejection sent
    IN_DOUBT = "in_doubt"  # fulfilment sent, no outcome in time: ask the router
    COMMITTED = "committed"
    ABORTED = "aborted"


class PayeeTransferEvent(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    COMMITTED = "committed"  # the router reports COMMITTED
    ABORTED = "aborted"  # the router reports ABORTED
    TIMED_OUT = "timed_out"


_YS, _YE = PayeeTransferState, PayeeTransferEvent
PAYEE_TRANSFER: Final = StateMachine[PayeeTransferState, PayeeTransferEvent](
    "payee_transfer",
    {
        (_YS.RECEIVED, _YE.ACCEPT): _YS.ACCEPTED,
        (_YS.RECEIVED, _YE.REJECT): _YS.REJECTED,
        # The router expired the transfer before the payee decided (for example it was
        # down); nothing was matched or promised, so aborting is safe.
        (_YS.RECEIVED, _YE.ABORTED): _YS.ABORTED,
        (_YS.ACCEPTED, _YE.COMMITTED): _YS.COMMITTED,
        (_YS.ACCEPTED, _YE.ABORTED): _YS.ABORTED,
        (_YS.ACCEPTED, _YE.TIMED_OUT): _YS.IN_DOUBT,
        (_YS.IN_DOUBT, _YE.COMMITTED): _YS.COMMITTED,
        (_YS.IN_DOUBT, _YE.ABORTED): _YS.ABORTED,
        # Still no answer from the router: keep asking.
        (_YS.IN_DOUBT, _YE.TIMED_OUT): _YS.IN_DOUBT,
        # Duplicates: re-delivered or re-queried outcomes.
        (_YS.COMMITTED, _YE.COMMITTED): _YS.COMMITTED,
        (_YS.ABORTED, _YE.ABORTED): _YS.ABORTED,
        # The router's abort notice for a transfer this payee itself rejected: expected.
        (_YS.REJECTED, _YE.ABORTED): _YS.REJECTED,
    },
    initial=_YS.RECEIVED,
    terminal={_YS.COMMITTED, _YS.ABORTED, _YS.REJECTED},
)


# --- REFUND: the view of a RefundTransfer from its sender -----------------------------------


class RefundState(StrEnum):
    REQUESTED = "requested"  # the merchant asked; nothing sent yet
    SENT = "sent"
    IN_DOUBT = "in_doubt"  # no outcome in time: ask, never assume it failed
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RefundEvent(StrEnum):
    SEND = "send"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCEL = "cancel"
    # The attempt is known never to commit (aborted, or never recorded and expired) for a
    # reason that may pass (semops.protocol.refunds): a new attempt, under a new network
    # refund id, waits to be sent.
    RETRY = "retry"


_FS, _FE = RefundState, RefundEvent
REFUND: Final = StateMachine[RefundState, RefundEvent](
    "refund",
    {
        (_FS.REQUESTED, _FE.SEND): _FS.SENT,
        (_FS.REQUESTED, _FE.CANCEL): _FS.CANCELLED,
        (_FS.SENT, _FE.ACCEPTED): _FS.COMPLETED,
        (_FS.SENT, _FE.REJECTED): _FS.FAILED,
        (_FS.SENT, _FE.TIMED_OUT): _FS.IN_DOUBT,
        (_FS.IN_DOUBT, _FE.ACCEPTED): _FS.COMPLETED,
        (_FS.IN_DOUBT, _FE.REJECTED): _FS.FAILED,
        # Still no answer: keep asking.
        (_FS.IN_DOUBT, _FE.TIMED_OUT): _FS.IN_DOUBT,
        (_FS.SENT, _FE.RETRY): _FS.REQUESTED,
        (_FS.IN_DOUBT, _FE.RETRY): _FS.REQUESTED,
        # Duplicates: re-delivered or re-queried outcomes.
        (_FS.COMPLETED, _FE.ACCEPTED): _FS.COMPLETED,
        (_FS.FAILED, _FE.REJECTED): _FS.FAILED,
    },
    initial=_FS.REQUESTED,
    terminal={_FS.COMPLETED, _FS.FAILED, _FS.CANCELLED},
)


MACHINES: Final[tuple[StateMachine[Any, Any], ...]] = (
    REQUEST,
    ORDER,
    PAYER_TRANSFER,
    ROUTER_TRANSFER,
    PAYEE_TRANSFER,
    REFUND,
)
