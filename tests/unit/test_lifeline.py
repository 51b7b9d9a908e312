"""A process the dev tools start dies with its parent, even one killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preaviso.devtools.lifeline import die_with_parent

pytestmark = pytest.mark.skipif(die_with_parent() is None, reason="PR_SET_PDEATHSIG is Linux only")

PARENT = """
import subprocess, sys, time
from preaviso.devtools.lifeline import die_with_parent
lifeline = die_with_parent() if sys.argv[1] == "on" else None
child = subprocess.Popen(["sleep", "60"], start_new_session=True, preexec_fn=lifeline)
print(child.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left


def child_of_killed_parent(lifeline: str) -> int:
    """The pid of the child a parent started, once that parent is SIGKILLed."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, lifeline], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return pid


def test_a_child_with_the_lifeline_dies_with_its_killed_parent() -> None:
    pid = child_of_killed_parent("on")
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_without_it_the_child_outlives_its_parent() -> None:
    pid = child_of_killed_parent("off")
    try:
        time.sleep(0.5)
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)
