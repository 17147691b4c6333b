"""`semops bench --profile`: finding py-spy, and the life of one recorder (started, waited
for until it samples, stopped with SIGINT so that it writes its file, or reported failed),
driven here by small stand-ins for py-spy so that no ptrace permission is needed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from semops.devnet.profile import (
    PY_SPY_ENV,
    ProfilerMissing,
    find_py_spy,
    start_recordings,
    stop_recordings,
)

# Writes the file named after --output when interrupted, as py-spy does.
GOOD_SPY = """\
    import signal, sys, time
    output = sys.argv[sys.argv.index("--output") + 1]
    def stop(*_):
        open(output, "w").write("{}")
        print("py-spy> Wrote speedscope file", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGINT, stop)
    print("py-spy> Sampling process 100 times a second. Press Control-C to exit.", flush=True)
    while True:
        time.sleep(0.05)
"""
# Cannot attach: the words py-spy uses, then its Rust backtrace.
DENIED_SPY = """\
    import sys
    print("Error: Failed to attach: Operation not permitted (os error 1)")
    print()
    print("Stack backtrace:")
    print("   0: anyhow::error")
    sys.exit(1)
"""


def _stand_in(folder: Path, source: str) -> str:
    path = folder / "py-spy"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(source))
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def target() -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_the_environment_names_the_py_spy_to_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = _stand_in(tmp_path, GOOD_SPY)
    monkeypatch.setenv(PY_SPY_ENV, chosen)
    assert find_py_spy() == chosen
    monkeypatch.setenv(PY_SPY_ENV, str(tmp_path / "absent"))
    with pytest.raises(ProfilerMissing, match="not an executable file"):
        find_py_spy()


def test_without_py_spy_the_message_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PY_SPY_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProfilerMissing, match=r"pip install -e '\.\[profile\]'"):
        find_py_spy()


def test_a_recorder_samples_until_stopped_and_writes_one_file_per_service(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    py_spy = _stand_in(tmp_path, GOOD_SPY)
    folder = tmp_path / "profiles"
    recordings = start_recordings(py_spy, {"router": target.pid}, folder, "speedscope")
    assert [r.error for r in recordings] == [None]
    assert not recordings[0].exited()
    stop_recordings(recordings)
    assert recordings[0].error is None
    assert (folder / "router.speedscope.json").read_text() == "{}"
    assert "Sampling process" in (folder / "router.py-spy.log").read_text()


def test_a_recorder_that_cannot_attach_is_reported_with_py_spys_words(
    tmp_path: Path, target: subprocess.Popen[bytes]
) -> None:
    py_spy = _stand_in(tmp_path, DENIED_SPY)
    recordings = start_recordings(py_spy, {"bank-a": target.pid}, tmp_path, "flamegraph")
    assert recordings[0].error == "Error: Failed to attach: Operation not permitted (os error 1)"
    stop_recordings(recordings)  # nothing left to stop; the failure stays
    assert recordings[0].error is not None
    assert not (tmp_path / "bank-a.svg").exists()
    assert os.path.exists(recordings[0].log)
