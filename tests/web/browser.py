"""A real Chromium for the page tests: Debian's /usr/bin/chromium driven by Playwright.

No browser is downloaded: Playwright launches the system Chromium with the flags that keep
it quiet and self-contained (no sandbox inside a container, no background network, no
component updates, no sync, no first-run UI, no GPU, a fresh profile per run). Screenshots
go to test-artifacts/screenshots/ (CI keeps that folder); `SEMOPS_REQUIRE_BROWSER=1`
(set by .ci/run) turns a missing Chromium into a failure instead of a skip.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Final

import pytest

CHROMIUM: Final = os.environ.get("SEMOPS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS: Final = (
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
)
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
# A phone-sized viewport (CSS pixels) for the pages people use on their phone.
PHONE: Final = {"width": 390, "height": 844}
DESKTOP: Final = {"width": 1280, "height": 900}


def require_browser() -> bool:
    return os.environ.get("SEMOPS_REQUIRE_BROWSER") == "1"


def chromium_or_skip() -> str:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if require_browser():
            pytest.fail(message + " and SEMOPS_REQUIRE_BROWSER=1")
        pytest.skip(message)
    return CHROMIUM


def screenshot_path(name: str) -> Path:
    """Where a screenshot named `name` is kept (made safe as a file name)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") + ".png")
