"""Where notify composes its notices: in the worker's own thread, or in child processes.

Rendering and assembling a notice is ~100 µs of pure CPU, a fifth of all the worker
spends on one mail, on the thread that also runs the SMTP connections and Kafka's
clients. In a child process it runs on another core (``PREAVISO_COMPOSE_PROCESSES``):
notify hands it a batch of jobs as bytes and awaits their notices, and meanwhile the
worker's event loop goes on sending mail. The two ``Composer`` implementations give
the same results for the same jobs; only where the CPU is spent differs.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from typing import Protocol

from preaviso import compose_child
from preaviso.agents.bulk import SLICE
from preaviso.compose import Composed, Job, compose_encoded
from preaviso.render import Renderer
from preaviso.settings import Settings

log = logging.getLogger("preaviso.composer")

TIMEOUT = 60.0
"""Seconds a batch may take in a child (it takes ~25 ms) before the child is taken for
hung: it is killed, and the batch read again with a new one."""


KILLED = "ChildProcessError"
"""The error type a notice's dead letter names when composing it killed the composing
process, alone, twice."""


class _ChildDied(Exception):
    """A child process died while it composed a batch."""


class ComposerUnavailableError(RuntimeError):
    """No process can compose notices now (one died or hung, or the worker stops); the
    batch is read again from its committed offsets."""


class Composer(Protocol):
    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        """One result per job, in order."""

    def start(self) -> None:
        """Get ready before the first batch (a child process takes a second to start)."""

    def close(self) -> None: ...


class InlineComposer:
    """Composes in the calling thread: for one core, and for tests. It lets the event
    loop run other work (deliver's sends) every ``bulk.SLICE``, as the bulk loop does."""

    def __init__(self, settings: Settings) -> None:
        self._renderer = Renderer(company_name=settings.company_name)
        self._settings = settings

    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        results = []
        due = time.perf_counter() + SLICE
        for job in jobs:
            results.append(compose_encoded(job, self._renderer, self._settings))
            if time.perf_counter() >= due:
                await asyncio.sleep(0)
                due = time.perf_counter() + SLICE
        return results

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessComposer:
    """Composes in ``processes`` child processes, started fresh (spawn: the worker has threads).

    Each child builds its own ``Renderer`` once (``compose_child``). A job list is split
    evenly between the children. When a child dies, the batch is composed again by new
    children, in halves, and the halves that kill one again in halves, down to single
    notices: a notice that kills a child alone, twice, comes back as an error (``KILLED``)
    for notify to dead-letter, and the rest of its batch is composed. Without that, such
    a notice would fail its batch, and every later batch of its partition, forever. A
    child that takes longer than ``TIMEOUT`` is killed and fails its batch (notify reads
    it again from its committed offsets): a slow machine must not dead-letter notices.
    ``work`` is what a child runs on a list of jobs (tests pass one that misbehaves).
    """

    def __init__(
        self,
        settings: Settings,
        processes: int,
        *,
        work: Callable[[list[Job]], list[Composed]] = compose_child.compose_all,
    ) -> None:
        # The settings a child needs carry no passwords (its environment is still the
        # worker's, as for any child process).
        self._settings = settings.model_copy(
            update={"smtp_password": None, "kafka_sasl_password": None}
        )
        self._processes = processes
        self._work = work
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        """Start the children (the worker starts): ready for the first batch."""
        self._closed = False
        self._ensure()

    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        if not jobs:
            return []
        try:
            return await self._compose(jobs)
        except _ChildDied:
            log.warning(
                "a process composing %d notices died; composing them again, in parts", len(jobs)
            )
        return await self._isolate(jobs)

    async def _isolate(self, jobs: Sequence[Job]) -> list[Composed]:
        """Compose ``jobs``, on which a child just died: in halves, down to the notice (if
        any) that kills a child by itself; that one is tried alone once more (a child may
        also die of something else, an operator's kill or the OOM killer)."""
        if len(jobs) == 1:
            with suppress(_ChildDied):
                return await self._compose(jobs)
            log.warning("a notice killed the process composing it, twice: dead-lettered")
            reason = "composing this notice killed the composing process, twice"
            return [Composed(None, KILLED, reason)]
        results: list[Composed] = []
        half = len(jobs) // 2
        for part in (jobs[:half], jobs[half:]):
            try:
                results += await self._compose(part)
            except _ChildDied:
                results += await self._isolate(part)
        return results

    async def _compose(self, jobs: Sequence[Job]) -> list[Composed]:
        pool = self._ensure()
        share = -(-len(jobs) // self._processes)
        parts = [list(jobs[i : i + share]) for i in range(0, len(jobs), share)]
        futures = [asyncio.wrap_future(pool.submit(self._work, p)) for p in parts]
        try:
            done = await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
        except BrokenProcessPool as exc:
            self._drop()
            raise _ChildDied from exc
        except TimeoutError as exc:
            log.warning("composing %d notices took over %gs; new processes", len(jobs), TIMEOUT)
            self._drop(kill=True)
            raise ComposerUnavailableError(f"composing took over {TIMEOUT:g}s") from exc
        return [result for part in done for result in part]

    def close(self) -> None:
        """The worker stops: a later ``compose`` raises until ``start``."""
        self._closed = True
        self._drop()

    def _ensure(self) -> ProcessPoolExecutor:
        if self._closed:
            raise ComposerUnavailableError("the worker is stopping: no more notices composed")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=compose_child.start,
                initargs=(self._settings,),
            )
            for _ in range(self._processes):  # start them now, not on the first batch
                self._pool.submit(compose_child.ready)
        return self._pool

    def _drop(self, *, kill: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # a hung child would never take the shutdown
            for child in multiprocessing.active_children():
                child.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def composer_for(settings: Settings) -> Composer:
    if settings.compose_processes == 0:
        return InlineComposer(settings)
    return ProcessComposer(settings, settings.compose_processes)
