"""What a composing child runs in the composer tests: the real work, or a death or hang on cue.

A module of its own, so that a spawned child can import it by name.
"""

from __future__ import annotations

import os
import time

from preaviso import compose_child
from preaviso.compose import Composed, Job
from preaviso.settings import Settings

MARK = b"KILLS-THE-CHILD"
"""Any impact holding these bytes kills the child that composes it (as a crash in a C
extension would)."""
POISON = b'{"note": "' + MARK + b'"}'


def compose_or_die(jobs: list[Job]) -> list[Composed]:
    if any(MARK in job.impact for job in jobs):
        os._exit(70)
    return compose_child.compose_all(jobs)


HANG_MARK = b"HANGS-THE-CHILD"
"""Any impact holding these bytes makes the child that composes it wait for ever (as a
pathological input to a slow algorithm would)."""
HANG = b'{"note": "' + HANG_MARK + b'"}'


def compose_or_hang(jobs: list[Job]) -> list[Composed]:
    if any(HANG_MARK in job.impact for job in jobs):
        while True:
            time.sleep(60)
    return compose_child.compose_all(jobs)


def cannot_start(settings: Settings) -> None:
    """A child that fails in its initializer (a broken install, say)."""
    raise ImportError("no module named 'jinja2' (a broken install)")


def niceness(jobs: list[Job]) -> list[Composed]:
    """The child's niceness, as the one job's result."""
    return [Composed(None, "niceness", str(os.nice(0))) for _ in jobs]
