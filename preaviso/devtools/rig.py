"""Named worker processes against one broker and one mail catcher, for fault experiments."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from preaviso.agents.deliver import resend_bound
from preaviso.devtools.observe import Arrivals, MailBox, partition_lag
from preaviso.devtools.worker import WorkerProcess
from preaviso.publish import publish
from preaviso.schemas.events import UpstreamEvent
from preaviso.settings import Settings
from preaviso.streams import topics as t
from preaviso.streams.lag import stable_members

__all__ = ["Rig"]


@dataclass
class _Slot:
    name: str
    data_dir: Path
    incarnations: int = 0
    process: WorkerProcess | None = None


class Rig:
    """Named worker processes (same settings, same group, each its own data dir)."""

    def __init__(self, settings: Settings, root: Path, mail: Path | Arrivals) -> None:
        """``mail``: the catcher's directory, or what another server took."""
        self.settings = settings
        self.root = root
        self.mail = MailBox(mail) if isinstance(mail, Path) else mail
        self.owed: dict[str, str] = {}  # every Message-ID any cycle expected -> customer_id
        self.faults = 0  # kills, graceful stops and freezes so far
        self.dead_letters_seen = 0
        self._slots: dict[str, _Slot] = {}

    def log_path(self, name: str) -> Path:
        return self.root / f"worker-{name}.log"

    def start(self, name: str, *, empty_data: bool = False) -> WorkerProcess:
        """Start worker ``name``: with its previous data dir, or a new empty one."""
        slot = self._slots.get(name)
        if slot is None:
            slot = self._slots[name] = _Slot(name, self.root / "data" / f"{name}-0")
        if slot.process is not None and slot.process.alive():
            raise RuntimeError(f"worker {name} is already running")
        slot.incarnations += 1
        if empty_data and slot.incarnations > 1:
            old = slot.data_dir
            slot.data_dir = self.root / "data" / f"{name}-{slot.incarnations}"
            shutil.rmtree(old, ignore_errors=True)
        log = self.log_path(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            state = "empty" if not slot.data_dir.exists() else "kept"
            f.write(f"\n===== start #{slot.incarnations} of {name}, {state} {slot.data_dir}\n")
        settings = self.settings.model_copy(update={"data_dir": slot.data_dir})
        slot.process = WorkerProcess(settings, log).start()
        return slot.process

    def kill(self, name: str) -> None:
        self.faults += 1
        self._process(name).kill()
        self._note(name, "killed (SIGKILL)")

    def stop(self, name: str) -> None:
        self.faults += 1
        code = self._process(name).stop()
        self._note(name, f"stopped (SIGTERM), exit code {code}")

    def freeze(self, name: str, seconds: float) -> None:
        self.faults += 1
        self._process(name).freeze(seconds)
        self._note(name, f"frozen (SIGSTOP) for {seconds:g}s, then resumed", gone=False)

    def alive(self) -> list[str]:
        return [n for n, s in self._slots.items() if s.process is not None and s.process.alive()]

    def crashed(self) -> list[str]:
        """Workers that should be running but exited on their own."""
        return [
            n for n, s in self._slots.items() if s.process is not None and not s.process.alive()
        ]

    def close(self) -> None:
        for slot in self._slots.values():
            if slot.process is not None:
                slot.process.kill()
                slot.process = None

    def log_tails(self, lines: int = 25) -> str:
        parts = []
        for name in self._slots:
            try:
                text = self.log_path(name).read_text(errors="replace").splitlines()
            except OSError:
                text = ["(no log)"]
            alarms = [x for x in text if "[WARNING]" in x or "[ERROR]" in x or "=====" in x]
            parts.append(f"--- worker {name} ({self.log_path(name)}): starts, stops, warnings ---")
            parts.extend(alarms[-15:])
            parts.append(f"--- worker {name}: last {lines} lines ---")
            parts.extend(text[-lines:])
        return "\n".join(parts)

    def publish(self, events: Sequence[UpstreamEvent]) -> None:
        asyncio.run(publish(self.settings, events))

    def wait_idle(self, specs: Iterable[t.TopicSpec], within: float) -> dict[str, int]:
        """Wait until the group's lag on ``specs`` is zero; returns what is left on timeout."""
        names = {s.name for s in specs}
        deadline = time.monotonic() + within
        while True:
            lag = {
                k: v
                for k, v in partition_lag(self.settings).items()
                if k.split("[")[0] in names or k.startswith("(")
            }
            if not lag or time.monotonic() > deadline:
                return lag
            time.sleep(0.5)

    def wait_members(self, count: int, within: float = 60.0) -> None:
        """Wait until the group is stable with ``count`` members: each holds partitions."""
        deadline = time.monotonic() + within
        while asyncio.run(stable_members(self.settings)) != count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the group did not reach {count} members in {within:g}s\n{self.log_tails()}"
                )
            time.sleep(0.5)

    def load_directory(self, events: Sequence[UpstreamEvent], within: float = 120.0) -> None:
        """Publish the directory (if given) and wait until the group has read it all."""
        if events:
            self.publish(events)
        left = self.wait_idle(t.DIRECTORY_TOPICS, within)
        if left:
            raise AssertionError(
                f"the directory was not loaded within {within:g}s: {left}\n{self.log_tails()}"
            )

    def duplicates_in_all(self) -> tuple[int, int]:
        """Extra mails over every Message-ID owed so far, and the bound all faults allow."""
        self.mail.scan()
        extra = sum(n - 1 for m, n in self.mail.counts().items() if m in self.owed and n > 1)
        return extra, self.faults * resend_bound(self.settings)

    def _process(self, name: str) -> WorkerProcess:
        slot = self._slots[name]
        if slot.process is None:
            raise RuntimeError(f"worker {name} is not running")
        return slot.process

    def _note(self, name: str, what: str, *, gone: bool = True) -> None:
        if gone:
            self._slots[name].process = None
        with self.log_path(name).open("a") as f:
            f.write(f"===== {name} {what}\n")
