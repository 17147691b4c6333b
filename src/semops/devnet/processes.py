"""Start and stop SEMOPS services as separate OS processes on loopback.

Used by `semops up`, `semops demo`, `semops bench` and the end-to-end tests, so what is
tested is exactly what a person runs: `python -m semops <service> serve …` in its own
process, with its own database and keys, talking HTTP(S) to the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from semops.service.files import open_private_log

# Time a service has to start listening (migrations and key loading included).
START_TIMEOUT_S: Final = 30.0
# Time a service has to finish in-flight requests after SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 10.0
_POLL_INTERVAL_S: Final = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_port(taken: set[int]) -> int:
    """A free port not in `taken` (added to it): the OS may hand a port it just released
    out again, and two listeners of one network on it would fail to start."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


@dataclass
class ServiceProcess:
    """One running service: its command line, its output file, its health URL."""

    name: str
    args: list[str]
    output: Path
    health_url: str
    ssl_context: ssl.SSLContext | None = None
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        handle = open_private_log(self.output, text=False)  # 0600 in a 0700 folder
        environment = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "semops", *self.args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        handle.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.tail()}")
            if _healthy(self.health_url, self.ssl_context):
                return
            time.sleep(_POLL_INTERVAL_S)
        raise RuntimeError(f"{self.name} did not become ready in {timeout_s:.0f} s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, hard: bool = False) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if hard:
            self.process.kill()
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_S)

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        return ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer (raised as HTTPError), never an instruction to call elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def open_url(
    request: str | urllib.request.Request, timeout_s: float, context: ssl.SSLContext | None = None
) -> Any:
    """`urllib.request.urlopen` without following redirects (the devnet's own calls)."""
    handlers: list[Any] = [_NoRedirect()]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(request, timeout=timeout_s)


def _healthy(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with open_url(url, 2, context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
