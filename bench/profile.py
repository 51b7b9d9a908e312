"""Sample the worker with py-spy during one phase, and say where its time went.

py-spy attaches to the running worker from outside (it needs ptrace), so the worker
runs unchanged: the figures and the profile come from the same process. The samples
are kept as collapsed stacks (``--format raw``, one ``frame;frame;... count`` a line),
which ``top`` folds into the functions that cost most, by own time and with callees.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


class ProfilerMissing(RuntimeError):
    """py-spy is not installed (``./dev bench`` installs it with the [bench] extra)."""


def py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise ProfilerMissing("py-spy not found: install the [bench] extra (./dev bench does)")
    return found


class PySpy:
    """``py-spy record`` on a pid until ``stop``; non-blocking, so the worker is not paused."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        self.pid, self.out, self.rate = pid, out, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PySpy:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                py_spy(), "record", "--pid", str(self.pid), "--rate", str(self.rate),
                "--format", "raw", "--nonblocking", "--output", str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.out.with_suffix(".log").open("wb"),
        )  # fmt: skip
        return self

    def stop(self) -> Path | None:
        """Stop sampling (SIGINT: py-spy writes its file); the file, if it wrote one."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.out if self.out.exists() else None


@dataclass(frozen=True)
class Cost:
    function: str  # "name (file)"
    share: float  # of all samples


def _frames(stack: str) -> list[str]:
    """``thread;f (file:line);...`` -> ``["f (file)", ...]``: lines dropped, so calls add up."""
    out = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        name = f"{match['func']} ({_short(match['file'])})" if match else frame
        out.append(name)
    return out


def _short(path: str) -> str:
    for marker in ("site-packages/", "/preaviso/", "/lib/python3"):
        if marker in path:
            return (
                path.split(marker, 1)[1]
                if marker != "/preaviso/"
                else "preaviso/" + (path.split(marker, 1)[1])
            )
    return path


def package(function: str) -> str:
    """Whose code a frame is: ``aiokafka``, ``preaviso``, ``asyncio``, ``(stdlib)`` ..."""
    where = function.rsplit(" (", 1)[-1].rstrip(")")
    head = where.split("/", 1)[0]
    if "/" not in where:
        return "(stdlib)" if where.endswith(".py") or where.startswith("<") else "(other)"
    return head.removesuffix(".py")


@dataclass(frozen=True)
class Profile:
    samples: int
    own: list[Cost]  # the costliest functions by their own time
    packages: list[Cost]  # own time summed per package
    ours: list[Cost]  # the project's functions, with their callees


_ENTRY = ("preaviso/cli.py", "preaviso/worker.py", "preaviso/__main__.py")


def top(collapsed: Path, count: int = 12) -> Profile:
    """Where a worker's samples went: functions, packages, and the project's own stages."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        n = int(number)
        samples += n
        frames = _frames(stack)
        own[frames[-1]] += n
        packages[package(frames[-1])] += n
        for name in set(frames[1:]):  # the first frame is the thread
            if "(preaviso/" in name and not any(e in name for e in _ENTRY):
                total[name] += n
    scale = 1 / samples if samples else 0.0
    return Profile(
        samples,
        [Cost(f, n * scale) for f, n in own.most_common(count)],
        [Cost(f, n * scale) for f, n in packages.most_common(count)],
        [Cost(f, n * scale) for f, n in total.most_common(count)],
    )
