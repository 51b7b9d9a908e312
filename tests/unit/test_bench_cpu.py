"""bench/cpu.py: the CPU a process spent, read from /proc, divided among the mails."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench import cpu

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc (Linux only)")

BUSY = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


def test_a_busy_child_is_found_and_its_cpu_time_read() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY + "\ntime.sleep(5)"])
    try:
        assert child.pid in cpu.children(os.getpid())
        deadline = time.monotonic() + 10
        while (spent := cpu.cpu_seconds(child.pid) or 0.0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.3 <= spent < 1.0
    finally:
        child.kill()
        child.wait()
    assert cpu.cpu_seconds(child.pid) is None  # gone: nothing to read


def test_the_meter_divides_what_was_spent_since_its_start_among_the_items() -> None:
    meter = cpu.Meter(lambda: {"here": [cpu.SELF]}).start()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    spent = meter.per(1000)

    assert 200 <= spent["here"] < 400  # 0.2 s over 1,000 items: 200 µs each
    assert spent["total"] == spent["here"]


def test_a_process_gone_before_the_end_counts_nothing_and_the_others_still_count() -> None:
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    time.sleep(0.2)
    meter = cpu.Meter(lambda: {"gone": [child.pid], "both": [child.pid, cpu.SELF]}).start()
    child.wait()
    end = time.process_time() + 0.1
    while time.process_time() < end:
        pass
    spent = meter.per(100)

    assert spent["gone"] == 0.0
    assert 1000 <= spent["both"] < 2000  # this process's 0.1 s over 100 items


def test_the_ceiling_is_the_cores_over_the_cpu_a_mail() -> None:
    assert cpu.ceiling(1000.0, cores=2) == 2000.0
    assert cpu.ceiling(250.0, cores=4) == 16000.0


def test_a_process_started_after_the_meter_counts_all_its_time() -> None:
    found: dict[str, list[int]] = {"late": []}
    meter = cpu.Meter(lambda: found).start()
    child = subprocess.Popen([sys.executable, "-c", BUSY + "\ntime.sleep(5)"])
    try:
        found["late"] = [child.pid]
        deadline = time.monotonic() + 10
        while (cpu.cpu_seconds(child.pid) or 0.0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        spent = meter.per(1)
    finally:
        child.kill()
        child.wait()

    assert 300_000 <= spent["late"] < 1_000_000  # its 0.3 s and more, in µs
