"""A demo or a benchmark stopped with SIGTERM stops the processes it started."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys, time
from preaviso.devtools import stop_on_sigterm

if sys.argv[2] == "on":
    stop_on_sigterm()
try:
    print("started", flush=True)
    time.sleep(60)
finally:  # where a context manager stops its broker, catcher or worker
    open(sys.argv[1], "w").write("children stopped")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGTERM to send on Windows")
@pytest.mark.parametrize(("handled", "cleaned_up"), [("on", True), ("off", False)])
def test_sigterm_runs_the_cleanup_only_once_asked_to(
    tmp_path: Path, handled: str, cleaned_up: bool
) -> None:
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker), handled],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    assert marker.exists() is cleaned_up  # "off": Python's default, the children live on
