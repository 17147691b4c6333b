"""Settlement reports (pure): built from committed transfers they balance, and a report
that does not balance cannot even be parsed; statements, headroom, the cap rule, CSV."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semops.audit.report import (
    CommittedTransfer,
    SettlementQuery,
    SettlementReport,
    build_report,
    cap_allows,
    headroom_line,
    open_report,
    report_digest,
    statement_for,
    summary_csv,
    transfers_csv,
)
from semops.core.errors import SemopsError
from semops.crypto import KeyUse, private_key_for
from semops.devnet import ensure_pki
from semops.protocol import parse_claims, sign
from semops.service.files import read_private_key

START = 1_900_000_000
PROCESSORS = ("bank-a", "mno-b", "mno-c")


def _transfer(
    number: int, sender: str, receiver: str, amount: int, kind: str = "payment"
) -> CommittedTransfer:
    return CommittedTransfer(
        f"tr_{number:012d}", kind, sender, receiver, amount, "EUR", START + number
    )


RUN = [
    _transfer(1, "bank-a", "mno-b", 1250),
    _transfer(2, "mno-b", "bank-a", 700),
    _transfer(3, "bank-a", "mno-b", 300),
    _transfer(4, "mno-b", "bank-a", 200, "refund"),
]


def test_a_report_lists_each_side_and_nets_to_zero() -> None:
    report = build_report("router", 1, START, START + 100, RUN)
    assert report.transfers_count == 4
    bank = report.participant("bank-a")
    (position,) = bank.positions
    assert (position.net_minor, position.sent_minor, position.received_minor) == (-650, 1550, 900)
    assert (position.sent_count, position.received_count) == (2, 2)
    assert [line.direction for line in bank.transfers] == ["sent", "received", "sent", "received"]
    assert report.participant("mno-b").positions[0].net_minor == 650
    assert report.participant("nobody").transfers == ()


def test_an_empty_window_has_an_empty_report() -> None:
    report = build_report("router", 7, START, START, [])
    assert report.transfers_count == 0 and report.participants == ()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(PROCESSORS),
            st.sampled_from(PROCESSORS),
            st.integers(min_value=1, max_value=10**9),
            st.sampled_from(("EUR", "USD")),
        ).filter(lambda item: item[0] != item[1]),
        max_size=40,
    )
)
def test_any_set_of_transfers_makes_a_balanced_report_that_parses_back(
    items: list[tuple[str, str, int, str]],
) -> None:
    transfers = [
        CommittedTransfer(f"tr_{n:012d}", "payment", sender, receiver, amount, currency, START + n)
        for n, (sender, receiver, amount, currency) in enumerate(items)
    ]
    report = build_report("router", 3, START, START + 10**5, transfers)
    for currency in ("EUR", "USD"):
        nets = [p.position(currency) for p in report.participants]
        assert sum(position.net_minor for position in nets if position) == 0
    assert parse_claims(report.to_claims(), SettlementReport) == report


def _claims() -> dict:  # type: ignore[type-arg]
    return build_report("router", 1, START, START + 100, RUN).to_claims()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c["participants"][0]["positions"][0].update(net_minor=-600),  # sum of lines
        lambda c: c["participants"][0]["transfers"].pop(),  # one side missing
        lambda c: c["participants"][0]["transfers"][0].update(amount_minor=1),  # sides disagree
        lambda c: c.update(transfers_count=5),
        lambda c: c["participants"].reverse(),  # order
        lambda c: c.update(closed_at=START - 1),
    ],
    ids=["position", "one-sided", "disagreeing-sides", "count", "order", "closed-before-open"],
)
def test_a_report_that_does_not_hold_together_is_refused(tamper: object) -> None:
    claims = _claims()
    tamper(claims)  # type: ignore[operator]
    with pytest.raises(SemopsError) as refused:
        parse_claims(claims, SettlementReport)
    assert refused.value.code == "validation_failed"


def test_a_statement_carries_one_participant_and_the_digest_of_the_whole() -> None:
    report = build_report("router", 1, START, START + 100, RUN)
    statement = statement_for(report, "mno-b")
    assert statement.settlement == report.participant("mno-b")
    assert statement.report_digest == report_digest(report)
    assert "bank-a" not in str(statement.to_claims())  # nothing about the counterparties


def test_the_cap_limits_what_may_be_owed_in_the_window_counting_in_flight() -> None:
    assert cap_allows(position_minor=-650, in_flight_minor=0, amount_minor=350, cap=1000)
    assert not cap_allows(position_minor=-650, in_flight_minor=0, amount_minor=351, cap=1000)
    assert not cap_allows(position_minor=-650, in_flight_minor=100, amount_minor=300, cap=1000)
    assert cap_allows(position_minor=500, in_flight_minor=0, amount_minor=1500, cap=1000)
    assert headroom_line("EUR", -650, 100, 1000).headroom_minor == 250
    assert headroom_line("EUR", -650, 100, None).headroom_minor is None


def test_a_settlement_query_is_short_lived_and_names_a_settlement_path() -> None:
    SettlementQuery(
        participant_id="bank-a",
        path="/v1/settlement/windows/3",
        created_at=START,
        expires_at=START + 60,
    )
    for path, ttl in (
        ("/v1/admin/windows/3", 60),
        ("/v1/settlement/../admin", 60),
        ("/v1/settlement/headroom", 3600),
    ):
        with pytest.raises(ValueError):
            SettlementQuery(
                participant_id="bank-a", path=path, created_at=START, expires_at=START + ttl
            )


def test_a_signed_report_opens_only_with_a_router_certificate_from_the_root(tmp_path: Path) -> None:
    ensure_pki(tmp_path, {"router": "router", "bank-a": "processor"})
    now = int(time.time())
    report = build_report("router", 1, now - 100, now, RUN)
    folder = tmp_path / "router"
    key = private_key_for("router", KeyUse.SIGN, read_private_key(folder / "router.key"))
    token = sign(report, key)
    root = (tmp_path / "pki" / "root-ca.crt").read_bytes()
    assert open_report(token, (folder / "router.crt").read_text(), root, now) == report
    bank_cert = (tmp_path / "bank-a" / "bank-a.crt").read_text()
    with pytest.raises(SemopsError):  # a processor's certificate cannot vouch for a report
        open_report(token, bank_cert, root, now)
    header, payload, signature = token.split(".")
    with pytest.raises(SemopsError):
        open_report(
            f"{header}.{payload}.{signature[::-1]}", (folder / "router.crt").read_text(), root, now
        )


def test_csv_for_people() -> None:
    report = build_report("router", 2, START, START + 100, RUN)
    summary = summary_csv(report).splitlines()
    assert summary[0].split(",")[3:6] == ["participant_id", "currency", "net_minor"]
    assert summary[1] == f"2,{START},{START + 100},bank-a,EUR,-650,1550,900,2,2"
    lines = transfers_csv(report).splitlines()
    assert len(lines) == 1 + 8 and lines[1].startswith(
        "2,bank-a,tr_000000000001,payment,sent,EUR,1250,"
    )
