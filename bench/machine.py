"""What the figures were measured on: machine, versions, tree, command."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from preaviso.devtools.kafka_fetch import KAFKA_VERSION

PACKAGES = ("faust-streaming", "aiokafka", "aiosmtplib", "pydantic", "rocksdict", "uvloop")


def _proc(path: str, key: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git(tree: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def describe(tree: Path, command: str) -> dict[str, Any]:
    """Everything docs/benchmarks.md states about where and how it was measured."""
    mem_kb = _proc("/proc/meminfo", "MemTotal").split()[0]
    dirty = _git(tree, "status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _proc("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kb) / 1024**2, 1) if mem_kb.isdigit() else None,
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
        "kafka": f"{KAFKA_VERSION} (the project's local broker, one KRaft node)",
        "packages": {name: _version(name) for name in PACKAGES},
        "tree": str(tree),
        "commit": _git(tree, "rev-parse", "--short", "HEAD") + (" (modified)" if dirty else ""),
        "branch": _git(tree, "rev-parse", "--abbrev-ref", "HEAD"),
        "command": command,
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"
