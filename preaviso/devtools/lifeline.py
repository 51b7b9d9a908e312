"""The processes the dev tools start die with the process that started them.

A broker, a worker or a mail server started for a test, the demo or a benchmark runs
in a session of its own, so a terminal's Ctrl-C reaches only its parent, which then
stops it in order. A parent killed outright (SIGKILL, a CI timeout, an OOM kill) stops
nothing: its broker JVM lived on, holding memory and CPU that later runs measured.
On Linux the kernel tells such a child when its parent dies (``PR_SET_PDEATHSIG``);
elsewhere there is no such thing and the child is started as before.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL = _prctl()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL once this process
    is gone; None where that cannot be asked for.

    SIGKILL, not SIGTERM: nobody is left to use what an orderly stop would keep, and a
    worker stopping in order while its broker dies too could wait for it for minutes.
    The kernel sends it when the *thread* that started the child ends, so start such
    children from a thread that lives as long as they should (the main thread).
    """
    if _PRCTL is None:
        return None
    prctl, parent = _PRCTL, os.getpid()

    def lifeline() -> None:  # in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # if it fails, the child runs without
        if os.getppid() != parent:  # the parent died before the line was set
            os._exit(1)

    return lifeline
