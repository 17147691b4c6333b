"""DESIGN.md §5 over a whole network: after every scenario the exposure check reads every
actor's tables, logs and stored messages and finds nothing out of place -- and when leaks
are planted in a copy of the same data, it finds each one, with actor, place, datum and
encoding.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from semops.cli.privacy import exposure
from semops.privacy import Category, ExposureReport, Finding, check_exposure
from tests.privacy.story import PEOPLE, WRONG_PINS, Story, b64url

pytestmark = pytest.mark.timeout(300)

Expected = dict[str, tuple[str, str, str, str]]  # plant -> (actor, place, category, encoding)
Planted = tuple[Path, Expected, ExposureReport]

WALLETS = tuple(f"wallet:{name.lower().replace(' ', '-')}" for _, name, *_ in PEOPLE.values())
MERCHANTS = ("merchant:corner-cafe", "merchant:book-shop")


def _shown(findings: list[Finding]) -> str:
    return "\n".join(finding.line() for finding in findings)


def test_every_scenario_ended_as_designed(story: Story) -> None:
    results = story.outcomes
    assert results["bank_to_mno"] == results["mno_to_bank"] == "completed"
    assert results["bank_to_mno_merchant_state"] == results["mno_to_bank_merchant_state"] == "paid"
    assert results["on_us"] == results["p2p"] == "completed"
    assert (results["refund"], results["refund_credited"]) == ("completed", 300)
    assert results["p2p_credited"] == 1730 and results["p2p_link"].startswith("semops:pay?r=")
    assert (results["wrong_pin"], results["after_wrong_pin"]) == ("pin_invalid", "completed")
    assert results["lockout"] == ["pin_invalid", "pin_invalid", "pin_locked", "pin_locked"]
    assert results["lockout_moved"] == 0
    assert (results["declined"], results["declined_moved"]) == ("insufficient_funds", 0)
    assert results["expired"] == "request_expired"
    assert len(story.linked) == 6


def test_no_actor_holds_anything_outside_its_column(clean_report: ExposureReport) -> None:
    assert clean_report.ok, _shown(clean_report.findings)


def test_the_check_says_what_it_read_and_it_read_every_actor(
    clean_report: ExposureReport,
) -> None:
    actors = {counts.actor: counts for counts in clean_report.actors}
    assert set(actors) == {"router", "bank-a", "mno-b", *MERCHANTS, *WALLETS}
    for name in ("router", "bank-a", "mno-b", *MERCHANTS):
        counts = actors[name]
        assert counts.databases == 1 and counts.tables >= 4, counts
        assert counts.rows > 0 and counts.values > counts.rows, counts
        assert counts.log_files >= 1 and counts.log_lines > 0, counts
        assert counts.tokens_decoded > 0, counts  # stored signed messages were opened
        assert counts.data_searched > 0 and counts.forms_searched > counts.data_searched
    for name in ("router", "bank-a", "mno-b"):
        assert actors[name].secret_files >= 3  # keys and the operator token: modes checked
    for name in WALLETS:
        assert actors[name].rows > 0 and actors[name].secret_files == 1  # device.key
    payers = [actors[name] for name in WALLETS if "receiver" not in name]
    assert all(counts.tokens_opaque > 0 for counts in payers)  # PIN blocks stay sealed
    processor_tables = {name.split(":", 1)[1] for name in actors["mno-b"].table_names}
    assert {"inbound_transfers", "requests", "customers", "outbox"} <= processor_tables
    sought = clean_report.data_by_category
    assert sought[Category.PIN.value] == len(PEOPLE) + len(WRONG_PINS)
    for category in Category:
        if category not in (Category.AMOUNT, Category.TRANSFER_ID):
            assert sought.get(category.value, 0) > 0, category  # every row of §5 was sought


def test_the_command_prints_what_it_searched_and_passes(story: Story) -> None:
    result = _cli(story.data_dir, [*_pin_options(story), "--policy"])
    assert result.exit_code == 0, result.output
    assert "What was searched" in result.output and "No exposure" in result.output
    assert "payer proc" in result.output  # the policy table, as the design has it


# --- planted leaks ----------------------------------------------------------------------


def _sql(path: Path, statement: str, *args: str) -> None:
    with sqlite3.connect(path) as connection:
        assert connection.execute(statement, args).rowcount == 1


def _append(path: Path, line: str) -> int:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return len(path.read_text(encoding="utf-8").splitlines())


def _plant(story: Story, data: Path) -> Expected:
    """Plant one leak of each kind; returns name -> (actor, place, category, encoding)."""
    zelda = story.customers["zelda"]
    inbound = story.linked[0].transfer_id
    _sql(
        data / "merchants" / "corner-cafe" / "corner-cafe.db",
        "UPDATE orders SET error_code = ? WHERE rowid = (SELECT min(rowid) FROM orders)",
        zelda.phone,
    )
    pin_line = _append(
        data / "bank-a" / "logs" / "bank-a.log",
        json.dumps({"event": "order_refused", "pin": zelda.pin, "level": "info"}),
    )
    _sql(
        data / "mno-b" / "mno-b.db",
        "UPDATE inbound_transfers SET reason_code = ? WHERE transfer_id = ?",
        zelda.processor_id,
        inbound,
    )
    blob = b64url(json.dumps({"payer_account": zelda.account_id, "at": 1}))
    account_line = _append(
        data / "router" / "logs" / "router.log",
        json.dumps({"event": "transfer_decided", "transfer_id": inbound, "trace": blob}),
    )
    unsigned = ".".join(
        (b64url('{"alg":"none"}'), b64url(json.dumps({"payer": zelda.name})), "c2ln")
    )
    _sql(
        data / "router" / "router.db",
        "UPDATE outbox SET body = ? WHERE rowid = (SELECT min(rowid) FROM outbox)",
        unsigned,
    )
    (data / "bank-a" / "pin.key").chmod(0o644)
    _sql(
        data / "wallets" / "kofi-lockwood-payer" / "wallet.db",
        "UPDATE orders SET error_detail = ? WHERE rowid = (SELECT min(rowid) FROM orders)",
        f"refused pin {story.customers['kofi'].pin}",
    )
    return {
        "phone in the merchant's database": (
            "merchant:corner-cafe",
            "corner-cafe.db orders.error_code row ",
            Category.PAYER_PHONE.value,
            "raw",
        ),
        "PIN in a processor's log": (
            "bank-a",
            f"logs/bank-a.log:{pin_line}",
            Category.PIN.value,
            "raw",
        ),
        "payer processor in the payee side's inbound transfers": (
            "mno-b",
            "mno-b.db inbound_transfers.reason_code row ",
            Category.PAYER_PROCESSOR.value,
            "raw",
        ),
        "base64url payer account in the router's log": (
            "router",
            f"logs/router.log:{account_line}",
            Category.PAYER_ACCOUNT.value,
            "base64url",
        ),
        "payer name inside a JWS in the router's outbox": (
            "router",
            "router.db outbox.body row 1 [JWS payload]",
            Category.PAYER_NAME.value,
            "raw",
        ),
        "PIN key readable by others": (
            "bank-a",
            "pin.key",
            Category.SERVICE_SECRET.value,
            "file mode 0644",
        ),
        "PIN in a wallet's database": (
            "wallet:kofi-lockwood-payer",
            "wallet.db orders.error_detail row ",
            Category.PIN.value,
            "raw",
        ),
    }


@pytest.fixture(scope="module")
def planted(story: Story, tmp_path_factory: pytest.TempPathFactory) -> Planted:
    data = tmp_path_factory.mktemp("planted") / "net"
    shutil.copytree(story.data_dir, data)
    expected = _plant(story, data)
    return data, expected, check_exposure(data, story.extra_data())


PLANTS = (
    "phone in the merchant's database",
    "PIN in a processor's log",
    "payer processor in the payee side's inbound transfers",
    "base64url payer account in the router's log",
    "payer name inside a JWS in the router's outbox",
    "PIN key readable by others",
    "PIN in a wallet's database",
)


@pytest.mark.parametrize("plant", PLANTS)
def test_a_planted_leak_is_found_with_actor_place_datum_and_encoding(
    planted: Planted,
    plant: str,
) -> None:
    _, expected, report = planted
    actor, place, category, encoding = expected[plant]
    matches = [
        finding
        for finding in report.findings
        if finding.actor == actor
        and finding.place.startswith(place)
        and finding.category == category
        and encoding in finding.encoding
    ]
    assert matches, f"{plant} not found in:\n{_shown(report.findings)}"


def test_only_the_planted_leaks_are_found(
    planted: Planted,
) -> None:
    _, expected, report = planted
    assert not report.ok
    places = {(finding.actor, finding.category) for finding in report.findings}
    wanted = {(actor, category) for actor, _, category, _ in expected.values()}
    assert places == wanted, _shown(report.findings)


def test_the_command_fails_on_the_planted_leaks_and_names_them(
    story: Story,
    planted: Planted,
) -> None:
    data = planted[0]
    human = _cli(data, _pin_options(story))
    assert human.exit_code == 1 and "findings" in human.output
    result = _cli(data, [*_pin_options(story), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["ok"] is False
    found = {(f["actor"], f["category"]) for f in document["findings"]}
    assert ("router", Category.PAYER_ACCOUNT.value) in found
    assert ("bank-a", Category.PIN.value) in found
    pin = story.customers["zelda"].pin  # the report says where a PIN is, never the PIN
    assert all(pin not in finding["datum"] for finding in document["findings"])


def _pin_options(story: Story) -> list[str]:
    options: list[str] = []
    for person in story.customers.values():
        options += ["--pin", person.pin]
    for code in story.activation_codes.values():
        options += ["--activation-code", code]
    return options


def _cli(data: Path, options: list[str]) -> Result:
    app = typer.Typer()
    app.command()(exposure)
    return CliRunner().invoke(app, [str(data), *options])
