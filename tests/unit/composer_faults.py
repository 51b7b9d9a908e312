"""What a composing child runs in the composer tests: the real work, or a death on cue.

A module of its own, so that a spawned child can import it by name.
"""

from __future__ import annotations

import os

from preaviso import compose_child
from preaviso.compose import Composed, Job

MARK = b"KILLS-THE-CHILD"
"""Any impact holding these bytes kills the child that composes it (as a crash in a C
extension would)."""
POISON = b'{"note": "' + MARK + b'"}'


def compose_or_die(jobs: list[Job]) -> list[Composed]:
    if any(MARK in job.impact for job in jobs):
        os._exit(70)
    return compose_child.compose_all(jobs)
