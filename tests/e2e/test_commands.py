"""The commands a person runs first, as subprocesses: `semops demo` and `semops bench`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)


def _semops(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semops", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
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


def test_bench_reports_throughput_and_latency_on_its_last_line() -> None:
    result = _semops("bench", "--payments", "20", "--concurrency", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"20/20 payments in [0-9.]+ s: [0-9.]+ payments/s, "
        r"p50 [0-9.]+ ms, p95 [0-9.]+ ms, p99 [0-9.]+ ms",
        last,
    ), last


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
