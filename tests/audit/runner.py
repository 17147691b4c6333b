"""Run `semops GROUP …` as a subprocess, exactly as an operator or auditor types it."""

from __future__ import annotations

import subprocess
import sys
from typing import Final

CLI_TIMEOUT_S: Final = 120


def semops(group: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "semops", group, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
