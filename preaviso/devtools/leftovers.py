"""Run dirs left behind by a dev tool whose process was killed, swept by the next start.

A broker's run dir (its log segments: hundreds of MB after a benchmark) is deleted when
the broker stops. A starter killed outright (SIGKILL, a CI timeout, an OOM kill)
deletes nothing; the lifeline (``lifeline.py``) stops its JVM, and the dir stayed. So a
run dir names the process it belongs to (``claim``), and the next start sweeps the dirs
beside its own whose process is gone (``sweep``). A dir that names no process (kept on
purpose, or made by another tool) is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

__all__ = ["OWNER_FILE", "claim", "owner_alive", "sweep"]

OWNER_FILE = ".preaviso-owner"
"""In a run dir: ``<host> <pid> <start time>`` of the process it belongs to. The host,
because a pid means nothing in another container that shares the temp dir."""


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, Linux), so a reused pid is not taken
    for the process that died; "" where that is unknown but ``pid`` runs; None: gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # Linux, and no such process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    return "Z" if fields[0] == "Z" else fields[19]  # a zombie has exited


def claim(directory: Path) -> None:
    """Mark ``directory`` as this process's, until it deletes it itself."""
    pid = os.getpid()
    (directory / OWNER_FILE).write_text(f"{_host()} {pid} {_start_time(pid) or '-'}\n")


def owner_alive(directory: Path) -> bool:
    """True unless ``directory`` names a process of this host, and that process is gone."""
    try:
        host, pid_text, started = (directory / OWNER_FILE).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return True  # no owner named: not ours to judge
    if host != _host():
        return True
    now = _start_time(pid)
    return now not in (None, "Z") and (started == "-" or not now or now == started)


def _host() -> str:
    return socket.gethostname().replace(" ", "_") or "-"


def sweep(parent: Path, prefix: str) -> list[Path]:
    """Delete the dirs ``parent/prefix*`` whose owner is gone; those deleted."""
    swept = []
    for candidate in parent.glob(f"{prefix}*"):
        if candidate.is_dir() and not candidate.is_symlink() and not owner_alive(candidate):
            shutil.rmtree(candidate, ignore_errors=True)
            swept.append(candidate)
    return swept
