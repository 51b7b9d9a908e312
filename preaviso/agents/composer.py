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
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from preaviso import compose_child
from preaviso.agents.bulk import SLICE
from preaviso.compose import Composed, Job, compose_encoded
from preaviso.render import Renderer
from preaviso.settings import Settings

log = logging.getLogger("preaviso.composer")

TIMEOUT = 60.0
"""Seconds a batch may take in a child (it takes ~25 ms) before the child is taken for
hung and killed. Starting the children does not count (``STARTUP``)."""

ALONE = 6.0
"""Seconds at least for a part of a batch being narrowed down (one notice takes ~0.1
ms): a part gets its share of ``TIMEOUT``, never less than this."""

STARTUP = 60.0
"""Seconds new children may take to start (~1 s) before the composer is taken for
unavailable: children that cannot start are no notice's fault."""

KILLED = "ChildProcessError"
"""The error type a notice's dead letter names when composing it killed the composing
process, alone, twice."""

HUNG = "TimeoutError"
"""The error type a notice's dead letter names when composing it alone timed out twice,
new children having started and answered each time."""


class _ChildFailed(Exception):
    """A child process died or hung while it composed a batch; says what it did."""

    error_type = ""


class _ChildDied(_ChildFailed):
    error_type = KILLED


class _ChildHung(_ChildFailed):
    error_type = HUNG


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
    evenly between the children. When a child dies or hangs (``TIMEOUT``) on a batch, it
    is replaced and the batch composed again in halves, and a half that fails again in
    halves, down to single notices: a notice that fails alone, twice, comes back as an
    error (``KILLED``, ``HUNG``) for notify to dead-letter, and the rest of its batch is
    composed. Without that, such a notice would fail its batch, and every later batch
    of its partition, forever. A part being narrowed down gets its share of
    ``TIMEOUT`` (at least ``ALONE``), so one hanging notice in 250 costs ~2.5 minutes.
    Every attempt after a failure waits first for new children to start and answer
    (``STARTUP``): children that cannot, the machine's fault and no notice's, raise
    ``ComposerUnavailableError`` (notify reads the batch again from its committed
    offsets, with backoff) and dead-letter nothing. ``work`` is what a child runs on a
    list of jobs, ``start`` its initializer (tests pass ones that misbehave).
    """

    def __init__(
        self,
        settings: Settings,
        processes: int,
        *,
        work: Callable[[list[Job]], list[Composed]] = compose_child.compose_all,
        start: Callable[[Settings], None] = compose_child.start,
    ) -> None:
        # The settings a child needs carry no passwords (its environment is still the
        # worker's, as for any child process).
        self._settings = settings.model_copy(
            update={"smtp_password": None, "kafka_sasl_password": None}
        )
        self._processes = processes
        self._work = work
        self._start = start
        self._pool: ProcessPoolExecutor | None = None
        self._starting: list[Future[None]] = []
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
        except _ChildFailed as failure:
            log.warning(
                "a process composing %d notices %s; composing them again, in parts",
                len(jobs),
                failure,
            )
        return await self._isolate(jobs)

    async def _isolate(self, jobs: Sequence[Job], batch: int | None = None) -> list[Composed]:
        """Compose ``jobs``, on which a child just died or hung: in halves, down to the
        notices (if any) that fail by themselves; each is tried alone once more (a child
        may also die of something else, an operator's kill or the OOM killer). ``batch``
        is the size of the batch they came from, which sets their share of ``TIMEOUT``."""
        batch = batch or len(jobs)
        if len(jobs) == 1:
            try:
                return await self._compose(jobs, self._share(1, batch))
            except _ChildFailed as failure:
                log.warning("composing a notice %s, twice: dead-lettered", failure)
                reason = f"composing this notice {failure}, twice"
                return [Composed(None, failure.error_type, reason)]
        half = len(jobs) // 2
        results: list[Composed] = []
        for part in (jobs[:half], jobs[half:]):
            try:
                results += await self._compose(part, self._share(len(part), batch))
            except _ChildFailed:
                results += await self._isolate(part, batch)
        return results

    @staticmethod
    def _share(jobs: int, batch: int) -> float:
        return max(ALONE, TIMEOUT * jobs / batch)

    async def _compose(self, jobs: Sequence[Job], within: float | None = None) -> list[Composed]:
        timeout = TIMEOUT if within is None else within
        pool = self._ensure()
        while self._starting:  # new children: their start is not the batch's time
            await self._started()
            pool = self._ensure()  # the same pool, unless it was dropped meanwhile
        share = -(-len(jobs) // self._processes)
        parts = [list(jobs[i : i + share]) for i in range(0, len(jobs), share)]
        try:
            futures = [asyncio.wrap_future(pool.submit(self._work, p)) for p in parts]
            done = await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except BrokenProcessPool as exc:
            self._drop()
            raise _ChildDied("killed the composing process") from exc
        except TimeoutError as exc:
            log.warning("composing %d notices took over %gs; new processes", len(jobs), timeout)
            self._drop(kill=True)
            raise _ChildHung(f"took over {timeout:g}s") from exc
        return [result for part in done for result in part]

    async def _started(self) -> None:
        """Wait for new children to start: ``ComposerUnavailableError`` if they cannot."""
        starting = self._starting
        try:
            waits = [asyncio.wrap_future(f) for f in starting]
            await asyncio.wait_for(asyncio.gather(*waits), STARTUP)
        except (BrokenProcessPool, TimeoutError) as exc:
            self._drop(kill=True)
            raise ComposerUnavailableError(
                f"the composing processes did not start ({type(exc).__name__}); "
                "see the worker's log for the child's error"
            ) from exc
        if self._starting is starting:  # not a newer pool's
            self._starting = []

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
                initializer=self._start,
                initargs=(self._settings,),
            )
            # Start them now, not on the first batch; a batch waits until the pool has
            # answered (with several children, one may answer for the others).
            self._starting = [
                self._pool.submit(compose_child.ready) for _ in range(self._processes)
            ]
        return self._pool

    def _drop(self, *, kill: bool = False) -> None:
        pool, self._pool = self._pool, None
        self._starting = []
        if pool is None:
            return
        if kill:  # a hung child would never take the shutdown; only this pool's children
            for child in list((getattr(pool, "_processes", None) or {}).values()):
                child.kill()
        pool.shutdown(wait=False, cancel_futures=True)


def composer_for(settings: Settings) -> Composer:
    if settings.compose_processes == 0:
        return InlineComposer(settings)
    return ProcessComposer(settings, settings.compose_processes)
