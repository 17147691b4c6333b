"""The arithmetic of `semops bench`'s cost table: /proc parsing, metrics parsing, the
difference of two readings per payment, the total row and the printed table."""

from __future__ import annotations

import os

import pytest

from semops.devnet.costs import (
    COLUMNS,
    DatabaseCounts,
    ProcessCost,
    Reading,
    cost_table,
    costs_json,
    counter_value,
    cpu_ticks,
    database_counts,
    per_payment,
    process_cpu_s,
    total,
)


def _stat(comm: str, utime: int, stime: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice ...
    return f"4242 ({comm}) S 1 4242 4242 0 -1 4194304 100 0 0 0 {utime} {stime} 7 9 20 0 1 0\n"


def test_cpu_ticks_add_user_and_system_time_and_not_the_children() -> None:
    assert cpu_ticks(_stat("python", 150, 25)) == 175


@pytest.mark.parametrize("comm", ["semops bench", "a) b", ") (", "((", ""])
def test_cpu_ticks_count_fields_from_the_last_parenthesis(comm: str) -> None:
    assert cpu_ticks(_stat(comm, 3, 4)) == 7


@pytest.mark.parametrize("text", ["", "4242 python S 1 2", "4242 (python) S 1 2 3"])
def test_cpu_ticks_refuse_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        cpu_ticks(text)


def test_this_process_has_used_some_cpu_and_a_missing_one_none() -> None:
    used = process_cpu_s(os.getpid())
    assert used is not None and used > 0
    assert process_cpu_s(2**22 + 12345) is None  # above the kernel's pid_max


EXPOSITION = """\
# HELP semops_db_statements_total SQL statements executed
# TYPE semops_db_statements_total counter
semops_db_statements_total 1234.0
# HELP semops_db_write_transactions_total Write transactions begun
# TYPE semops_db_write_transactions_total counter
semops_db_write_transactions_total 56.0
# HELP semops_db_commits_total Commits that reached the database
# TYPE semops_db_commits_total counter
semops_db_commits_total 55.0
# HELP semops_merchant_notices_total Payment notices received
# TYPE semops_merchant_notices_total counter
semops_merchant_notices_total{outcome="paid"} 20.0
semops_merchant_notices_total{outcome="unmatched"} 1.0
"""


def test_the_database_counters_are_read_from_a_services_metrics() -> None:
    assert database_counts(EXPOSITION) == DatabaseCounts(statements=1234, writes=56, commits=55)
    assert database_counts("# nothing here\n") is None


def test_a_counter_is_found_by_name_and_exact_labels() -> None:
    assert counter_value(EXPOSITION, "semops_merchant_notices", {"outcome": "paid"}) == 20.0
    assert counter_value(EXPOSITION, "semops_merchant_notices", {"outcome": "lost"}) is None
    assert counter_value(EXPOSITION, "semops_merchant_notices") is None  # labels differ
    assert counter_value(EXPOSITION, "semops_db_commits") == 55.0


def test_per_payment_divides_the_difference_of_two_readings() -> None:
    before = Reading(10.0, DatabaseCounts(100, 10, 9))
    after = Reading(12.5, DatabaseCounts(600, 60, 59))
    cost = per_payment("bank-a", before, after, 50)
    assert cost == ProcessCost("bank-a", 50.0, 10.0, 1.0, 1.0)
    assert cost.fsyncs == cost.commits


def test_per_payment_keeps_what_a_process_does_not_have_missing() -> None:
    client = per_payment("client", Reading(1.0), Reading(1.2), 4)
    assert client.process == "client" and client.cpu_ms == pytest.approx(50.0)
    assert client.statements is None and client.writes is None and client.commits is None
    no_proc = per_payment("router", Reading(None), Reading(None, DatabaseCounts(4, 4, 4)), 4)
    assert no_proc.cpu_ms is None and no_proc.statements is None


def test_no_completed_payment_gives_no_figures() -> None:
    cost = per_payment("mno-b", Reading(1.0), Reading(2.0), 0)
    assert cost == ProcessCost("mno-b", None, None, None, None)


COSTS = [
    ProcessCost("client", 14.25, None, None, None),
    ProcessCost("router", 20.0, 16.5, 3.0, 3.0),
    ProcessCost("bank-a", 30.0, 32.0, 3.25, 3.25),
]


def test_the_total_adds_up_the_processes_that_have_a_figure() -> None:
    assert total(COSTS) == ProcessCost("total", 64.25, 48.5, 6.25, 6.25)
    assert total([ProcessCost("client", 1.0, None, None, None)]).statements is None


def test_the_table_has_a_header_a_row_per_process_and_the_total_last() -> None:
    lines = cost_table(COSTS)
    assert lines[0].split() == list(COLUMNS)
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        ["client", "14.2", "-", "-", "-", "-"],
        ["router", "20.0", "16.50", "3.00", "3.00", "3.00"],
        ["bank-a", "30.0", "32.00", "3.25", "3.25", "3.25"],
        ["total", "64.2", "48.50", "6.25", "6.25", "6.25"],
    ]
    # Columns are aligned: every figure ends where its header ends.
    ends = [lines[0].index(column) + len(column) for column in COLUMNS[1:]]
    for line in lines[1:]:
        for end in ends:
            assert line[end - 1] != " ", (line, end)


def test_the_json_holds_the_same_figures() -> None:
    document = costs_json(COSTS)
    assert list(document["processes"]) == ["client", "router", "bank-a"]
    assert document["processes"]["client"]["statements"] is None
    assert document["processes"]["bank-a"] == {
        "cpu_ms": 30.0,
        "statements": 32.0,
        "writes": 3.25,
        "commits": 3.25,
        "fsyncs": 3.25,
    }
    assert document["total"]["cpu_ms"] == 64.25
    assert "commits" in document["fsyncs"]
