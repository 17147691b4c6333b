"""The background loop every service runs its periodic work in (semops.service.loops)."""

from __future__ import annotations

import asyncio

import pytest

from semops.service.loops import every

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_failing_pass_is_logged_and_the_loop_goes_on_until_stopped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls = 0
    stop = asyncio.Event()

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a secret that must not be logged")
        if calls == 3:
            stop.set()

    await asyncio.wait_for(every(stop, 0.01, flaky), 5)
    assert calls == 3
    logged = capsys.readouterr().out
    assert "background_failed" in logged and "RuntimeError" in logged
    assert "secret" not in logged


async def test_a_stop_ends_the_wait_between_passes_at_once() -> None:
    stop = asyncio.Event()
    calls = 0

    async def work() -> None:
        nonlocal calls
        calls += 1
        stop.set()

    await asyncio.wait_for(every(stop, 3600, work), 1)
    assert calls == 1
