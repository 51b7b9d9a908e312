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
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from preaviso.compose import Composed, Job, compose_encoded
from preaviso.render import Renderer
from preaviso.settings import Settings

log = logging.getLogger("preaviso.composer")

PARENT_POLL = 1.0
"""Seconds between a child's looks at whether the worker is still there."""


class ComposerUnavailableError(RuntimeError):
    """The child process that composes notices died; the batch is read again."""


class Composer(Protocol):
    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        """One result per job, in order."""

    def start(self) -> None:
        """Get ready before the first batch (a child process takes a second to start)."""

    def close(self) -> None: ...


class InlineComposer:
    """Composes in the calling thread: for one core, and for tests."""

    def __init__(self, settings: Settings) -> None:
        self._renderer = Renderer(company_name=settings.company_name)
        self._settings = settings

    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        return [compose_encoded(job, self._renderer, self._settings) for job in jobs]

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class ProcessComposer:
    """Composes in ``processes`` child processes, started fresh (spawn: the worker has threads).

    Each child builds its own ``Renderer`` once. A job list is split evenly between the
    children. A child that dies breaks the pool: the batch fails (notify reads it again
    from its committed offsets) and the next batch starts new children.
    """

    def __init__(self, settings: Settings, processes: int) -> None:
        # Only what composing needs crosses to the child: no secrets.
        self._settings = settings.model_copy(
            update={"smtp_password": None, "kafka_sasl_password": None}
        )
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    def start(self) -> None:
        if self._closed:
            raise ComposerUnavailableError("the worker is stopping: no more notices composed")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start,
                initargs=(self._settings, os.getpid()),
            )
            for _ in range(self._processes):  # start them now, not on the first batch
                self._pool.submit(_child_ready)

    async def compose(self, jobs: Sequence[Job]) -> list[Composed]:
        self.start()
        assert self._pool is not None
        share = -(-len(jobs) // self._processes)
        parts = [list(jobs[i : i + share]) for i in range(0, len(jobs), share)]
        try:
            done = await asyncio.gather(
                *(asyncio.wrap_future(self._pool.submit(_compose_all, part)) for part in parts)
            )
        except BrokenProcessPool as exc:
            self._drop()
            raise ComposerUnavailableError(
                "the process composing notices died; starting a new one"
            ) from exc
        return [result for part in done for result in part]

    def close(self) -> None:
        """For good: the worker stops (a later ``compose`` raises)."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def composer_for(settings: Settings) -> Composer:
    if settings.compose_processes == 0:
        return InlineComposer(settings)
    return ProcessComposer(settings, settings.compose_processes)


# -- in the child process -------------------------------------------------------------

_child: tuple[Renderer, Settings] | None = None


def _child_start(settings: Settings, parent: int) -> None:
    global _child
    # Ctrl-C reaches the whole process group; the worker decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The worker's pid, from the worker: it may be gone before this child has started.
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    _child = (Renderer(company_name=settings.company_name), settings)


def _exit_with(parent: int) -> None:
    """Exit once the worker is gone (killed alone: nothing else would tell this process,
    which holds its own end of the pipe it waits on)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(0)


def _child_ready() -> None:
    pass


def _compose_all(jobs: list[Job]) -> list[Composed]:
    assert _child is not None, "the child process was not initialized"
    renderer, settings = _child
    return [compose_encoded(job, renderer, settings) for job in jobs]
