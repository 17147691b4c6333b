"""Routed payments: bank-a's customer pays mno-b's merchant through the (test) router.

Covers the payer side's handling of every router answer (committed, aborted, refused
before recording, pending, timeout, transport error) and the in-doubt resolution, and the
payee side's handling of routed prepares crafted here and signed with the router's key.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from semops.core.ids import IdKind, make_id
from semops.core.limits import (
    CLOCK_SKEW_MAX_S,
    REQUEST_TTL_MIN_S,
    TRANSFER_HOP_MARGIN_S,
    TRANSFER_TTL_DEFAULT_S,
)
from semops.crypto import condition_for, make_fulfilment, payer_reference, read_unverified_claims
from semops.protocol import (
    PaymentRequest,
    Receipt,
    RoutedPrepare,
    TransferDetails,
    TransferFulfil,
    TransferReject,
    TransferStatus,
    open_signed,
    parse_claims,
    seal,
    sign,
)
from semops.service.app import JOSE
from tests.processor.network import (
    Merchant,
    Network,
    Node,
    Wallet,
    account_balance,
    check_ledger,
    database_text,
    enrolled_wallet,
    merchant,
    on_both,
    rows,
)

pytestmark = pytest.mark.anyio


async def two_processors(network: Network) -> tuple[Node, Node, Wallet, Merchant]:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    await network.refresh_all()
    wallet = await enrolled_wallet(bank, deposit_minor=10_000, phone="+447700900999")
    shop = await merchant(mno, "kiosk")
    return bank, mno, wallet, shop


async def settlement(node: Node) -> int:
    """The processor's net position against the router (+ owed to it), as the router keeps it."""
    positions = (await node.admin("GET", "/v1/admin/position")).json()["positions"]
    return int(positions[0]["net_position_minor"])


@on_both
async def test_a_routed_payment_end_to_end(network: Network) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(1250, reference="T-42")
    response = await wallet.pay(created["token"])
    assert response.status_code == 200, response.text
    receipt = open_signed(
        response.text, Receipt, bank.processor.directory.ring, network.clock.now()
    ).message
    assert receipt.payee_processor == "mno-b" and receipt.payee_name == "Corner Shop"
    assert await wallet.balance() == 10_000 - 1250
    assert await settlement(bank) == -1250
    assert await account_balance(mno, shop.account_id) == 1250
    assert await settlement(mno) == 1250
    status = await shop.status(created["request_id"])
    assert status["state"] == "paid" and status["transfer_id"] == receipt.transfer_id
    assert status["notice"] is not None
    await check_ledger(bank)
    await check_ledger(mno)


async def test_the_payee_side_never_holds_the_payers_identity(network: Network) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(1250)
    assert (await wallet.pay(created["token"])).status_code == 200
    (inbound,) = await rows(mno, "inbound_transfers")
    (order,) = await rows(bank, "orders")
    expected_ref = payer_reference(bank.processor.context.keys.reference_key, order["transfer_id"])
    assert inbound["payer_ref"] == expected_ref
    database = await database_text(mno)
    for secret in (wallet.account_id, "Ada Lovelace", "+447700900999", "bank-a", order["order_id"]):
        assert secret not in database, secret
    # Nor does the merchant's view or notice.
    status = await shop.status(created["request_id"])
    text = str(status) + str(read_unverified_claims(status["notice"]))
    assert "bank-a" not in text and wallet.account_id not in text


@on_both
async def test_a_rejected_transfer_voids_the_reservation_and_fails_the_order(
    network: Network,
) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(300, ttl_s=REQUEST_TTL_MIN_S)
    # The request expires at the payee side between the wallet's check and the prepare.
    async with mno.processor.context.database.write() as connection:
        from sqlalchemy import update

        from semops.store import processor as store

        await connection.execute(update(store.requests).values(expires_at=network.clock.now()))
    response = await wallet.pay(created["token"])
    assert response.status_code == 410
    assert response.json()["code"] == "request_expired"
    assert await wallet.balance() == 10_000
    (order,) = await rows(bank, "orders")
    assert order["state"] == "aborted" and order["reason_code"] == "request_expired"
    status = await wallet.get(f"/v1/wallet/orders/{order['order_id']}")
    assert status.json()["state"] == "failed"
    assert status.json()["error"]["code"] == "request_expired"
    await check_ledger(bank)


async def test_a_refusal_before_recording_voids_at_once(network: Network) -> None:
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "refuse"
    _, order_token = wallet.order(created["token"])
    response = await wallet.send(order_token)
    assert response.status_code == 403
    assert response.json()["code"] == "net_debit_cap_exceeded"
    assert await wallet.balance() == 10_000
    (order,) = await rows(bank, "orders")
    assert order["state"] == "aborted"
    # The same order again is answered from storage: no second routing attempt.
    calls = len(network.router.calls)
    network.router.mode = "normal"
    again = await wallet.send(order_token)
    assert again.status_code == 403 and again.json()["code"] == "net_debit_cap_exceeded"
    assert len(network.router.calls) == calls
    assert await wallet.balance() == 10_000


@pytest.mark.parametrize("mode", ["timeout", "down", "pending"])
async def test_no_decision_leaves_the_order_pending_with_the_money_held(
    network: Network, mode: str
) -> None:
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = mode
    response = await wallet.pay(created["token"])
    assert response.status_code == 202
    assert response.json()["state"] == "pending"
    order_id = response.json()["order_id"]
    balance = (await wallet.get("/v1/wallet/balance")).json()
    assert balance["available_minor"] == 9700 and balance["balance_minor"] == 10_000
    (order,) = await rows(bank, "orders")
    assert order["state"] == "in_doubt"
    assert (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()["state"] == "pending"
    # The resolver never voids while the router has not spoken.
    network.router.mode = "down"
    network.clock.advance(TRANSFER_TTL_DEFAULT_S + CLOCK_SKEW_MAX_S)
    assert await bank.processor.payer.resolve_in_doubt() == 0
    assert await wallet.balance() == 9700


async def test_the_in_doubt_pass_leaves_a_prepare_in_flight_to_its_reply(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the reply to the prepare decides it; asking the router about it meanwhile
    costs the router a signed status for nothing. After the reply, it is asked again."""
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    arrived, release = asyncio.Event(), asyncio.Event()
    forward = network.router.prepare

    async def held(token: str) -> tuple[int, str, bytes]:
        arrived.set()
        await release.wait()
        return await forward(token)

    monkeypatch.setattr(network.router, "prepare", held)
    paying = asyncio.create_task(wallet.pay(created["token"]))
    await asyncio.wait_for(arrived.wait(), 10)
    (order,) = await rows(bank, "orders")
    assert order["state"] == "reserved"  # stored before the prepare left
    calls = len(network.router.calls)
    # Bounded: asking, the pass would find no record yet and send the held prepare again.
    assert await asyncio.wait_for(bank.processor.payer.resolve_in_doubt(), 5) == 0
    assert network.router.calls[calls:] == []  # not asked about
    release.set()
    assert (await paying).status_code == 200
    (order,) = await rows(bank, "orders")
    assert order["state"] == "committed"


async def test_an_order_is_in_flight_before_its_reservation_commits(
    network: Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass that read the order between the commit and the send would ask the router,
    find nothing yet, and send a copy of the prepare that can overtake the original (whose
    answer is then "reserved", and the wallet's payment pending). Seen in `semops bench`."""
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    payer = bank.processor.payer
    reserve = payer._reserve
    marked: list[bool] = []

    async def reserving(connection: Any, row: dict[str, Any], now: int) -> None:
        marked.append(row["transfer_id"] in payer._in_flight)
        await reserve(connection, row, now)

    monkeypatch.setattr(payer, "_reserve", reserving)
    assert (await wallet.pay(created["token"])).status_code == 200
    assert marked == [True]
    assert payer._in_flight == set()


async def test_an_order_left_reserved_by_a_lost_call_is_asked_about(network: Network) -> None:
    """The in-flight mark ends with the call, whatever way it ends."""
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "pending"
    assert (await wallet.pay(created["token"])).status_code == 202
    (order,) = await rows(bank, "orders")
    calls = len(network.router.calls)
    assert await bank.processor.payer.resolve_in_doubt() == 0
    assert network.router.calls[calls:] == [("GET", f"/v1/transfers/{order['transfer_id']}")]


@on_both
async def test_an_in_doubt_transfer_resolves_to_committed_from_the_router(
    network: Network,
) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "pending"
    response = await wallet.pay(created["token"])
    order_id = response.json()["order_id"]
    (order,) = await rows(bank, "orders")
    request = parse_claims(read_unverified_claims(created["token"]), PaymentRequest)
    fulfilment = (await rows(mno, "requests"))[0]["fulfilment"]
    assert condition_for(fulfilment) == request.condition
    record = network.router.records[order["transfer_id"]]
    record.state, record.fulfilment = "committed", fulfilment
    network.router.mode = "normal"
    assert await bank.processor.payer.resolve_in_doubt() == 1
    status = (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()
    assert status["state"] == "completed"
    receipt = open_signed(
        status["receipt"], Receipt, bank.processor.directory.ring, network.clock.now()
    )
    assert receipt.message.fulfilment == fulfilment
    assert await wallet.balance() == 9700
    assert await settlement(bank) == -300
    # Asking again changes nothing.
    assert await bank.processor.payer.resolve_in_doubt() == 0
    await check_ledger(bank)


@on_both
async def test_not_found_after_expiry_counts_as_aborted(network: Network) -> None:
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "lost"
    response = await wallet.pay(created["token"])
    assert response.status_code == 202
    # Not found before the expiry: it could still be recorded, so the prepare is sent
    # again (and lost again here); nothing is voided.
    calls = len(network.router.calls)
    assert await bank.processor.payer.resolve_in_doubt() == 0
    assert ("POST", "/v1/transfers") in network.router.calls[calls:]
    assert await wallet.balance() == 9700
    network.router.mode = "normal"
    network.clock.advance(TRANSFER_TTL_DEFAULT_S + CLOCK_SKEW_MAX_S)
    assert await bank.processor.payer.resolve_in_doubt() == 1
    assert await wallet.balance() == 10_000
    (order,) = await rows(bank, "orders")
    assert order["state"] == "aborted" and order["reason_code"] == "transfer_expired"
    await check_ledger(bank)


@on_both
async def test_a_lost_prepare_is_sent_again_and_the_payment_completes(network: Network) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "lost"
    response = await wallet.pay(created["token"])
    assert response.status_code == 202
    order_id = response.json()["order_id"]
    (order,) = await rows(bank, "orders")
    assert order["state"] == "in_doubt" and order["transfer_id"] not in network.router.records
    network.router.mode = "normal"
    assert await bank.processor.payer.resolve_in_doubt() == 1  # not found -> sent again
    record = network.router.records[order["transfer_id"]]
    assert record.state == "committed"
    status = (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()
    assert status["state"] == "completed"
    assert await wallet.balance() == 9700
    assert (await shop.status(created["request_id"]))["state"] == "paid"
    # The same prepare, not a new one: the router saw one transfer id.
    assert [t for t in network.router.records if t == order["transfer_id"]] == [
        order["transfer_id"]
    ]
    await check_ledger(bank)
    await check_ledger(mno)


async def test_a_resent_prepare_is_not_sent_once_too_late(network: Network) -> None:
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "lost"
    assert (await wallet.pay(created["token"])).status_code == 202
    network.router.mode = "normal"
    network.clock.advance(TRANSFER_TTL_DEFAULT_S - TRANSFER_HOP_MARGIN_S)
    calls = len(network.router.calls)
    assert await bank.processor.payer.resolve_in_doubt() == 0
    assert ("POST", "/v1/transfers") not in network.router.calls[calls:]
    assert await wallet.balance() == 9700  # still held: only the expiry rule voids


async def test_the_routers_status_message_resolves_a_pending_order(network: Network) -> None:
    bank, _mno, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "pending"
    order_id = (await wallet.pay(created["token"])).json()["order_id"]
    (order,) = await rows(bank, "orders")
    await network.router.decide_later(order["transfer_id"], "aborted", "transfer_expired")
    assert await wallet.balance() == 10_000
    answer = (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()
    assert answer["state"] == "failed" and answer["error"]["code"] == "transfer_expired"
    # The same status again is acknowledged and changes nothing.
    await network.router.decide_later(order["transfer_id"], "aborted", "transfer_expired")
    assert await wallet.balance() == 10_000
    await check_ledger(bank)


async def test_a_status_for_an_unknown_transfer_is_acknowledged(network: Network) -> None:
    _, mno, _, _ = await two_processors(network)
    status = TransferStatus(
        transfer_id=make_id(IdKind.TRANSFER, secrets.token_bytes(16)),
        kind="payment",
        state="aborted",
        amount_minor=5,
        currency="EUR",
        decided_at=network.clock.now(),
        reason_code="transfer_expired",
    )
    response = await mno.scheme.post(
        "/v1/scheme/status",
        content=sign(status, network.router.key),
        headers={"Content-Type": JOSE},
    )
    assert response.status_code == 204


async def test_a_status_not_signed_by_the_router_is_refused(network: Network) -> None:
    bank, mno, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "pending"
    await wallet.pay(created["token"])
    (order,) = await rows(bank, "orders")
    status = TransferStatus(
        transfer_id=order["transfer_id"],
        kind="payment",
        state="aborted",
        amount_minor=300,
        currency="EUR",
        decided_at=network.clock.now(),
        reason_code="transfer_expired",
    )
    forged = sign(status, mno.processor.context.keys.sign_key)  # a processor, not the router
    response = await bank.scheme.post(
        "/v1/scheme/status", content=forged, headers={"Content-Type": JOSE}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "signer_mismatch"
    assert (await rows(bank, "orders"))[0]["state"] == "in_doubt"


# --- the payee side, with prepares crafted here ------------------------------------------


class Prepares:
    """Routed prepares for mno-b as the router would send them, for a request of `shop`."""

    def __init__(self, network: Network, payee: Node, request: dict[str, Any]) -> None:
        self.network = network
        self.payee = payee
        self.request = parse_claims(read_unverified_claims(request["token"]), PaymentRequest)

    def make(
        self, tweak: Callable[[dict[str, Any]], None] | None = None, **details: Any
    ) -> tuple[str, str]:
        now = self.network.clock.now()
        transfer_id = details.pop("transfer_id", make_id(IdKind.TRANSFER, secrets.token_bytes(16)))
        sealed_details = TransferDetails(
            transfer_id=details.pop("sealed_transfer_id", transfer_id),
            request_id=details.pop("request_id", self.request.request_id),
            payee_id=details.pop("payee_id", self.request.payee_id),
            payer_ref=condition_for(make_fulfilment(secrets.token_bytes(32))),
        )
        enc = self.payee.processor.context.keys.enc_record()
        fields: dict[str, Any] = {
            "transfer_id": transfer_id,
            "payee_processor": self.payee.id,
            "amount_minor": self.request.amount_minor,
            "currency": self.request.currency,
            "condition": self.request.condition,
            "created_at": now,
            "expires_at": now + 25,
            "sealed": seal(sealed_details, enc),
        }
        if tweak is not None:
            tweak(fields)
        return transfer_id, sign(RoutedPrepare(**fields), self.network.router.key)

    async def send(self, token: str) -> Any:
        return await self.payee.scheme.post(
            "/v1/scheme/transfers", content=token, headers={"Content-Type": JOSE}
        )

    def open_answer(self, text: str) -> TransferFulfil | TransferReject:
        ring = self.payee.processor.directory.ring
        now = self.network.clock.now()
        if read_unverified_claims(text)["type"] == "TransferFulfil":
            return open_signed(
                text, TransferFulfil, ring, now, expected_signer=self.payee.id
            ).message
        return open_signed(text, TransferReject, ring, now, expected_signer=self.payee.id).message


async def payee_setup(
    network: Network, amount_minor: int = 500, **fields: Any
) -> tuple[Node, Merchant, dict[str, Any], Prepares]:
    mno = await network.add("mno-b")
    shop = await merchant(mno, "kiosk")
    created = await shop.request(amount_minor, **fields)
    return mno, shop, created, Prepares(network, mno, created)


@on_both
async def test_a_matching_routed_prepare_is_fulfilled_once(network: Network) -> None:
    mno, shop, created, prepares = await payee_setup(network)
    transfer_id, token = prepares.make()
    first = await prepares.send(token)
    assert first.status_code == 200 and first.headers["content-type"] == JOSE
    answer = prepares.open_answer(first.text)
    assert isinstance(answer, TransferFulfil) and answer.transfer_id == transfer_id
    assert condition_for(answer.fulfilment) == prepares.request.condition
    assert (await shop.status(created["request_id"]))["state"] == "reserved"
    again = await prepares.send(token)
    assert again.text == first.text
    # The same prepare re-signed by the router later is still the same transfer.
    network.clock.advance(1)
    _, resigned = prepares.make(transfer_id=transfer_id)
    # (a fresh seal makes it different content: a conflict, never a second acceptance)
    conflict = await prepares.send(resigned)
    assert conflict.status_code == 409
    (inbound,) = await rows(mno, "inbound_transfers")
    assert inbound["state"] == "accepted"


async def test_a_second_transfer_for_a_reserved_request_is_rejected(network: Network) -> None:
    _, _, _, prepares = await payee_setup(network)
    assert isinstance(
        prepares.open_answer((await prepares.send(prepares.make()[1])).text), TransferFulfil
    )
    answer = prepares.open_answer((await prepares.send(prepares.make()[1])).text)
    assert isinstance(answer, TransferReject) and answer.reason_code == "request_not_payable"


@on_both
async def test_transfers_racing_for_one_request_reserve_it_once(network: Network) -> None:
    """Each prepare reads the request without a lock and reserves it only if it is still as
    read: of six transfers for one request sent at once, one is fulfilled and the others
    are rejected, decided again under the request's lock."""
    mno, shop, created, prepares = await payee_setup(network)
    tokens = [prepares.make()[1] for _ in range(6)]
    responses = await asyncio.gather(*(prepares.send(token) for token in tokens))
    answers = [prepares.open_answer(response.text) for response in responses]
    fulfilled = [answer for answer in answers if isinstance(answer, TransferFulfil)]
    rejected = [answer for answer in answers if isinstance(answer, TransferReject)]
    assert len(fulfilled) == 1 and len(rejected) == 5
    assert {answer.reason_code for answer in rejected} == {"request_not_payable"}
    status = await shop.status(created["request_id"])
    assert (status["state"], status["transfer_id"]) == ("reserved", fulfilled[0].transfer_id)
    states = sorted(row["state"] for row in await rows(mno, "inbound_transfers"))
    assert states == ["accepted"] + ["rejected"] * 5


@on_both
async def test_copies_of_a_prepare_and_of_its_commit_sent_at_once_count_once(
    network: Network,
) -> None:
    mno, shop, created, prepares = await payee_setup(network)
    transfer_id, token = prepares.make()
    answers = {
        response.text
        for response in await asyncio.gather(*(prepares.send(token) for _ in range(4)))
    }
    assert len(answers) == 1  # the one stored answer, to every copy
    (fulfil,) = (prepares.open_answer(text) for text in answers)
    assert isinstance(fulfil, TransferFulfil)
    codes = await asyncio.gather(
        *(
            status_to(mno, network, transfer_id, "committed", fulfilment=fulfil.fulfilment)
            for _ in range(4)
        )
    )
    assert codes == [204] * 4
    assert await account_balance(mno, shop.account_id) == 500
    assert await settlement(mno) == 500
    assert (await shop.status(created["request_id"]))["state"] == "paid"
    assert await mno.processor.payees.deliver_outbox() == 1  # one notice
    await check_ledger(mno)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"request_id": "rq_" + "X" * 22}, "not_found"),
        ({"payee_id": "someone-else"}, "not_found"),
        ({"sealed_transfer_id": "tr_" + "L" * 22}, "order_mismatch"),
    ],
)
async def test_a_routed_prepare_not_matching_a_request_is_rejected(
    network: Network, change: dict[str, str], reason: str
) -> None:
    _mno, shop, created, prepares = await payee_setup(network)
    transfer_id, token = prepares.make(**change)
    response = await prepares.send(token)
    answer = prepares.open_answer(response.text)
    assert isinstance(answer, TransferReject)
    assert (answer.transfer_id, answer.reason_code) == (transfer_id, reason)
    assert (await shop.status(created["request_id"]))["state"] == "open"
    # The rejection is stored: the same prepare gets the same answer.
    assert (await prepares.send(token)).text == response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [("amount_minor", 499), ("currency", "USD"), ("condition", "A" * 43)],
)
async def test_a_routed_prepare_for_other_terms_is_rejected(
    network: Network, field: str, value: Any
) -> None:
    _, _, _, prepares = await payee_setup(network)

    def tweak(fields: dict[str, Any]) -> None:
        fields[field] = value

    answer = prepares.open_answer((await prepares.send(prepares.make(tweak)[1])).text)
    assert isinstance(answer, TransferReject) and answer.reason_code == "order_mismatch"


async def test_a_routed_prepare_for_an_expired_request_is_rejected(network: Network) -> None:
    _, _, _, prepares = await payee_setup(network, ttl_s=REQUEST_TTL_MIN_S)
    network.clock.advance(REQUEST_TTL_MIN_S)
    answer = prepares.open_answer((await prepares.send(prepares.make()[1])).text)
    assert isinstance(answer, TransferReject) and answer.reason_code == "request_expired"


async def test_an_expired_routed_prepare_is_rejected(network: Network) -> None:
    _, _, _, prepares = await payee_setup(network)
    _, token = prepares.make()
    network.clock.advance(25)
    answer = prepares.open_answer((await prepares.send(token)).text)
    assert isinstance(answer, TransferReject) and answer.reason_code == "transfer_expired"


async def test_a_sealed_part_for_another_processor_is_rejected(network: Network) -> None:
    _, _, _, prepares = await payee_setup(network)
    bank = await network.add("bank-a")
    other_key = bank.processor.context.keys.enc_record()

    def reseal(fields: dict[str, Any]) -> None:
        details = TransferDetails(
            transfer_id=fields["transfer_id"],
            request_id=prepares.request.request_id,
            payee_id=prepares.request.payee_id,
            payer_ref="A" * 43,
        )
        fields["sealed"] = seal(details, other_key)

    answer = prepares.open_answer((await prepares.send(prepares.make(reseal)[1])).text)
    assert isinstance(answer, TransferReject) and answer.reason_code == "seal_invalid"


async def test_a_routed_prepare_not_signed_by_the_router_is_refused(network: Network) -> None:
    mno, _, _, prepares = await payee_setup(network)
    bank = await network.add("bank-a")
    await network.refresh_all()
    _, token = prepares.make()
    claims = read_unverified_claims(token)
    forged = sign(parse_claims(claims, RoutedPrepare), bank.processor.context.keys.sign_key)
    response = await prepares.send(forged)
    assert response.status_code == 403
    assert response.json()["code"] == "signer_mismatch"
    assert await rows(mno, "inbound_transfers") == []


async def test_a_routed_prepare_for_another_processor_is_refused(network: Network) -> None:
    mno, _, _, prepares = await payee_setup(network)

    def elsewhere(fields: dict[str, Any]) -> None:
        fields["payee_processor"] = "bank-a"

    response = await prepares.send(prepares.make(elsewhere)[1])
    assert response.status_code == 403
    assert await rows(mno, "inbound_transfers") == []


async def status_to(
    node: Node, network: Network, transfer_id: str, state: str, **fields: Any
) -> int:
    status = TransferStatus(
        transfer_id=transfer_id,
        kind="payment",
        state=state,
        amount_minor=fields.pop("amount_minor", 500),
        currency="EUR",
        decided_at=network.clock.now(),
        **fields,
    )
    response = await node.scheme.post(
        "/v1/scheme/status",
        content=sign(status, network.router.key),
        headers={"Content-Type": JOSE},
    )
    return response.status_code


@on_both
async def test_a_committed_status_credits_the_merchant_once(network: Network) -> None:
    mno, shop, created, prepares = await payee_setup(network)
    transfer_id, token = prepares.make()
    fulfil = prepares.open_answer((await prepares.send(token)).text)
    assert isinstance(fulfil, TransferFulfil)
    for _ in range(2):
        assert (
            await status_to(mno, network, transfer_id, "committed", fulfilment=fulfil.fulfilment)
            == 204
        )
    assert await account_balance(mno, shop.account_id) == 500
    assert await settlement(mno) == 500
    status = await shop.status(created["request_id"])
    assert status["state"] == "paid" and status["paid_at"] == network.clock.now()
    assert await mno.processor.payees.deliver_outbox() == 1
    await check_ledger(mno)


@on_both
async def test_an_aborted_status_reopens_the_request(network: Network) -> None:
    mno, shop, created, prepares = await payee_setup(network)
    transfer_id, token = prepares.make()
    await prepares.send(token)
    assert (
        await status_to(mno, network, transfer_id, "aborted", reason_code="transfer_expired") == 204
    )
    status = await shop.status(created["request_id"])
    assert status["state"] == "open" and status["transfer_id"] is None
    assert await account_balance(mno, shop.account_id) == 0
    # Paid later by another transfer.
    other_id, other = prepares.make()
    assert isinstance(prepares.open_answer((await prepares.send(other)).text), TransferFulfil)
    fulfilment = (await rows(mno, "requests"))[0]["fulfilment"]
    assert await status_to(mno, network, other_id, "committed", fulfilment=fulfilment) == 204
    assert (await shop.status(created["request_id"]))["state"] == "paid"


async def test_a_status_for_another_amount_is_refused(network: Network) -> None:
    mno, shop, _, prepares = await payee_setup(network)
    transfer_id, token = prepares.make()
    fulfil = prepares.open_answer((await prepares.send(token)).text)
    assert isinstance(fulfil, TransferFulfil)
    code = await status_to(
        mno, network, transfer_id, "committed", fulfilment=fulfil.fulfilment, amount_minor=499
    )
    assert code == 409
    assert await account_balance(mno, shop.account_id) == 0


async def test_a_late_router_directory_is_refreshed_on_an_unknown_payee(network: Network) -> None:
    bank = await network.add("bank-a")
    mno = await network.add("mno-b")
    # bank-a registered before mno-b: its directory does not list mno-b yet.
    assert "mno-b" not in {
        e.participant_id for e in bank.processor.directory.current().directory.entries
    }
    wallet = await enrolled_wallet(bank)
    shop = await merchant(mno, "kiosk")
    created = await shop.request(100)
    response = await wallet.pay(created["token"])
    assert response.status_code == 200, response.text
    assert "mno-b" in {
        e.participant_id for e in bank.processor.directory.current().directory.entries
    }


async def test_a_retried_pending_order_asks_the_router_and_gets_the_receipt(
    network: Network,
) -> None:
    bank, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "lost_reply"
    network.router.push_status = False
    order_id, order = wallet.order(created["token"])
    first = await wallet.send(order)
    assert first.status_code == 202
    network.router.mode = "normal"
    again = await wallet.send(order)
    assert again.status_code == 200
    receipt = open_signed(again.text, Receipt, bank.processor.directory.ring, network.clock.now())
    assert receipt.message.order_id == order_id
    assert await wallet.balance() == 9700
    assert (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()["state"] == "completed"
    await check_ledger(bank)


async def test_an_order_status_query_asks_the_router_for_a_pending_order(
    network: Network,
) -> None:
    _, _, wallet, shop = await two_processors(network)
    created = await shop.request(300)
    network.router.mode = "lost_reply"
    network.router.push_status = False
    order_id = (await wallet.pay(created["token"])).json()["order_id"]
    network.router.mode = "down"
    assert (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()["state"] == "pending"
    network.router.mode = "normal"
    status = (await wallet.get(f"/v1/wallet/orders/{order_id}")).json()
    assert status["state"] == "completed" and status["receipt"]
