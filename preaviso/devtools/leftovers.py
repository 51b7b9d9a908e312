"""Run dirs left behind by a dev tool whose process was killed, swept by the next start.

A broker's run dir (its log segments: hundreds of MB after a benchmark) is deleted when
the broker stops. A starter killed outright (SIGKILL, a CI timeout, an OOM kill)
deletes nothing; on Linux the lifeline (``lifeline.py``) stops its JVM, and the dir
stayed. So a run dir holds an owner file, locked (``flock``) for as long as the process
that claimed it, or the broker that inherited the lock, lives (``Claim``); the next
start sweeps the dirs beside its own whose lock it can take (``sweep``). A lock, not a
pid: a pid means nothing to a process in another pid namespace sharing the temp dir,
and is reused. A dir without an owner file (kept on purpose, or being made) is never
touched. Where ``fcntl`` is missing (Windows) nothing is claimed and nothing swept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["OWNER_FILE", "Claim", "sweep"]

OWNER_FILE = ".preaviso-owner"
"""In a run dir: locked while its owner lives; it says the owner's pid, for people."""


class Claim:
    """``directory`` is this process's (and its children's, given ``fd``) until released."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.fd: int | None = None
        if fcntl is None:
            return
        # Locked under another name first, then renamed: a sweeper never finds the owner
        # file unlocked while its owner lives.
        staging = directory / f"{OWNER_FILE}.{os.getpid()}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.replace(staging, directory / OWNER_FILE)
        self.fd = fd

    def release(self, *, keep: bool = False) -> None:
        """Let go of the dir; ``keep``: it stays for people to read, and is never swept."""
        if keep:
            (self.directory / OWNER_FILE).unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def sweep(parent: Path, prefix: str) -> list[Path]:
    """Delete the dirs ``parent/prefix*`` whose owner is gone; those deleted."""
    swept = []
    for candidate in parent.glob(f"{prefix}*"):
        if candidate.is_dir() and not candidate.is_symlink() and _abandoned(candidate):
            swept.append(candidate)
    return swept


def _abandoned(directory: Path) -> bool:
    """Delete ``directory`` if nobody holds its owner file's lock; True if it went."""
    if fcntl is None:
        return False
    try:
        fd = os.open(directory / OWNER_FILE, os.O_RDONLY)
    except OSError:
        return False  # no owner file: not ours to judge
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # its owner lives
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
