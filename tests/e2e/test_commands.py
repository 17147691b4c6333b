"""The commands a person runs first, as subprocesses: `semops demo`, `semops bench` (its
figures and options) and `semops chaos`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.databases import POSTGRES_URL, postgres_or_skip

pytestmark = pytest.mark.timeout(300)


def _semops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semops", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env=env,
    )


def test_demo_tells_the_three_payments_and_keeps_the_data(tmp_path: Path) -> None:
    result = _semops("demo", "--data-dir", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" ok") == 3 and "FAILED" not in result.stdout
    for title in ("bank -> MNO", "MNO -> bank", "on-us"):
        assert title in result.stdout
    assert "Traceback" not in result.stderr
    # Every actor's data is kept for inspection: databases and logs of each process.
    for actor in ("router", "bank-a", "mno-b"):
        assert list((tmp_path / "demo" / actor).glob("*.db")), actor
        assert list((tmp_path / "demo" / actor / "logs").glob("*.log")), actor


SUMMARY = re.compile(
    r"(?P<ok>[0-9]+)/(?P<all>[0-9]+) payments in [0-9.]+ s: [0-9.]+ payments/s, "
    r"p50 [0-9.]+ ms, p95 [0-9.]+ ms, p99 [0-9.]+ ms"
)
COLUMNS = [
    "process", "cpu_ms/payment", "statements/payment", "writes/payment", "commits/payment",
    "fsyncs/payment",
]  # fmt: skip
SERVICES = ["router", "bank-a", "mno-b"]


def _bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _semops("bench", "--payments", "20", "--concurrency", "4", *args, env=env)


def _cost_table(stdout: str) -> tuple[str, dict[str, list[str]]]:
    """The summary line and the table after it (process -> its figures), the table last."""
    lines = stdout.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == COLUMNS)
    assert lines[header - 1].startswith("per completed payment in the pay phase; fsyncs/payment")
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1 :]}
    assert list(rows)[-1] == "total"
    return lines[header - 2], rows


def _check_costs(rows: dict[str, list[str]], services: list[str]) -> None:
    assert list(rows) == ["client", *services, "total"]
    assert rows["client"][1:] == ["-", "-", "-", "-"]  # the client has no Database
    assert float(rows["client"][0]) > 0
    for service in services:
        cpu_ms, statements, writes, commits, fsyncs = map(float, rows[service])
        # A payment costs a service some CPU and a few transactions; the bounds are loose
        # (the machine is shared) but catch a unit or a divisor gone wrong.
        assert 0 < cpu_ms < 5_000, (service, cpu_ms)
        assert 1 <= statements < 500, (service, statements)
        assert 0.5 <= writes <= statements, (service, writes)
        assert 0.5 <= commits <= writes + 1 and fsyncs == commits, (service, commits)
    parts = [figures for name, figures in rows.items() if name != "total"]
    for column in range(5):
        added = sum(float(figures[column]) for figures in parts if figures[column] != "-")
        # Each printed figure is rounded: the sum of the rounded parts may differ a little.
        assert float(rows["total"][column]) == pytest.approx(added, abs=0.06), column


def test_bench_reports_throughput_latency_and_the_cost_of_a_payment(tmp_path: Path) -> None:
    result = _bench("--json", str(tmp_path / "bench.json"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary, rows = _cost_table(result.stdout)
    match = SUMMARY.fullmatch(summary)
    assert match is not None and match["ok"] == match["all"] == "20", summary
    assert "routed bank-a -> mno-b, SQLite, concurrency 4, 4 warm-up payments, 0 failed" in (
        result.stdout
    )
    _check_costs(rows, SERVICES)
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["succeeded"] == 20 and document["database"] == "SQLite"
    assert document["per_payment"]["processes"]["bank-a"]["statements"] == pytest.approx(
        float(rows["bank-a"][1]), abs=0.006
    )
    assert document["per_payment"]["total"]["cpu_ms"] > 0


def test_bench_with_the_merchant_backend_counts_the_shop_and_its_notices() -> None:
    result = _bench("--with-merchant")
    assert result.returncode == 0, result.stdout + result.stderr
    _, rows = _cost_table(result.stdout)
    _check_costs(rows, [*SERVICES, "merchant"])
    assert "with the merchant backend" in result.stdout
    assert "notices had not reached the shop" not in result.stdout
    # The shop stores each notice: at least one write transaction per payment.
    assert float(rows["merchant"][2]) >= 1


async def _bench_databases() -> set[str]:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        found = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'semops_bench_%'"
        )
    finally:
        await connection.close()
    return {row["datname"] for row in found}


def test_bench_on_postgresql_drops_its_databases_afterwards() -> None:
    postgres_or_skip()
    before = asyncio.run(_bench_databases())
    result = _bench("--postgres", POSTGRES_URL)
    assert result.returncode == 0, result.stdout + result.stderr
    _, rows = _cost_table(result.stdout)
    _check_costs(rows, SERVICES)
    assert ", PostgreSQL, " in result.stdout
    assert asyncio.run(_bench_databases()) <= before  # none of this run's is left


def test_bench_profiles_each_service_with_py_spy(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "py-spy").exists():
        pytest.skip("py-spy is an optional extra: pip install -e '.[profile]'")
    folder = tmp_path / "profiles"
    result = _bench("--profile", str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    for service in SERVICES:
        # Written, or refused (no ptrace permission) in py-spy's words: never a traceback.
        written = (folder / f"{service}.speedscope.json").exists()
        assert written or f"profile of {service} failed:" in result.stderr, service
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--postgres", "not a url"], {}, "--postgres: not a database URL"),
        (["--postgres", "mysql://u@127.0.0.1/db"], {}, "--postgres: not a PostgreSQL URL"),
        (
            ["--postgres", "postgresql://postgres@127.0.0.1:1/postgres"],
            {},
            "--postgres: cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/postgres",
        ),
        (["--profile", "p"], {"SEMOPS_PY_SPY": "/nonexistent/py-spy"}, "is not an executable"),
        (["--profile", "p", "--profile-format", "gif"], {}, "--profile-format: one of"),
    ],
)
def test_bench_refuses_bad_input_in_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = _bench(*args, env={**os.environ, **env})
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_chaos_reports_what_it_injected_and_checked_and_refuses_a_used_folder(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "chaos"
    result = _semops(
        "chaos", "--payments", "4", "--concurrency", "2", "--faults", "2", "--kills", "0",
        "--data-dir", str(folder),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 payments:" in result.stdout and "faults injected:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == (
        "no violations: every payment complete or absent on all sides"
    )
    again = _semops("chaos", "--payments", "1", "--data-dir", str(folder))
    assert again.returncode == 1 and "already holds a network" in again.stderr
