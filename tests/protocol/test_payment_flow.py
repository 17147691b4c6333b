"""Peer-pair test of the whole protocol (h11's ConnectionPair idea, STYLE.md).

Five parties -- wallet, payer processor, router, payee processor, merchant -- are wired
together in memory using only the pure core: every message is really signed, sealed,
opened and verified with the receiver's own key ring, and each party keeps its state in
the tables of `semops.protocol.states`. The test drives the merchant-presented payment
of DESIGN.md §3 and then a refund, and checks at every hop what each party can and
cannot see (DESIGN.md §5).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from semops.core import E, IdKind, SemopsError, make_id
from semops.core.limits import TRANSFER_HOP_MARGIN_S
from semops.crypto import (
    KeyRing,
    KeyStatus,
    KeyUse,
    PrivateKey,
    condition_for,
    derive_key,
    make_fulfilment,
    make_pin_block,
    open_pin_block,
    payer_reference,
)
from semops.protocol import (
    PAYEE_TRANSFER,
    PAYER_TRANSFER,
    REQUEST,
    ROUTER_TRANSFER,
    Directory,
    DirectoryEntry,
    DirectoryKey,
    PayeeTransferEvent,
    PayeeTransferState,
    PayerTransferEvent,
    PayerTransferState,
    PaymentNotice,
    PaymentOrder,
    PaymentRequest,
    Receipt,
    RefundResult,
    RefundTransfer,
    RequestEvent,
    RequestState,
    RoutedPrepare,
    RouterTransferEvent,
    RouterTransferState,
    StoredOutcome,
    TransferDetails,
    TransferFulfil,
    TransferPrepare,
    TransferStatus,
    check_order_matches_request,
    decide,
    open_signed,
    order_digest_of,
    seal,
    sign,
    unseal,
)

NOW = 1_800_000_000
KEY_LIFETIME = (NOW - 3600, NOW + 365 * 86400)


def _seed(label: str) -> bytes:
    return hashlib.sha384(f"semops test key {label}".encode()).digest()


def _entropy(label: str, size: int) -> bytes:
    return hashlib.sha512(f"semops test entropy {label}".encode()).digest()[:size]


@dataclass
class Party:
    party_id: str
    kind: str
    sign_key: PrivateKey
    enc_key: PrivateKey

    def entry(self) -> DirectoryEntry:
        return DirectoryEntry(
            participant_id=self.party_id,
            kind=self.kind,  # type: ignore[arg-type]
            display_name=self.party_id.upper(),
            endpoint=f"https://{self.party_id}.example:8443",
            keys=tuple(
                DirectoryKey.from_record(key.public_record(*KEY_LIFETIME))
                for key in (self.sign_key, self.enc_key)
            ),
        )


def _party(party_id: str, kind: str) -> Party:
    return Party(
        party_id,
        kind,
        derive_key(party_id, KeyUse.SIGN, _seed(f"{party_id}/sig")),
        derive_key(party_id, KeyUse.ENCRYPT, _seed(f"{party_id}/enc")),
    )


@dataclass
class Scheme:
    router: Party
    bank: Party
    mno: Party
    directory: Directory
    directory_token: str
    ring: KeyRing
    device: PrivateKey
    device_ring: KeyRing


@pytest.fixture
def scheme() -> Scheme:
    router, bank, mno = _party("router", "router"), _party("bank-a", "bank"), _party("mno-b", "mno")
    directory = Directory(
        serial=1,
        router_id="router",
        issued_at=NOW - 60,
        expires_at=NOW + 86400,
        entries=(router.entry(), bank.entry(), mno.entry()),
    )
    token = sign(directory, router.sign_key)
    # A processor trusts the router's key (from its certificate), then the directory.
    router_only = KeyRing([router.sign_key.public_record(*KEY_LIFETIME)])
    verified = open_signed(token, Directory, router_only, NOW, expected_signer="router")
    ring = KeyRing(verified.message.key_records())
    device = derive_key("alice-phone", KeyUse.SIGN, _seed("alice/device"))
    device_ring = KeyRing([device.public_record(*KEY_LIFETIME)])
    return Scheme(router, bank, mno, verified.message, token, ring, device, device_ring)


def _request(scheme: Scheme, fulfilment: str, *, amount: int = 1250) -> str:
    request = PaymentRequest(
        request_id=make_id(IdKind.REQUEST, _entropy("request", 16)),
        payee_processor="mno-b",
        payee_id="corner-cafe",
        payee_name="Corner Café",
        amount_minor=amount,
        currency="EUR",
        reference="INV-1",
        created_at=NOW,
        expires_at=NOW + 600,
        condition=condition_for(fulfilment),
    )
    return sign(request, scheme.mno.sign_key)


def _order(scheme: Scheme, request_token: str, *, pin: str, amount: int = 1250) -> str:
    """The wallet: verify the request, make and store the order id, seal the PIN, sign."""
    request = open_signed(request_token, PaymentRequest, scheme.ring, NOW + 5).message
    claims = {
        "v": 1,
        "type": "PaymentOrder",
        "order_id": make_id(IdKind.ORDER, _entropy("order", 16)),
        "payer_processor": "bank-a",
        "payer_account": "alice-001",
        "request": request_token,
        "amount_minor": amount,
        "currency": request.currency,
        "created_at": NOW + 10,
        "expires_at": NOW + 300,
    }
    bank_enc = scheme.directory.entry("bank-a").current_key(KeyUse.ENCRYPT, NOW)
    claims["pin_block"] = make_pin_block(pin, order_digest_of(claims), bank_enc)
    order = PaymentOrder.model_validate(claims)
    return sign(order, scheme.device)


def test_merchant_payment_flows_end_to_end_with_each_party_seeing_only_its_part(
    scheme: Scheme,
) -> None:
    fulfilment = make_fulfilment(_entropy("fulfilment", 32))
    request_token = _request(scheme, fulfilment)
    request_state = RequestState.OPEN
    assert len(request_token) <= 600

    # (3) wallet -> payer processor
    order_token = _order(scheme, request_token, pin="4821")
    now = NOW + 11
    order = open_signed(order_token, PaymentOrder, scheme.device_ring, now).message
    pin = open_pin_block(order.pin_block, scheme.bank.enc_key, order.order_digest())
    assert pin == "4821"  # verified in memory against the PIN verification value, dropped
    request = open_signed(order.request, PaymentRequest, scheme.ring, now).message
    check_order_matches_request(order, request, processor_id="bank-a", now=now)

    # payer processor reserves and prepares; the sealed part names no payer
    transfer_id = make_id(IdKind.TRANSFER, _entropy("transfer", 16))
    payer_ref = payer_reference(_entropy("bank reference key", 32), transfer_id)
    payee_enc = scheme.directory.entry("mno-b").current_key(KeyUse.ENCRYPT, now)
    details = TransferDetails(
        transfer_id=transfer_id,
        request_id=request.request_id,
        payee_id=request.payee_id,
        payer_ref=payer_ref,
    )
    prepare = TransferPrepare(
        transfer_id=transfer_id,
        payer_processor="bank-a",
        payee_processor=request.payee_processor,
        amount_minor=order.amount_minor,
        currency=order.currency,
        condition=request.condition,
        created_at=now,
        expires_at=now + 30,
        sealed=seal(details, payee_enc),
    )
    payer_state = PayerTransferState.RESERVED
    prepare_token = sign(prepare, scheme.bank.sign_key)
    for secret in ("alice-001", "4821", order.order_id, request.request_id, "INV-1"):
        assert secret not in prepare_token and secret not in str(prepare.to_claims())

    # (4) router: verifies, records RESERVED, re-signs without the payer processor
    at_router = open_signed(prepare_token, TransferPrepare, scheme.ring, now + 1).message
    router_state = RouterTransferState.RESERVED
    payer_state = PAYER_TRANSFER.next(payer_state, PayerTransferEvent.ROUTER_ACCEPTED)
    routed = RoutedPrepare(
        transfer_id=at_router.transfer_id,
        payee_processor=at_router.payee_processor,
        amount_minor=at_router.amount_minor,
        currency=at_router.currency,
        condition=at_router.condition,
        created_at=now + 1,
        expires_at=at_router.expires_at - TRANSFER_HOP_MARGIN_S,
        sealed=at_router.sealed,
    )
    routed_token = sign(routed, scheme.router.sign_key)
    assert "bank-a" not in str(routed.to_claims())

    # payee processor: opens the sealed part, matches the request, answers with the fulfilment
    at_payee = open_signed(
        routed_token, RoutedPrepare, scheme.ring, now + 2, expected_signer="router"
    ).message
    opened = unseal(at_payee.sealed, TransferDetails, scheme.mno.enc_key)
    assert opened.transfer_id == at_payee.transfer_id  # the sealed part belongs to this transfer
    assert opened.request_id == request.request_id and opened.payer_ref == payer_ref
    payee_state = PAYEE_TRANSFER.next(PayeeTransferState.RECEIVED, PayeeTransferEvent.ACCEPT)
    request_state = REQUEST.next(request_state, RequestEvent.TRANSFER_RESERVED)
    fulfil_token = sign(
        TransferFulfil(
            transfer_id=transfer_id,
            payee_processor="mno-b",
            fulfilment=fulfilment,
            fulfilled_at=now + 2,
        ),
        scheme.mno.sign_key,
    )

    # router: the commit point
    fulfil = open_signed(fulfil_token, TransferFulfil, scheme.ring, now + 3).message
    assert condition_for(fulfil.fulfilment) == at_router.condition
    router_state = ROUTER_TRANSFER.next(router_state, RouterTransferEvent.FULFILLED)
    status_token = sign(
        TransferStatus(
            transfer_id=transfer_id,
            kind="payment",
            state="committed",
            amount_minor=prepare.amount_minor,
            currency="EUR",
            decided_at=now + 3,
            fulfilment=fulfil.fulfilment,
        ),
        scheme.router.sign_key,
    )

    # both processors finish the same way
    for_payer = open_signed(
        status_token, TransferStatus, scheme.ring, now + 4, expected_signer="router"
    )
    payer_state = PAYER_TRANSFER.next(payer_state, PayerTransferEvent.COMMITTED)
    payee_state = PAYEE_TRANSFER.next(payee_state, PayeeTransferEvent.COMMITTED)
    request_state = REQUEST.next(request_state, RequestEvent.TRANSFER_COMMITTED)
    assert (router_state, payer_state, payee_state, request_state) == (
        "committed",
        "committed",
        "committed",
        "paid",
    )

    notice_token = sign(
        PaymentNotice(
            request_id=request.request_id,
            transfer_id=transfer_id,
            payee_processor="mno-b",
            payee_id="corner-cafe",
            amount_minor=1250,
            currency="EUR",
            reference="INV-1",
            paid_at=now + 4,
            guarantee="irrevocable",
        ),
        scheme.mno.sign_key,
    )
    receipt_token = sign(
        Receipt(
            order_id=order.order_id,
            request_id=request.request_id,
            transfer_id=transfer_id,
            payer_processor="bank-a",
            payee_processor="mno-b",
            payee_id="corner-cafe",
            payee_name="Corner Café",
            amount_minor=1250,
            currency="EUR",
            condition=request.condition,
            fulfilment=for_payer.message.fulfilment or "",
            committed_at=now + 3,
        ),
        scheme.bank.sign_key,
    )
    # merchant: a guarantee from its processor, nothing about who paid or through whom
    notice = open_signed(notice_token, PaymentNotice, scheme.ring, now + 5).message
    assert notice.guarantee == "irrevocable"
    for payer_datum in ("alice", "bank-a", payer_ref, order.order_id):
        assert payer_datum not in str(notice.to_claims())
    # wallet: the receipt proves the payee side accepted (fulfilment hashes to condition)
    receipt = open_signed(receipt_token, Receipt, scheme.ring, now + 5).message
    assert condition_for(receipt.fulfilment) == request.condition


def test_a_pin_block_cannot_authorise_a_different_amount(scheme: Scheme) -> None:
    fulfilment = make_fulfilment(_entropy("f2", 32))
    honest = open_signed(
        _order(scheme, _request(scheme, fulfilment), pin="4821"),
        PaymentOrder,
        scheme.device_ring,
        NOW + 11,
    ).message
    # An attacker with the device key re-signs the order for another amount, reusing the
    # PIN block the customer approved.
    forged_claims = dict(honest.to_claims(), amount_minor=99_999)
    forged = PaymentOrder.model_validate(forged_claims)
    with pytest.raises(SemopsError) as refused:
        open_pin_block(forged.pin_block, scheme.bank.enc_key, forged.order_digest())
    assert refused.value.code == "pin_block_mismatch"
    # ...and the honest order still does not match a request for another amount.
    with pytest.raises(SemopsError) as mismatch:
        request = open_signed(forged.request, PaymentRequest, scheme.ring, NOW + 11).message
        check_order_matches_request(forged, request, processor_id="bank-a", now=NOW + 11)
    assert mismatch.value.code == "order_mismatch"


def test_the_payee_processor_cannot_see_which_processor_paid(scheme: Scheme) -> None:
    payee_enc = scheme.directory.entry("mno-b").current_key(KeyUse.ENCRYPT, NOW)
    transfer_id = make_id(IdKind.TRANSFER, _entropy("t3", 16))
    sealed = seal(
        TransferDetails(
            transfer_id=transfer_id,
            request_id=make_id(IdKind.REQUEST, _entropy("r3", 16)),
            payee_id="corner-cafe",
            payer_ref=payer_reference(_entropy("key", 32), transfer_id),
        ),
        payee_enc,
    )
    routed = RoutedPrepare(
        transfer_id=transfer_id,
        payee_processor="mno-b",
        amount_minor=500,
        currency="EUR",
        condition=condition_for(make_fulfilment(_entropy("f3", 32))),
        created_at=NOW,
        expires_at=NOW + 25,
        sealed=sealed,
    )
    token = sign(routed, scheme.router.sign_key)
    # Everything the payee processor receives: the router-signed header and the sealed body.
    received = open_signed(token, RoutedPrepare, scheme.ring, NOW + 1).message
    body = unseal(received.sealed, TransferDetails, scheme.mno.enc_key)
    seen = str(received.to_claims()) + str(body.to_claims()) + token
    assert "bank-a" not in seen
    assert scheme.bank.sign_key.kid not in seen and scheme.bank.enc_key.kid not in seen


def test_a_refund_names_only_the_original_transfer_and_reaches_the_payer_side(
    scheme: Scheme,
) -> None:
    transfer_id = make_id(IdKind.TRANSFER, _entropy("t4", 16))
    refund = RefundTransfer(
        refund_id=make_id(IdKind.REFUND, _entropy("rf4", 16)),
        transfer_id=transfer_id,
        payee_processor="mno-b",
        amount_minor=500,
        currency="EUR",
        reason="Returned item",
        created_at=NOW,
        expires_at=NOW + 3600,
    )
    at_payer = open_signed(sign(refund, scheme.mno.sign_key), RefundTransfer, scheme.ring, NOW + 1)
    assert set(at_payer.message.to_claims()) == {
        "v", "type", "refund_id", "transfer_id", "payee_processor", "amount_minor",
        "currency", "reason", "created_at", "expires_at",
    }  # fmt: skip
    result = RefundResult(
        refund_id=refund.refund_id,
        transfer_id=transfer_id,
        payer_processor="bank-a",
        outcome="accepted",
        decided_at=NOW + 2,
    )
    assert open_signed(sign(result, scheme.bank.sign_key), RefundResult, scheme.ring, NOW + 2)


def test_a_replayed_prepare_returns_the_stored_outcome_and_a_changed_one_is_refused(
    scheme: Scheme,
) -> None:
    payee_enc = scheme.directory.entry("mno-b").current_key(KeyUse.ENCRYPT, NOW)
    transfer_id = make_id(IdKind.TRANSFER, _entropy("t5", 16))
    prepare = TransferPrepare(
        transfer_id=transfer_id,
        payer_processor="bank-a",
        payee_processor="mno-b",
        amount_minor=700,
        currency="EUR",
        condition=condition_for(make_fulfilment(_entropy("f5", 32))),
        created_at=NOW,
        expires_at=NOW + 30,
        sealed=seal(
            TransferDetails(
                transfer_id=transfer_id,
                request_id=make_id(IdKind.REQUEST, _entropy("r5", 16)),
                payee_id="corner-cafe",
                payer_ref=payer_reference(_entropy("key", 32), transfer_id),
            ),
            payee_enc,
        ),
    )
    stored = StoredOutcome(prepare.digest(), "reserved")
    again = open_signed(sign(prepare, scheme.bank.sign_key), TransferPrepare, scheme.ring, NOW + 1)
    assert decide(stored, again.message.digest()).outcome == "reserved"
    changed = prepare.model_copy(update={"amount_minor": 701})
    with pytest.raises(SemopsError) as conflict:
        decide(stored, changed.digest())
    assert conflict.value.code == "idempotency_conflict"
    # Past its expiry the same prepare is refused before its id is even looked up.
    with pytest.raises(SemopsError) as late:
        open_signed(sign(prepare, scheme.bank.sign_key), TransferPrepare, scheme.ring, NOW + 30)
    assert late.value.code == E.TRANSFER_EXPIRED.code


def test_a_revoked_processor_key_is_refused_even_with_a_valid_signature(scheme: Scheme) -> None:
    token = _request(scheme, make_fulfilment(_entropy("f6", 32)))
    record = scheme.mno.sign_key.public_record(*KEY_LIFETIME, status=KeyStatus.REVOKED)
    revoked_ring = scheme.ring.with_records([record])
    with pytest.raises(SemopsError) as refused:
        open_signed(token, PaymentRequest, revoked_ring, NOW + 1)
    assert refused.value.code == "key_revoked"


def test_a_processor_cannot_sign_in_another_processors_name(scheme: Scheme) -> None:
    token = _request(scheme, make_fulfilment(_entropy("f7", 32)))
    claims = open_signed(token, PaymentRequest, scheme.ring, NOW + 1).message
    with pytest.raises(SemopsError) as refused:
        sign(claims, scheme.bank.sign_key)  # bank-a signing a request that names mno-b
    assert refused.value.code == "signer_mismatch"
