"""`preaviso worker`: check Kafka and SMTP answer, create topics, then run the Faust worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from typing import Any

from preaviso import loops
from preaviso.mail import SmtpTransport
from preaviso.settings import Settings
from preaviso.streams.app import create_app
from preaviso.streams.topics import ensure_topics

log = logging.getLogger("preaviso.worker")


async def preflight(settings: Settings) -> list[str]:
    """Fail in seconds, naming the address, instead of a worker that hangs retrying."""
    created = await ensure_topics(settings)
    transport = SmtpTransport.from_settings(settings)
    try:
        await transport.check()
    finally:
        await transport.aclose()
    return created


STOP_DEADLINE = 25.0
"""Seconds a stop signal may take before the worker exits anyway (the promise is 30)."""


def exit_after(seconds: float) -> threading.Timer:
    """Exit the process in ``seconds`` unless it ended before: a stop never hangs.

    Safe for at-least-once: only offsets of handled records are ever committed, so a
    record in the middle of its handling is read again by the next owner.
    """

    def overdue() -> None:
        log.warning("worker did not stop within %gs; exiting now", seconds)
        logging.shutdown()
        os._exit(EXIT_OVERDUE)

    timer = threading.Timer(seconds, overdue)
    timer.daemon = True
    timer.start()
    return timer


EXIT_OVERDUE = 3


YOUNG_PASS = 10_000
"""New objects between two of the collector's young passes (Python's default: 700)."""


def collect_less(app: Any) -> None:
    """Make Python's cyclic collector cheap for a worker: young passes every
    ``YOUNG_PASS`` new objects, and once the first table recovery is done, what lives
    on then (modules, Faust's app, its tables and services) set aside for good
    (``gc.freeze``), so the full passes during a burst of mails scan only what was made
    since. Over 20,000 mails the collector took ~36 µs a mail, ~14 with the freeze and
    ~1 with both (docs/benchmarks.md, stop 21). Frozen once only: a frozen object is
    never collected as part of a cycle, so what later rebalances replace stays unfrozen.
    """
    gc.set_threshold(YOUNG_PASS, *gc.get_threshold()[1:])
    frozen = False

    async def freeze(sender: Any = None, **_: Any) -> None:
        nonlocal frozen
        if not frozen:
            frozen = True
            gc.collect()
            gc.freeze()
            log.info("%d objects set aside from the collector", gc.get_freeze_count())

    app.on_rebalance_complete.connect(freeze)


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    loops.use(settings.event_loop)
    created = asyncio.run(preflight(settings))
    if created:
        log.info("created %d topics", len(created))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pipe = create_app(settings)
    collect_less(pipe.app)
    import faust

    class Worker(faust.Worker):
        """Faust's worker, with a deadline on stopping: SIGTERM ends it within 30 s."""

        def _on_sigterm(self) -> None:
            exit_after(STOP_DEADLINE)
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            exit_after(STOP_DEADLINE)
            super()._on_sigint()

        async def on_first_start(self) -> None:
            await super().on_first_start()
            log.info("event loop: %s", loops.running())

    worker = Worker(pipe.app, loglevel=loglevel, quiet=True, override_logging=True)
    worker.execute_from_commandline()
