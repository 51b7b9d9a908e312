"""One benchmark run's stack: a topic prefix on the broker, the SMTP sink, a worker process."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench import cpu, wire
from bench.baselines import SCRATCH_TOPICS
from bench.profile import PySpy
from preaviso.devtools.sink import SinkControl, SinkProcess
from preaviso.devtools.worker import WorkerProcess
from preaviso.settings import Settings
from preaviso.streams import lag
from preaviso.streams import topics as t
from preaviso.streams.topics import ensure_topics

LAG_POLL = 0.05
"""Seconds between two looks at the worker group's lag."""


def proc_status_mb(pid: int, field: str) -> float:
    """A ``/proc/<pid>/status`` memory field (VmRSS, VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no {field} for process {pid}")


def local_settings(
    bootstrap: str, smtp: Any, prefix: str, partitions: int, data_dir: Path, **more: Any
) -> Settings:
    """Settings for a worker on a local broker and an SMTP process (catcher or sink)."""
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        data_dir=data_dir,
        **more,
    )


class Stack:
    """A fresh topic prefix and data dir per run, so runs never see each other's records."""

    def __init__(
        self,
        bootstrap: str,
        root: Path,
        run: int,
        partitions: int,
        workers: int = 1,
        broker_pid: int | None = None,
    ) -> None:
        self.root = root
        self.broker_pid = broker_pid
        """The local broker's process, when the bench started it (its CPU is measured)."""
        self.workers = workers
        """Worker processes in the group; they share the connections asked for."""
        self.sink = SinkProcess(root / "sink")
        self.sink.start()
        self.control: SinkControl = self.sink.control()
        prefix = f"bench{run}-{uuid.uuid4().hex[:6]}."
        self.settings = local_settings(bootstrap, self.sink, prefix, partitions, root / "data")
        asyncio.run(self._topics())
        self.worker: WorkerProcess | None = None
        self.others: list[WorkerProcess] = []
        self._asked = 0
        self.starts = 0
        self.peak_mb = 0.0  # the highest VmHWM of the workers stopped so far
        self.profiler: PySpy | None = None

    async def _topics(self) -> None:
        """Every topic up front, as ``preaviso publish`` would, and the baselines' scratch topics
        (a topic created just before use costs a leader election inside a timed baseline)."""
        await ensure_topics(self.settings)
        for name in SCRATCH_TOPICS:
            await wire.scratch_topic(self.settings, name)

    def start_worker(self, connections: int) -> WorkerProcess:
        """(Re)start the workers with ``connections`` SMTP connections in all, same data dirs.

        With several workers each gets its share (at least one). This returns once all
        of them are members of the group, so no join lands inside a measurement (a
        restart's join used to count in the first mail's latency).
        """
        self.stop_worker()
        self.starts += 1
        self._asked = connections
        each = max(1, connections // self.workers)
        self.settings = self.settings.model_copy(update={"smtp_connections": each})
        log = self.root / f"worker-{self.starts}-c{connections}.log"
        self.worker = WorkerProcess(self.settings, log).start()
        for n in range(1, self.workers):
            own = self.settings.model_copy(update={"data_dir": self.root / f"data-{n}"})
            self.others.append(WorkerProcess(own, log.with_suffix(f".{n}.log")).start())
        asyncio.run(self._wait_members(self.workers))
        self._settle()
        return self.worker

    def _settle(self, within: float = 20.0, still: float = 0.3) -> None:
        """Until the workers and their children use no CPU for ``still`` seconds: a
        composing child starts (imports, ~1 s of CPU) after the worker joins its group,
        and no phase must count that as the cost of its records."""
        deadline = time.monotonic() + within
        before = -1.0
        while time.monotonic() < deadline:
            found = self.processes()
            now = sum(cpu.cpu_seconds(p) or 0.0 for p in found["worker"] + found["composing"])
            if 0 <= now - before < 2 / cpu.TICK:  # at most a tick or two: idle
                return
            before = now
            time.sleep(still)

    async def _wait_members(self, count: int, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if await lag.stable_members(self.settings) == count:
                return
            self.pid()
            await asyncio.sleep(LAG_POLL * 4)
        raise TimeoutError(f"the group did not reach {count} members in {within:g}s")

    def stop_worker(self) -> None:
        for worker in [self.worker, *self.others]:
            if worker is not None:
                if worker.alive() and worker.proc is not None:
                    self.peak_mb = max(self.peak_mb, proc_status_mb(worker.proc.pid, "VmHWM"))
                worker.stop()
        self.worker, self.others = None, []

    @property
    def connections(self) -> int:
        """The connections asked for, in all (each worker has its share)."""
        return self._asked

    def pid(self) -> int:
        if self.worker is None or self.worker.proc is None or not self.worker.alive():
            tail = self.worker.log_tail() if self.worker else ""
            raise RuntimeError(f"the worker is not running\n{tail}")
        return self.worker.proc.pid

    def processes(self) -> dict[str, list[int]]:
        """The processes a mail costs CPU in: workers, their composing children, broker, sink."""
        workers = [w.proc.pid for w in [self.worker, *self.others] if w and w.proc]
        found = {
            "worker": workers,
            "composing": [c for w in workers for c in cpu.children(w)],
            "sink": [self.sink.pid] if self.sink.pid else [],
        }
        if self.broker_pid:
            found["broker"] = [self.broker_pid]
        return found

    def rss_mb(self) -> float:
        return proc_status_mb(self.pid(), "VmRSS")

    def peak_rss_mb(self) -> float:
        return proc_status_mb(self.pid(), "VmHWM")

    def wait_lag_zero(self, specs: Iterable[t.TopicSpec], within: float) -> float:
        """Wait until the group has committed everything on ``specs``; returns when (monotonic).

        One admin client and one consumer stay open and ask every ``LAG_POLL`` seconds
        (a few ms each), so the end is known within about 60 ms, at little CPU cost.
        """
        names = [self.settings.topic(s.name) for s in specs]
        return asyncio.run(self._watch_lag(names, within))

    async def _watch_lag(self, names: list[str], within: float) -> float:
        began = time.monotonic()
        while True:  # a fresh broker may still be electing the coordinator
            try:
                watcher = await lag.LagWatcher.open(self.settings, names)
                break
            except Exception:
                if time.monotonic() - began > within:
                    raise
                await asyncio.sleep(LAG_POLL)
        try:
            while True:
                try:
                    left = await watcher.lag()
                except Exception:  # a coordinator moving or loading: not known yet
                    left = -1
                now = time.monotonic()
                if left == 0:
                    return now
                if now - began > within:
                    raise TimeoutError(f"worker lag still {left} after {within:g}s")
                self.pid()  # a crashed worker fails the wait at once, with its log
                await asyncio.sleep(LAG_POLL)
        finally:
            await watcher.close()

    def profile(self, out: Path) -> None:
        """Start sampling the worker with py-spy until ``end_profile``."""
        self.profiler = PySpy(self.pid(), out).start()

    def end_profile(self) -> Path | None:
        profiler, self.profiler = self.profiler, None
        return profiler.stop() if profiler else None

    def close(self) -> None:
        self.end_profile()
        self.stop_worker()
        self.control.close()
        self.sink.stop()
