"""M5: the PIN prompt read "Pay 42.00 EUR to ㅤ" -- a payee name that is only a blank.

Payee names (merchants, and the customers' names that P2P payees carry) and references
went into signed requests with zero-width characters, the Hangul filler, tag characters,
piles of combining marks and mixed-script look-alikes ("Corner Café" spelt with a Cyrillic
Es and Ie). Every API that takes such a text now refuses it with `name_not_allowed` and
writes nothing; a processor refuses a merchant name that looks like another payee's name
(`name_confusable`), while ordinary names in any script still pass.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from typing import Any, Final

import pytest

from semops.devnet.actors import create_merchant, merchant_call
from semops.devnet.network import ServiceError
from tests.attack.conftest import SHOP_Y, SHOP_Y_AUTH, Scene

pytestmark = pytest.mark.timeout(300)

CYRILLIC_ES, CYRILLIC_IE = "\u0421", "\u0435"
UNREADABLE: Final = {
    "hangul-filler": "\u3164",
    "zero-width-joiner": "Corner\u200dCaf\u200de",
    "tag-characters": "Shop\U000e0070\U000e0061\U000e0079",
    "combining-pile": "Sho" + "p\u0300\u0301\u0302\u0303\u0304\u0306\u0307",
    "mixed-script": f"{CYRILLIC_ES}orn{CYRILLIC_IE}r Café",
    "braille-blank": "\u2800 42",
}
GOOD_NAMES: Final = ("Corner Café", "Alpha Bank", "山田商店", "Müller & Söhne", "O'Brien")


def _refused(call: Any, expected_code: str, expected_status: int = 422) -> None:
    with pytest.raises(ServiceError) as refused:
        call()
    assert refused.value.status == expected_status, refused.value.problem
    assert refused.value.code == expected_code, refused.value.problem


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_merchant_name_is_refused_and_stores_nothing(scene: Scene, case: str) -> None:
    before = scene.quiet()
    _refused(
        lambda: create_merchant(scene.network, "bank-a", f"bad-{case}", UNREADABLE[case]),
        "name_not_allowed",
    )
    scene.assert_unchanged(before)


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_an_unreadable_customer_name_is_refused_and_stores_nothing(scene: Scene, case: str) -> None:
    """A customer's name is what P2P requests show as the payee."""
    before = scene.quiet()
    body = {"name": UNREADABLE[case], "phone": "+4915199990001", "currency": "EUR"}
    _refused(
        lambda: scene.network.admin("mno-b", "POST", "/v1/admin/customers", body),
        "name_not_allowed",
    )
    scene.assert_unchanged(before)


def test_an_unreadable_reference_is_refused_at_the_processor_and_the_merchant_backend(
    scene: Scene,
) -> None:
    before = scene.quiet()
    for case in ("zero-width-joiner", "tag-characters", "hangul-filler"):
        body = {
            "amount_minor": 4200,
            "currency": "EUR",
            "idempotency_key": secrets.token_urlsafe(16),
            "reference": UNREADABLE[case],
        }
        _refused(
            lambda body=body: merchant_call(
                scene.network, scene.shops["cafe"], "POST", "/v1/merchant/requests", body
            ),
            "name_not_allowed",
        )
        order = {"amount": "42.00", "currency": "EUR", "reference": UNREADABLE[case]}
        status, problem = _post_json(
            f"http://127.0.0.1:{scene.layout.ports[SHOP_Y]}/v1/orders", order
        )
        assert (status, problem.get("code")) == (422, "name_not_allowed"), (case, problem)
    scene.assert_unchanged(before)


def test_good_names_pass_and_a_look_alike_of_one_is_refused(scene: Scene) -> None:
    for number, name in enumerate(GOOD_NAMES):
        create_merchant(scene.network, "bank-a", f"good-{number}", name)
    before = scene.quiet()
    # The attack of the report, and look-alikes a single script allows: all refused.
    lookalike = f"{CYRILLIC_ES}orn{CYRILLIC_IE}r Café"
    _refused(
        lambda: create_merchant(scene.network, "bank-a", "fake-cafe-1", lookalike),
        "name_not_allowed",
    )
    for number, name in enumerate(("C0rner Café", "CORNER  CAFÉ", "Comer Café", "A1pha Bank")):
        _refused(
            lambda name=name, number=number: create_merchant(
                scene.network, "bank-a", f"fake-{number}", name
            ),
            "name_confusable",
            409,
        )
    scene.assert_unchanged(before)


def _post_json(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **SHOP_Y_AUTH}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
