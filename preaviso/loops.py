"""The worker's event loop: uvloop where it is installed, asyncio's own otherwise.

Every stage's work is a chain of small callbacks (a record handed over, an SMTP reply,
a produce acknowledged), so the loop's own cost per callback is a large part of a
notice's. uvloop's is lower: 5-14% more mails per second from the same worker in
same-session A/B runs of the quick benchmark (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging

from preaviso.settings import EventLoop

log = logging.getLogger("preaviso.loops")


class EventLoopUnavailableError(RuntimeError):
    """``PREAVISO_EVENT_LOOP=uvloop``, but uvloop cannot be used here."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"PREAVISO_EVENT_LOOP is uvloop, but uvloop cannot be used: {reason}; "
            "reinstall it (pip install --force-reinstall uvloop), or set auto or asyncio"
        )


def _uvloop_policy() -> asyncio.AbstractEventLoopPolicy:
    """uvloop's policy; ImportError or AttributeError (a Python it does not support)."""
    import uvloop

    loop_policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return loop_policy


def policy(choice: EventLoop) -> asyncio.AbstractEventLoopPolicy:
    """The policy for ``choice``; ``auto`` is uvloop's if it can be used, with a warning
    when it cannot (the worker then runs, slower, on asyncio's)."""
    if choice is EventLoop.ASYNCIO:
        return asyncio.DefaultEventLoopPolicy()
    try:
        return _uvloop_policy()
    except (ImportError, AttributeError) as exc:
        if choice is EventLoop.UVLOOP:
            raise EventLoopUnavailableError(str(exc)) from exc
        log.warning("uvloop cannot be used (%s): running on asyncio's event loop", exc)
        return asyncio.DefaultEventLoopPolicy()


def use(choice: EventLoop) -> str:
    """Make ``choice`` the policy of every loop made from now on, in every thread (Faust's
    consumer makes its own); ``uvloop`` or ``asyncio``, the kind of loop it makes."""
    chosen = policy(choice)
    asyncio.set_event_loop_policy(chosen)
    return _kind(chosen)


def running() -> str:
    """``uvloop`` or ``asyncio``: the loop this code runs on, as the worker logs it."""
    return _kind(asyncio.get_running_loop())


def _kind(loop_or_policy: object) -> str:
    return "uvloop" if type(loop_or_policy).__module__.split(".")[0] == "uvloop" else "asyncio"
