"""What runs in a child process that composes notices (``agents/composer.py`` starts it).

It imports only the pure modules it needs (no Faust, no Kafka client): a child starts in
about a second and holds little memory.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import wait

from preaviso.compose import Composed, Job, compose_encoded
from preaviso.render import Renderer
from preaviso.settings import Settings

_child: tuple[Renderer, Settings] | None = None


def start(settings: Settings) -> None:
    """The pool's initializer: one ``Renderer`` for the child's life, a watch on the worker,
    and a lower CPU priority (``PREAVISO_COMPOSE_NICE``): composing runs ahead of sending,
    so a core both want goes to the worker's loop first (docs/benchmarks.md, stop 23)."""
    global _child
    if settings.compose_nice:
        os.nice(settings.compose_nice)
    # Ctrl-C and a SIGTERM to the process group reach the child too; the worker stops
    # it when the worker stops (and the watch below when the worker is gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_worker, daemon=True).start()
    _child = (Renderer(company_name=settings.company_name), settings)


def _exit_with_worker() -> None:
    """Exit once the worker is gone. Killed alone, it would leave this child waiting
    forever on a pipe the child itself holds open. The parent's sentinel becomes ready
    when the parent ends, even if it ended before this child started (any platform)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os._exit(0)


def ready() -> None:
    """A no-op job, to have the pool start its children ahead of the first batch."""


def compose_all(jobs: list[Job]) -> list[Composed]:
    assert _child is not None, "the child process was not initialized"
    renderer, settings = _child
    return [compose_encoded(job, renderer, settings) for job in jobs]
