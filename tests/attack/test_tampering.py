"""Tampering: any field of any message changed in flight is refused and changes no state.

For each message type the attacker takes a captured token and (1) changes each claim in
turn, keeping the original signature; (2) signs it again with a key it holds: another
participant's real key (an insider, or a thief of that key file), and a fresh random key
that claims the rightful signer's kid. Every attempt gets a stable error code, and after
all of them every row of every service's database is as it was.

Dynamic linking: a compromised device key can sign any order, but the PIN block inside is
bound to the digest of the order the customer approved; another amount or payee is
refused, and -- the PIN never having been checked -- it is not a PIN attempt.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest

from semops.devnet.actors import request_payment
from tests.attack.attacker import (
    Answer,
    claims_of,
    device_key_of,
    field_changes,
    forge_order,
    impostor_key,
    post_jose,
    processor_keys,
    signed_with,
    to_router,
    to_scheme_port,
    to_wallet_port,
    with_claims,
)
from tests.attack.conftest import PIN, SHOP_Y, Scene
from tests.attack.flows import Routed, refund_of, routed_payment

pytestmark = pytest.mark.timeout(300)

Send = Callable[[str], Answer]


def _header(token: str) -> dict[str, Any]:
    return claims_of("x." + token.split(".")[0] + ".x")


def _every_change_refused(send: Send, token: str) -> None:
    """Each claim changed in turn under the original signature: signature_invalid."""
    claims = claims_of(token)
    got = {name: send(with_claims(token, changed)) for name, changed in field_changes(claims)}
    wrong = {name: (a.status, a.code) for name, a in got.items() if a.code != "signature_invalid"}
    assert not wrong, wrong
    assert len(got) == len(claims) - 1  # every claim but the version was tried


def _resigned(send: Send, token: str, other: Any, other_code: str) -> None:
    """Signed again, as it was and with a bigger amount: by another participant's real key
    (refused as `other_code`) and by a random key under the rightful signer's kid."""
    claims = claims_of(token)
    variants = [claims]
    if "amount_minor" in claims:
        variants.append({**claims, "amount_minor": claims["amount_minor"] * 100})
    impostor = impostor_key(_header(token)["kid"])
    for variant in variants:
        assert send(signed_with(variant, other)).code == other_code
        assert send(signed_with(variant, impostor)).code == "signature_invalid"


@pytest.fixture(scope="package")
def payment(scene: Scene) -> Routed:
    return routed_payment(scene, 333)


@pytest.fixture(scope="package")
def refund(scene: Scene, payment: Routed) -> str:
    return refund_of(scene, payment, 33)


def test_a_changed_order_is_refused(scene: Scene) -> None:
    network = scene.network
    alice, carol = scene.people["alice"], scene.people["carol"]
    created = request_payment(network, scene.shops["cafe"], 140)
    order = forge_order(network, alice, created["token"], pin=PIN, entropy=secrets.token_bytes(16))
    before = scene.quiet()

    def send(token: str) -> Answer:
        return to_wallet_port(network, "bank-a", token)

    _every_change_refused(send, order.token)
    claims = claims_of(order.token)
    # Carol's real device key: a valid signature, but not by a device of alice's account.
    assert send(signed_with(claims, device_key_of(carol))).code == "forbidden"
    assert send(signed_with(claims, impostor_key(_header(order.token)["kid"]))).code == (
        "signature_invalid"
    )
    # bank-a's own signing key is no device key.
    assert send(signed_with(claims, processor_keys(network, "bank-a").sign_key)).code == (
        "device_unknown"
    )
    scene.assert_unchanged(before)


def test_a_compromised_device_key_cannot_move_the_pin_to_another_amount_or_payee(
    scene: Scene,
) -> None:
    network = scene.network
    alice = scene.people["alice"]
    approved_request = request_payment(network, scene.shops["cafe"], 150)
    other_request = request_payment(network, scene.shops["books"], 9_000)
    approved = forge_order(
        network, alice, approved_request["token"], pin=PIN, entropy=secrets.token_bytes(16)
    )
    stolen = device_key_of(alice)
    claims = claims_of(approved.token)
    before = scene.quiet()

    # The same request, another amount: it no longer matches the signed request.
    more = {**claims, "amount_minor": 15_000}
    answer = to_wallet_port(network, "bank-a", signed_with(more, stolen))
    assert (answer.status, answer.code) == (422, "order_mismatch"), answer.body
    # Another payee and amount: a consistent order, but the PIN block is bound to the
    # digest of the approved one.
    other = claims_of(
        forge_order(
            network, alice, other_request["token"], pin="0000", entropy=secrets.token_bytes(16)
        ).token
    )
    moved = {**other, "pin_block": claims["pin_block"]}
    answer = to_wallet_port(network, "bank-a", signed_with(moved, stolen))
    assert (answer.status, answer.code) == (403, "pin_block_mismatch"), answer.body
    # Neither was a PIN attempt (the credentials table is in the snapshot): nothing changed
    # but the refusal of each order id, kept so that the same order gets the same answer.
    scene.assert_unchanged(before, refused=("order_mismatch", "pin_block_mismatch"))


def test_a_changed_prepare_is_refused(scene: Scene, payment: Routed) -> None:
    network = scene.network
    before = scene.quiet()

    def send(token: str) -> Answer:
        return to_router(network, "/v1/transfers", token)

    _every_change_refused(send, payment.prepare)
    _resigned(send, payment.prepare, processor_keys(network, "mno-b").sign_key, "signer_mismatch")
    # bank-a itself (or a thief of its key) re-signing another amount under the used id.
    claims = claims_of(payment.prepare)
    bank_a = processor_keys(network, "bank-a").sign_key
    more = signed_with({**claims, "amount_minor": claims["amount_minor"] + 1}, bank_a)
    conflict = send(more)
    assert (conflict.status, conflict.code) == (409, "idempotency_conflict")
    scene.assert_unchanged(before)


def test_a_changed_routed_prepare_is_refused(scene: Scene, payment: Routed) -> None:
    network = scene.network
    before = scene.quiet()

    def send(token: str) -> Answer:
        return to_scheme_port(network, "mno-b", "/v1/scheme/transfers", token)

    _every_change_refused(send, payment.routed)
    _resigned(send, payment.routed, processor_keys(network, "bank-a").sign_key, "signer_mismatch")
    scene.assert_unchanged(before)


def test_a_changed_status_is_refused(scene: Scene, payment: Routed) -> None:
    network = scene.network
    before = scene.quiet()

    def send(token: str) -> Answer:
        return to_scheme_port(network, "mno-b", "/v1/scheme/status", token)

    for token in (payment.status_push, payment.status_reply):
        _every_change_refused(send, token)
        _resigned(send, token, processor_keys(network, "bank-a").sign_key, "signer_mismatch")
    scene.assert_unchanged(before)


def test_a_changed_notice_is_refused(scene: Scene, payment: Routed) -> None:
    network = scene.network
    notice = next(
        x.request_body
        for x in scene.tap.captured("webhook", "/notices")
        if claims_of(x.request_body)["request_id"] == payment.request["request_id"]
    )
    url = f"http://127.0.0.1:{scene.layout.ports[SHOP_Y]}/v1/notices"
    before = scene.quiet()

    def send(token: str) -> Answer:
        return post_jose(url, token)

    _every_change_refused(send, notice)
    # bank-a is not shop-y's processor: its key is unknown to shop-y's backend.
    _resigned(send, notice, processor_keys(network, "bank-a").sign_key, "key_unknown")
    scene.assert_unchanged(before)


def test_a_changed_refund_is_refused(scene: Scene, refund: str) -> None:
    network = scene.network
    before = scene.quiet()

    def send(token: str) -> Answer:
        return to_router(network, "/v1/refunds", token, as_party="mno-b")

    _every_change_refused(send, refund)
    _resigned(send, refund, processor_keys(network, "bank-a").sign_key, "signer_mismatch")
    scene.assert_unchanged(before)
