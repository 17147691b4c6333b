"""`semops bench --profile DIR`: py-spy samples each service process during the pay phase.

One `py-spy record --pid PID --nonblocking` per service, started before the first measured
payment and stopped (SIGINT, which makes py-spy write its file) after the last one: one
file per service in DIR, with py-spy's own output beside it (`NAME.py-spy.log`).
`--nonblocking` reads the target's memory without pausing it, so the figures stay close to
an unprofiled run; py-spy itself still takes CPU time on the same machine.

py-spy is an optional extra (`pip install -e '.[profile]'`). It needs permission to read
another process's memory (ptrace: root, CAP_SYS_PTRACE, or a permissive Yama scope); a
recorder that cannot attach is reported with py-spy's words and the bench goes on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

# The py-spy binary to use instead of the one beside this Python or on PATH.
PY_SPY_ENV: Final = "SEMOPS_PY_SPY"
INSTALL_HINT: Final = "install it with: .venv/bin/pip install -e '.[profile]'"
ProfileFormat = Literal["speedscope", "flamegraph", "raw", "chrometrace"]
SUFFIXES: Final[dict[str, str]] = {
    "speedscope": ".speedscope.json",
    "flamegraph": ".svg",
    "raw": ".txt",
    "chrometrace": ".chrometrace.json",
}
# Time py-spy has to attach (it reads the interpreter's version and thread state first).
ATTACH_TIMEOUT_S: Final = 10.0
# Time it has to write its file after SIGINT (a few seconds of samples: well under this).
WRITE_TIMEOUT_S: Final = 30.0
_POLL_INTERVAL_S: Final = 0.05
_SAMPLING: Final = "Sampling process"


class ProfilerMissing(Exception):
    """py-spy is not installed (or not where SEMOPS_PY_SPY says)."""


def find_py_spy() -> str:
    """The py-spy to run: $SEMOPS_PY_SPY, else the one beside this Python, else on PATH."""
    chosen = os.environ.get(PY_SPY_ENV)
    if chosen:
        if os.access(chosen, os.X_OK) and Path(chosen).is_file():
            return chosen
        raise ProfilerMissing(f"--profile: {PY_SPY_ENV}={chosen} is not an executable file")
    beside = Path(sys.executable).parent / "py-spy"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("py-spy")
    if found is None:
        raise ProfilerMissing(f"--profile needs py-spy, which is not installed; {INSTALL_HINT}")
    return found


@dataclass
class Recording:
    """One py-spy recorder attached to one service process."""

    name: str
    pid: int
    output: Path
    log: Path
    process: subprocess.Popen[bytes]
    error: str | None = None

    def sampling(self) -> bool:
        return _SAMPLING in self._log_text()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def _log_text(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")
        return ""

    def failure(self) -> str:
        """py-spy's own reason, the first lines of its error (not its Rust backtrace)."""
        lines = [line.strip() for line in self._log_text().splitlines() if line.strip()]
        reason = [line for line in lines if not line.startswith("py-spy>")]
        if "Stack backtrace:" in reason:
            reason = reason[: reason.index("Stack backtrace:")]
        return " ".join(reason[:4]) or f"py-spy exited with status {self.process.returncode}"


def start_recordings(
    py_spy: str, targets: dict[str, int], folder: Path, file_format: ProfileFormat
) -> list[Recording]:
    """A recorder per target (name -> pid), each waited for until it samples or fails."""
    folder.mkdir(parents=True, exist_ok=True)
    recordings = []
    for name, pid in targets.items():
        output = folder / (name + SUFFIXES[file_format])
        log = folder / f"{name}.py-spy.log"
        command = [py_spy, "record", "--pid", str(pid), "--nonblocking"]
        command += ["--format", file_format, "--output", str(output)]
        with log.open("wb") as handle:
            process = subprocess.Popen(  # noqa: S603 - py-spy, found by find_py_spy
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        recordings.append(Recording(name, pid, output, log, process))
    deadline = time.monotonic() + ATTACH_TIMEOUT_S
    while time.monotonic() < deadline and any(_starting(r) for r in recordings):
        time.sleep(_POLL_INTERVAL_S)
    for recording in recordings:
        if recording.exited():
            recording.error = recording.failure()
        elif not recording.sampling():
            recording.error = f"py-spy did not attach in {ATTACH_TIMEOUT_S:.0f} s"
            _stop(recording.process)
    return recordings


def stop_recordings(recordings: list[Recording]) -> None:
    """SIGINT each recorder still running, so that it writes its file; note any failure."""
    running = [r for r in recordings if r.error is None and not r.exited()]
    for recording in running:
        recording.process.send_signal(signal.SIGINT)
    for recording in recordings:
        if recording.error is not None:
            continue
        try:
            recording.process.wait(WRITE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _stop(recording.process)
            recording.error = f"py-spy did not write its file in {WRITE_TIMEOUT_S:.0f} s"
            continue
        if not recording.output.exists():
            recording.error = recording.failure()


def _starting(recording: Recording) -> bool:
    return not recording.exited() and not recording.sampling()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(WRITE_TIMEOUT_S)


__all__ = [
    "PY_SPY_ENV",
    "ProfileFormat",
    "ProfilerMissing",
    "Recording",
    "find_py_spy",
    "start_recordings",
    "stop_recordings",
]
