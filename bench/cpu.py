"""The CPU a phase costs each process of the machine, per mail.

Mails per second alone cannot tell a slow engine from a busy machine: on two cores
the worker shares them with its composing child, the broker and the SMTP sink, and
the bare sender it is compared with shares them with the sink only. So the mails
phase also reads each process's CPU time (user + system, from ``/proc``; the
worker's children found by asking for them) from the change's publication to its
last mail, and divides by the mails. The sum is the machine's CPU a mail; the cores
over that sum, the most mails per second this machine could give if every core were
busy all along. The mails/s is timed from the first mail, so a second meter from the
first mail on gives the ceiling that bounds it (``cpu.c<n>.sending_ceiling``); the
naive script and the sink are metered too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
SELF = 0
"""The pid that stands for this process: its own CPU, from ``time.process_time``."""


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of ``pid`` so far, in seconds; None once it is gone."""
    if pid == SELF:
        return time.process_time()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the name, in brackets, may hold spaces
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a worker's composing children)."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        found = {int(c) for t in tasks for c in (t / "children").read_text().split()}
    except OSError:
        return []
    return sorted(found)


@dataclass
class Meter:
    """CPU seconds of named processes from ``start`` on; ``per`` divides it among items.

    ``find`` names the processes; it is asked at the start and again at the end, so a
    process started meanwhile (a worker's composing child is started at its first
    notice) counts all its time. Each process counts on its own: one that exits
    meanwhile takes its time with it (0, never less), the others still count.
    """

    find: Callable[[], Mapping[str, list[int]]]
    began: dict[int, float] = field(default_factory=dict)

    def start(self) -> Meter:
        self.began = {pid: cpu_seconds(pid) or 0.0 for pids in self.find().values() for pid in pids}
        return self

    def per(self, items: int) -> dict[str, float]:
        """Microseconds of CPU per item for each name, and ``total`` for all of them."""
        out = {
            name: sum(self._spent(pid) for pid in pids) * 1e6 / max(items, 1)
            for name, pids in self.find().items()
        }
        out["total"] = sum(out.values())
        return out

    def _spent(self, pid: int) -> float:
        now = cpu_seconds(pid)
        return 0.0 if now is None else max(0.0, now - self.began.get(pid, 0.0))


def ceiling(cpu_per_mail_us: float, cores: int | None = None) -> float:
    """Mails per second if every core did nothing but this, at this CPU a mail."""
    return (cores or os.cpu_count() or 1) * 1e6 / max(cpu_per_mail_us, 1e-9)
