"""The policy table is §5 of the design, read from the design itself; roles follow owners."""

from __future__ import annotations

from pathlib import Path

import pytest

from semops.privacy import (
    COLUMNS,
    POLICY,
    ActorKind,
    ActorRef,
    Category,
    Cell,
    Role,
    cell,
    customer,
    participant,
    payee,
    role_of,
)
from semops.privacy.policy import scoped_to_payee_side

DESIGN = Path(__file__).resolve().parents[2].parent / "shared" / "DESIGN.md"
# A design row that names three data is three rows here.
SPLIT = {
    "payer name / account / phone": (
        Category.PAYER_NAME,
        Category.PAYER_ACCOUNT,
        Category.PAYER_PHONE,
    )
}
# Rows the design implies elsewhere (§5's parenthesis, §6) rather than listing in §5.
NOT_IN_TABLE = {
    Category.DEVICE_PUBLIC_KEY,
    Category.API_KEY,
    Category.ACTIVATION_CODE,
    Category.SERVICE_SECRET,
}


def _design_rows() -> dict[str, list[str]]:
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## 5.", 1)[1].split("## 6.", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header, _separator, *body = rows
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [
        "wallet",
        "merchant",
        "payee proc",
        "router",
        "payer proc",
    ]
    return {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in row.strip("|").split("|")] for row in body)
    }


def _meaning(design_cell: str) -> set[Cell]:
    """What a §5 cell allows the policy to say (a key file is where ✓ keeps a secret)."""
    if design_cell.startswith("✓"):
        return {Cell.ALLOWED, Cell.KEY_FILE}
    if design_cell.startswith("#"):
        return {Cell.DIGEST}
    if design_cell.startswith(("entered", "verified")):
        return {Cell.NEVER_AT_REST}
    assert design_cell.startswith("\u2013"), design_cell
    return {Cell.FORBIDDEN}


@pytest.mark.skipif(not DESIGN.exists(), reason="shared/DESIGN.md is not beside the repo")
def test_the_policy_is_section_5_of_the_design_cell_by_cell() -> None:
    covered: set[Category] = set()
    for datum, cells in _design_rows().items():
        categories = SPLIT.get(datum) or (Category(datum),)
        for category in categories:
            covered.add(category)
            for role, design_cell in zip(COLUMNS, cells, strict=False):
                assert cell(category, role) in _meaning(design_cell), (category, role)
    assert covered | NOT_IN_TABLE == set(POLICY) == set(Category)


def test_the_strictest_rows_forbid_everywhere() -> None:
    for role in Role:
        assert cell(Category.PIN, role) in (Cell.FORBIDDEN, Cell.NEVER_AT_REST)
        assert cell(Category.SERVICE_SECRET, role) is Cell.KEY_FILE
        assert cell(Category.PAYER_NAME, role).searched == (
            role not in (Role.WALLET, Role.PAYER_PROCESSOR)
        )


BANK = ActorRef(ActorKind.PROCESSOR, "bank-a")
MNO = ActorRef(ActorKind.PROCESSOR, "mno-b")
ROUTER = ActorRef(ActorKind.ROUTER, "router")
CAFE = ActorRef(ActorKind.MERCHANT, "corner-cafe", processor_id="mno-b")
ZELDAS_WALLET = ActorRef(ActorKind.WALLET, "zelda", processor_id="bank-a", account_id="ac_zelda")


@pytest.mark.parametrize(
    ("actor", "owner", "role"),
    [
        (BANK, customer("bank-a", "ac_zelda"), Role.PAYER_PROCESSOR),
        (MNO, customer("bank-a", "ac_zelda"), Role.PAYEE_PROCESSOR),
        (MNO, payee("mno-b", "corner-cafe"), Role.PAYEE_PROCESSOR),
        (BANK, payee("mno-b", "corner-cafe"), Role.PAYER_PROCESSOR),
        (ROUTER, customer("bank-a", "ac_zelda"), Role.ROUTER),
        (BANK, participant("bank-a"), Role.PAYER_PROCESSOR),
        (MNO, participant("bank-a"), Role.PAYEE_PROCESSOR),
        (CAFE, participant("bank-a"), Role.MERCHANT),
        (CAFE, participant("mno-b"), None),  # the cafe's own processor
        (CAFE, customer("bank-a", "ac_zelda"), Role.MERCHANT),
        (CAFE, payee("mno-b", "corner-cafe"), Role.MERCHANT),
        (CAFE, payee("bank-a", "book-shop"), Role.OTHER_PARTY),
        (ZELDAS_WALLET, customer("bank-a", "ac_zelda"), Role.WALLET),
        (ZELDAS_WALLET, customer("mno-b", "ac_mia"), Role.OTHER_PARTY),
        (ZELDAS_WALLET, payee("mno-b", "p-mia", "ac_mia"), Role.WALLET),
        (ZELDAS_WALLET, payee("bank-a", "p-zelda", "ac_zelda"), Role.MERCHANT),
        (ZELDAS_WALLET, participant("mno-b"), Role.WALLET),
    ],
)
def test_an_actors_role_follows_whose_datum_it_is(
    actor: ActorRef, owner: object, role: Role | None
) -> None:
    assert role_of(actor, owner) == role  # type: ignore[arg-type]


def test_only_the_payer_processor_at_a_payee_processor_is_scoped() -> None:
    assert scoped_to_payee_side(Category.PAYER_PROCESSOR, Role.PAYEE_PROCESSOR)
    assert not scoped_to_payee_side(Category.PAYER_PROCESSOR, Role.MERCHANT)
    assert not scoped_to_payee_side(Category.PAYER_NAME, Role.PAYEE_PROCESSOR)
