"""A worker whose stop hangs still exits: the deadline behind the 30-second promise."""

from __future__ import annotations

import subprocess
import sys
import time

from preaviso.worker import EXIT_OVERDUE, STOP_DEADLINE


def test_a_process_that_does_not_stop_is_ended_at_the_deadline() -> None:
    hangs = "from preaviso.worker import exit_after; import time; exit_after(0.5); time.sleep(60)"
    started = time.monotonic()

    result = subprocess.run([sys.executable, "-c", hangs], capture_output=True, timeout=30)

    assert result.returncode == EXIT_OVERDUE
    assert time.monotonic() - started < 10


def test_the_deadline_leaves_room_inside_the_30_seconds_promised() -> None:
    assert 10 <= STOP_DEADLINE <= 28
